"""Fixtures of the integration tests: a database reached embedded or over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import latentdb

TRANSPORTS = ("embedded", "http")


def open_database(
    request: pytest.FixtureRequest, transport: str, folder: Path
) -> Iterator[latentdb.Database]:
    """The database in ``folder``, in process or through the session's server (which
    serves that folder until the test ends); closes what it opened."""
    if transport == "embedded":
        with latentdb.connect(folder) as database:
            yield database
        return
    server = request.getfixturevalue("http_server")
    with latentdb.connect(folder) as served:
        server.serve(served)
        with latentdb.connect(server.url) as database:
            yield database


@pytest.fixture(params=TRANSPORTS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[latentdb.Database]:
    """A new database, embedded or over HTTP, closed after the test."""
    yield from open_database(request, request.param, tmp_path / "db")
