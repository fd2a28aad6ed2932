"""``latentdb serve --workers N``: several processes serve one database (issue 18)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from uvicorn.config import STARTUP_FAILURE

import latentdb
from latentdb.errors import DatabaseClosedError, TransportError
from latentdb.server import Keyring
from latentdb.server._serve import _WorkerApp
from tests.server.conftest import WRITER
from tests.server.test_serve import free_port

MODEL = "test/vectors"


@pytest.mark.slow  # three processes start: ~5 s on 2 cores
def test_workers_share_one_database_and_stop_cleanly(tmp_path: Path) -> None:
    port, url = free_port(), ""
    command = [
        sys.executable, "-m", "latentdb.cli", "serve", str(tmp_path / "db"),
        "--port", str(port), "--api-key", WRITER, "--workers", "2",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                latentdb.connect(url, api_key=WRITER).close()
                break
            except TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        # the spawned workers (multiprocessing also starts its resource tracker)
        children = psutil.Process(server.pid).children()
        workers = [child for child in children if "spawn_main" in " ".join(child.cmdline())]
        assert len(workers) == 2
        for worker in workers:  # the processes are the parallelism: one BLAS thread each
            assert worker.environ().get("OPENBLAS_NUM_THREADS") == "1"
        with latentdb.connect(url, api_key=WRITER) as db:
            db.create_collection("c", dimension=3, embedder=None, model=MODEL)
        # Each round writes through a fresh connection and reads through another: whichever
        # worker each lands on (the kernel picks), a write is seen by the next read.
        for round in range(8):
            with latentdb.connect(url, api_key=WRITER) as writer:
                vector = np.zeros(3)
                vector[round % 3] = 1.0 + round
                writer.get_collection("c").add([f"r{round}"], vectors=vector, model=MODEL)
            with latentdb.connect(url, api_key=WRITER) as reader:
                collection = reader.get_collection("c")
                assert collection.count() == round + 1
                assert collection.get([f"r{round}"], include=[]).ids == [f"r{round}"]
                hit = collection.query(vectors=vector, k=1, include=["distances"])
                assert hit.ids == [[f"r{round}"]]
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert f"serving {tmp_path / 'db'} at {url} with 1 API key(s) in 2 processes" in output
    # each worker finished its requests and closed its database (the lifespan's end)
    assert output.count("Application shutdown complete") == 2, output
    assert "Stopping parent process" in output
    assert not any(worker.is_running() for worker in workers)
    with latentdb.connect(tmp_path / "db") as db:
        assert db.get_collection("c").count() == 8


def lifespan(app: Any, *events: str) -> list[str]:
    """Run ``app``'s ASGI lifespan through ``events``; the messages it sends back."""
    sent: list[str] = []
    incoming = [{"type": f"lifespan.{event}"} for event in events]

    async def receive() -> MutableMapping[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send))
    return sent


def test_a_worker_closes_its_database_when_the_server_stops(tmp_path: Path) -> None:
    with latentdb.connect(tmp_path / "db") as db:
        db.create_collection("c", dimension=2, embedder=None, model=MODEL)
    factory = _WorkerApp(
        tmp_path / "db",
        host="127.0.0.1",
        keys=Keyring([]),
        no_auth=True,
        max_body=1 << 20,
        max_batch=100,
    )
    app = factory()
    database = app.database  # type: ignore[attr-defined]
    assert database.list_collections() == ["c"]
    assert lifespan(app, "startup", "shutdown") == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    with pytest.raises(DatabaseClosedError):
        database.list_collections()


def test_a_worker_that_cannot_open_the_database_is_not_restarted(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a database folder")
    factory = _WorkerApp(
        tmp_path / "file",
        host="127.0.0.1",
        keys=Keyring([]),
        no_auth=True,
        max_body=1 << 20,
        max_batch=100,
    )
    # uvicorn's supervisor starts a worker again after any other exit, forever
    with pytest.raises(SystemExit) as exited:
        factory()
    assert exited.value.code == STARTUP_FAILURE
