"""`latentdb serve` as users run it: a subprocess, over TLS, with a key; and many
clients reading and writing at once."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import latentdb
from latentdb import IndexSpec, LatentDBWarning, TransportError
from latentdb.embed import register, unregister
from latentdb.server import Keyring, ServerThread, serve, warm_up
from tests.conftest import HashingEmbedder
from tests.server.conftest import WRITER, serving

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.slow
def test_serve_command_over_tls_with_a_key(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    command = [
        sys.executable, "-m", "latentdb.cli", "serve", str(tmp_path / "db"),
        "--port", str(port), "--api-key", WRITER, "--certfile", str(cert), "--keyfile", str(key),
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                db = latentdb.connect(url, api_key=WRITER, verify=str(cert))
                break
            except TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with db:
            collection = db.create_collection("c", dimension=3, embedder=None, model=MODEL)
            collection.add(["x", "y"], vectors=np.eye(3)[:2], model=MODEL)
            assert collection.query(vectors=[0.0, 1.0, 0.0], k=1).ids == [["y"]]
        with pytest.raises(TransportError):  # plain HTTP to the TLS port
            latentdb.connect(f"http://127.0.0.1:{port}", api_key=WRITER)
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    # uvicorn shuts down cleanly, then re-raises the signal it caught.
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Finished server process" in output
    assert f"serving {tmp_path / 'db'} at https://127.0.0.1:{port} with 1 API key(s)" in output
    with latentdb.connect(tmp_path / "db") as db:  # closed cleanly, all there
        assert db.get_collection("c").count() == 2


def test_concurrent_writers_and_readers_lose_nothing(tmp_path: Path) -> None:
    writers, batches, rows, dim = 4, 12, 25, 8
    spec = IndexSpec(kind="hnsw", seal_rows=300)  # seals (in the background) as writes come
    failures: list[BaseException] = []
    written: list[str] = []
    done = threading.Event()

    def write(server: ServerThread, writer: int) -> None:
        try:
            with latentdb.connect(server.url) as db:
                collection = db.get_collection("c")
                rng = np.random.default_rng(writer)
                for batch in range(batches):
                    ids = [f"w{writer}-{batch}-{i}" for i in range(rows)]
                    collection.add(ids, vectors=rng.normal(size=(rows, dim)), model=MODEL)
                    written.extend(ids)  # acknowledged
        except BaseException as error:
            failures.append(error)

    def read(server: ServerThread) -> None:
        try:
            with latentdb.connect(server.url) as db:
                collection = db.get_collection("c")
                queries = np.random.default_rng(99).normal(size=(5, dim))
                while not done.is_set():
                    result = collection.query(vectors=queries, k=5)
                    assert len(result.ids) == 5
        except BaseException as error:
            failures.append(error)

    with serving(tmp_path / "db", max_batch=5000) as server:
        with latentdb.connect(server.url) as db:
            db.create_collection(
                "c", dimension=dim, metric="l2", embedder=None, index=spec, model=MODEL
            )
        readers = [threading.Thread(target=read, args=(server,)) for _ in range(4)]
        threads = [threading.Thread(target=write, args=(server, w)) for w in range(writers)]
        for thread in readers + threads:
            thread.start()
        for thread in threads:
            thread.join()
        done.set()
        for thread in readers:
            thread.join()
        assert not failures, failures
        with latentdb.connect(server.url) as db:
            collection = db.get_collection("c")
            assert collection.count() == len(written) == writers * batches * rows
            assert len(collection.get(written, include=[]).ids) == len(written)
            collection.optimize()
            assert collection.index_status().indexed == len(written)


def test_serve_loads_every_model_before_the_first_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: the first text query on a fresh server waited seconds for its model.
    serve() loads and runs each collection's model once before it listens."""
    made: list[HashingEmbedder] = []

    def factory(name: str) -> HashingEmbedder:
        made.append(HashingEmbedder(name))
        return made[-1]

    register("warm-test", factory)
    try:
        with latentdb.connect(tmp_path / "db") as db:
            db.create_collection("a", embedder="warm-test")
            db.create_collection("b", embedder="warm-test")  # one model, loaded once
            db.create_collection("v", embedder=None, dimension=4, model="m")  # none
        register("warm-test", factory)  # forget the instance that created them
        made.clear()
        listening: list[int] = []
        monkeypatch.setattr("uvicorn.Server.run", lambda self: listening.append(len(made)))
        serve(tmp_path / "db", host="127.0.0.1", port=0, keys=Keyring([]), no_auth=True)
        assert listening == [1]  # the model was made before the server would listen
        assert [embedder.calls for embedder in made] == [1]  # and run once
    finally:
        unregister("warm-test")


def test_warm_up_warns_about_a_model_that_cannot_load(tmp_path: Path) -> None:
    register("warm-once", HashingEmbedder)
    try:
        with latentdb.connect(tmp_path / "db") as db:
            db.create_collection("gone", embedder="warm-once")
            db.create_collection("plain", embedder=None, dimension=4, model="m")
            unregister("warm-once")
            with pytest.warns(LatentDBWarning, match="'warm-once' did not load"):
                assert warm_up(db) == {}
    finally:
        unregister("warm-once")
