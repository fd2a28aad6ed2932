"""``latentdb serve --workers N``: several processes serve one database (issue 18)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import uvicorn
from uvicorn.config import STARTUP_FAILURE

import latentdb
from latentdb.errors import DatabaseClosedError, InvalidArgumentError, TransportError
from latentdb.server import Keyring, serve
from latentdb.server._serve import _Worker
from tests.server.conftest import WRITER
from tests.server.test_serve import free_port

MODEL = "test/vectors"


def workers_of(pid: int) -> list[psutil.Process]:
    """The spawned workers of the server ``pid`` (not multiprocessing's resource tracker,
    nor a worker that died and is not reaped yet)."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()) and child.status() != "zombie":
                found.append(child)
        except psutil.Error:  # gone, or a zombie
            pass
    return found


@pytest.mark.slow  # three processes start, one is killed and replaced: ~10 s on 2 cores
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
        workers = workers_of(server.pid)
        assert len(workers) == 2
        for worker in workers:  # the processes are the parallelism: one BLAS thread each
            assert worker.environ().get("OPENBLAS_NUM_THREADS") == "1"
        with latentdb.connect(url, api_key=WRITER) as db:
            db.create_collection("c", dimension=3, metric="l2", embedder=None, model=MODEL)
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
        # A record each worker has read (and may keep in its cache of hot rows), then
        # changed through one of them: every worker answers with the new version.
        for version in ("first", "second", "third"):
            with latentdb.connect(url, api_key=WRITER) as writer:
                writer.get_collection("c").upsert(
                    ["r0"], vectors=[1.0, 0.0, 0.0], documents=[version], model=MODEL
                )
            for _ in range(6):
                with latentdb.connect(url, api_key=WRITER) as reader:
                    collection = reader.get_collection("c")
                    hit = collection.query(vectors=[1.0, 0.0, 0.0], k=1)
                    assert hit.ids == [["r0"]] and hit.documents == [[version]]
                    assert collection.get(["r0"]).documents == [version]
        # A worker that dies is replaced; the replacement loads what the others wrote.
        workers[0].kill()
        deadline = time.monotonic() + 120
        while True:
            now = workers_of(server.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            assert time.monotonic() < deadline, "no worker replaced the one that died"
            time.sleep(0.1)
        replacement = next(child for child in now if child not in workers)
        while not replacement.net_connections("tcp"):  # listening once warmed up
            assert time.monotonic() < deadline, "the replacement never listened"
            time.sleep(0.1)
        for _ in range(8):
            with latentdb.connect(url, api_key=WRITER) as reader:
                assert reader.get_collection("c").get(["r0"]).documents == ["third"]
        workers = now
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert f"serving {tmp_path / 'db'} at {url} with 1 API key(s) in 2 processes" in output
    # each worker finished its requests and closed its database (the lifespan's end)
    assert output.count("Application shutdown complete") == 2, output
    assert "Stopping parent process" in output
    assert "died (exit code -9): starting another" in output
    assert not any(worker.is_running() for worker in workers)
    with latentdb.connect(tmp_path / "db") as db:
        assert db.get_collection("c").count() == 8


def worker(folder: Path) -> _Worker:
    return _Worker(
        folder,
        host="127.0.0.1",
        keys=Keyring([]),
        no_auth=True,
        max_body=1 << 20,
        max_batch=100,
        settings={"host": "127.0.0.1", "port": 0, "log_level": "warning"},
    )


def test_a_worker_closes_its_database_when_its_server_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with latentdb.connect(tmp_path / "db") as db:
        db.create_collection("c", dimension=2, embedder=None, model=MODEL)
    served: list[Any] = []

    def run(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        # what the worker serves: the app over its database, on a socket of its own
        database = server.config.app.app.app.state.database  # Limits, FastLane, FastAPI
        served.append((database.list_collections(), sockets[0].getsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEPORT
        ), database))  # fmt: skip

    monkeypatch.setattr(uvicorn.Server, "run", run)
    worker(tmp_path / "db").run([0], 0)
    [(names, reuse_port, database)] = served
    assert names == ["c"] and reuse_port
    with pytest.raises(DatabaseClosedError):  # closed once the server returned
        database.list_collections()


def test_a_worker_that_cannot_open_the_database_is_not_restarted(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a database folder")
    # the supervisor stops on this exit code, and starts a worker again after any other
    with pytest.raises(SystemExit) as exited:
        worker(tmp_path / "file").open()
    assert exited.value.code == STARTUP_FAILURE


def test_workers_refuse_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidArgumentError, match=f"cannot serve on 127.0.0.1:{port}"):
            serve(tmp_path / "db", port=port, keys=Keyring([]), no_auth=True, workers=2)
