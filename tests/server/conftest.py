"""Servers with keys and limits, each on its own loopback port, for the server's tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import latentdb
from latentdb.server import Keyring, ServerThread, build

WRITER = "writer-key-0123456789abcdef"
READER = "reader-key-0123456789abcdef"
DOCS_WRITER = "docs-writer-0123456789abcdef"
DOCS_READER = "docs-reader-0123456789abcdef"
KEYS = [WRITER, f"{READER}:read", f"{DOCS_WRITER}:write:docs,docs-live", f"{DOCS_READER}:read:docs"]


@contextmanager
def serving(
    folder: Path,
    *,
    keys: list[str] | None = None,
    max_body: int = 1 << 20,
    max_batch: int = 1000,
    keepalive_requests: int | None = None,
    crowded: Callable[[], bool] | None = None,
) -> Iterator[ServerThread]:
    """A server over the database in ``folder`` (no auth when ``keys`` is None)."""
    with latentdb.connect(folder) as database:
        app = build(
            database,
            host="127.0.0.1",
            keys=Keyring.load(keys or [], environ={}),
            no_auth=keys is None,
            max_body=max_body,
            max_batch=max_batch,
            keepalive_requests=keepalive_requests,
            crowded=crowded,
        )
        with ServerThread(app) as server:
            yield server


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server that wants keys (KEYS), with a 1 MiB body and 1000-row batch limit."""
    with serving(tmp_path_factory.mktemp("keyed") / "db", keys=KEYS) as server:
        yield server
