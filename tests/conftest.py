"""Shared fixtures: temporary databases that are always closed, and test embedders.

Transports: a test module marked ``pytestmark = pytest.mark.transports`` runs each test
that uses ``db`` or ``open_db`` three times: on the embedded engine ("embedded"), through
a real uvicorn server on a loopback port ("http"), and on collections sharded over Ray
actors ("sharded", :mod:`latentdb.distributed`); a test of such a module marked
``embedded_only`` (reaching into internals, processes or files) runs embedded only, and
one marked ``unsharded`` (a behaviour sharding changes on purpose) skips "sharded".
One server and one local Ray instance serve the whole session, over each test's own
fresh database folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import settings

import latentdb
from latentdb import embed

settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("nightly", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if TYPE_CHECKING:
    from fastapi import FastAPI

    from latentdb.server import ServerThread

TRANSPORTS = ("embedded", "http", "sharded")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every transport for tests of modules marked ``transports``."""
    if "transport" not in metafunc.fixturenames:
        return
    marked = metafunc.definition.get_closest_marker("transports") is not None
    embedded_only = metafunc.definition.get_closest_marker("embedded_only") is not None
    unsharded = metafunc.definition.get_closest_marker("unsharded") is not None
    if marked and not embedded_only:
        metafunc.parametrize(
            "transport", [t for t in TRANSPORTS if not (unsharded and t == "sharded")]
        )


@pytest.fixture
def transport() -> str:
    """How the test reaches its database: "embedded" unless parametrized."""
    return "embedded"


class SessionServer:
    """The session's uvicorn server; each test points it at its own database."""

    def __init__(self, thread: ServerThread, app: FastAPI) -> None:
        self.thread = thread
        self.app = app
        self.url = thread.url

    def serve(self, database: latentdb.Database) -> None:
        self.app.state.database = database


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionServer]:
    """One real uvicorn server on a free loopback port for the whole session."""
    from latentdb.server import ServerThread, create_app, limited

    idle = latentdb.connect(tmp_path_factory.mktemp("server") / "idle")
    app = create_app(idle, keys=None)
    with ServerThread(limited(app)) as thread:
        yield SessionServer(thread, app)
    idle.close()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One local Ray instance for the whole session (it takes seconds to start): two
    CPUs, no dashboard, a small object store, workers' logs kept out of the output."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=150 * 2**20,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


def _opener(
    request: pytest.FixtureRequest, transport: str, folder: Path
) -> Iterator[Callable[[], latentdb.Database]]:
    """Opens ``folder`` again and again, in process or through the session's server;
    closes everything it opened."""
    opened: list[latentdb.Database] = []
    served: list[latentdb.Database] = []
    server: SessionServer | None = None
    if transport == "http":
        server = request.getfixturevalue("http_server")
        served.append(latentdb.connect(folder))
        server.serve(served[0])
    if transport == "sharded":
        request.getfixturevalue("ray_cluster")

    def open_again() -> latentdb.Database:
        if transport == "sharded":
            from latentdb import distributed

            sharded = distributed.connect(path=folder)
            opened.append(sharded)
            return sharded
        database = latentdb.connect(folder if server is None else server.url)
        opened.append(database)
        return database

    yield open_again
    for database in opened + served:
        database.close()


@pytest.fixture
def db(
    request: pytest.FixtureRequest, transport: str, tmp_path: Path
) -> Iterator[latentdb.Database]:
    """A new database in a temporary folder (served over HTTP for the "http"
    transport), closed after the test."""
    opener = _opener(request, transport, tmp_path / "db")
    yield next(opener)()
    next(opener, None)


@pytest.fixture
def open_db(
    request: pytest.FixtureRequest, transport: str, tmp_path: Path
) -> Iterator[Callable[[], latentdb.Database]]:
    """Opens (and re-opens) one temporary folder; closes every database it opened."""
    opener = _opener(request, transport, tmp_path / "db")
    yield next(opener)
    next(opener, None)


class HashingEmbedder:
    """A deterministic, dependency-free text embedder for tests of the text path.

    Each word adds a pseudo-random unit vector seeded by its hash: texts sharing words
    are near each other, so nearest-neighbour answers are predictable. Not a model.
    """

    modalities = frozenset({"text"})
    metric = "cosine"
    normalized = True

    def __init__(self, name: str, *, dimension: int = 16, salt: str = "") -> None:
        self.name = name
        self.model = f"test/hashing-{dimension}"
        self.dimension = dimension
        self.salt = salt
        self.calls = 0

    @property
    def fingerprint(self) -> str:
        return "sha256:" + hashlib.sha256(f"{self.dimension}{self.salt}".encode()).hexdigest()

    def embed_texts(
        self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        self.calls += 1
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                out[row] += np.random.default_rng(seed).normal(size=self.dimension)
        if progress is not None:
            progress(len(texts))
        return out


@pytest.fixture
def hashing_embedder() -> Iterator[HashingEmbedder]:
    """Registers a HashingEmbedder as "test-hashing" for the duration of a test."""
    instance = HashingEmbedder("test-hashing")
    embed.register("test-hashing", lambda name: instance)
    yield instance
    embed.unregister("test-hashing")
