"""Fixtures of the sharded tests: a sharded database on the session's local Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from latentdb import distributed


@pytest.fixture
def sharded(ray_cluster: Any, tmp_path: Path) -> Iterator[distributed.ShardedDatabase]:
    """A new sharded database in a temporary folder, closed after the test."""
    database = distributed.connect(path=tmp_path / "sharded")
    yield database
    database.close()
