"""Fixtures shared by the index tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import latentdb


@pytest.fixture
def databases() -> Iterator[list[latentdb.Database]]:
    """Databases a test opens; closed after it."""
    opened: list[latentdb.Database] = []
    yield opened
    for database in opened:
        database.close()
