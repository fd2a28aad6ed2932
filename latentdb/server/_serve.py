"""Running the app under uvicorn: ``latentdb serve``, and a server in a thread."""

from __future__ import annotations

import ipaddress
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from latentdb.api import Database, collection_embedder
from latentdb.engine import EmbeddedDatabase
from latentdb.errors import InvalidArgumentError, LatentDBError, LatentDBWarning, StorageError
from latentdb.server._app import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, create_app, limited
from latentdb.server._auth import Keyring
from latentdb.server._plumbing import ASGIApp
from latentdb.server._protocol import ConnectionShare, OneWriteProtocol, counting

__all__ = ["ServerThread", "build", "check_exposure", "is_loopback", "serve", "warm_up"]

_log = logging.getLogger("latentdb.server")
# Requests a keep-alive connection makes to a worker among several before it is closed
# (sooner while the worker holds more than its share: Limits), so that connections keep
# spreading over the workers: the kernel's hash split 16 connections 12/4 and 13/3
# between 2 workers, and 8/8 with the rule. A reconnect costs about one request's time.
WORKER_KEEPALIVE_REQUESTS = 200
# The thread pools of numpy's BLAS, faiss's OpenMP and MKL, one thread each in a worker.
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# The signals that stop a server of several workers.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# uvicorn's own logger: the parent's lines sit among the workers' ("Started server ...").
_uvicorn_log = logging.getLogger("uvicorn.error")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(
    host: str, keys: Keyring, *, no_auth: bool, max_body: int, max_batch: int
) -> None:
    """Refuse to serve in a way that exposes the database.

    Raises:
        InvalidArgumentError: ``no_auth`` on a host other machines can reach, both
            ``no_auth`` and keys, no key without ``no_auth``, or limits below 1.
    """
    if no_auth and not is_loopback(host):
        raise InvalidArgumentError(
            f"--no-auth is allowed only on a loopback host (127.0.0.1, ::1, localhost): "
            f"{host!r} can be reached from other machines; give API keys instead"
        )
    if no_auth and len(keys):
        raise InvalidArgumentError("--no-auth and API keys together: choose one")
    if not no_auth and not len(keys):
        raise InvalidArgumentError(
            "no API key: give --api-key, --keys-file or the LATENTDB_API_KEYS variable "
            "(or --no-auth, on a loopback host only)"
        )
    if max_body < 1 or max_batch < 1:
        raise InvalidArgumentError(
            f"--max-body and --max-batch must be at least 1; got {max_body} and {max_batch}"
        )


def build(
    database: Database,
    *,
    host: str,
    keys: Keyring,
    no_auth: bool = False,
    max_body: int = DEFAULT_MAX_BODY,
    max_batch: int = DEFAULT_MAX_BATCH,
    keepalive_requests: int | None = None,
    crowded: Callable[[], bool] | None = None,
) -> ASGIApp:
    """The served application, after the checks on how it may be exposed.

    Args:
        keepalive_requests, crowded: For a worker among several: close a keep-alive
            connection after this many requests, or sooner while the worker is crowded
            (see :func:`~latentdb.server.limited`).

    Raises:
        InvalidArgumentError: see :func:`check_exposure`.
    """
    check_exposure(host, keys, no_auth=no_auth, max_body=max_body, max_batch=max_batch)
    app = create_app(
        database, keys=None if no_auth else keys, max_body=max_body, max_batch=max_batch
    )
    return limited(app, max_body=max_body, keepalive_requests=keepalive_requests, crowded=crowded)


def serve(
    path: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8750,
    keys: Keyring,
    no_auth: bool = False,
    max_body: int = DEFAULT_MAX_BODY,
    max_batch: int = DEFAULT_MAX_BATCH,
    certfile: str | None = None,
    keyfile: str | None = None,
    access_log: bool = False,
    log_level: str = "info",
    workers: int = 1,
) -> None:
    """Serve the database in folder ``path`` until interrupted (Ctrl-C, SIGTERM).

    One process, one embedded :class:`Database`; requests run on the event loop (a
    short query) or in a thread pool. With ``workers`` above 1, that many processes
    serve the one database on the one port, each with its own :class:`Database`
    (SQLite's WAL lets them share it, and each catches up with the others' writes before
    it answers): one Python process is held to one core by the GIL. See
    :func:`_serve_workers`. With ``certfile`` and ``keyfile`` it speaks HTTPS (uvicorn's
    TLS options).

    Raises:
        InvalidArgumentError: see :func:`build`; a certificate without its key;
            ``workers`` below 1.
    """
    if (certfile is None) != (keyfile is None):
        raise InvalidArgumentError("TLS needs both --certfile and --keyfile")
    if workers < 1:
        raise InvalidArgumentError(f"--workers must be at least 1; got {workers}")
    check_exposure(host, keys, no_auth=no_auth, max_body=max_body, max_batch=max_batch)
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "ssl_certfile": certfile,
        "ssl_keyfile": keyfile,
        "access_log": access_log,
        "log_level": log_level,
        "server_header": False,
        "http": OneWriteProtocol,
    }
    if workers > 1:
        worker = _Worker(
            Path(path),
            host=host,
            keys=keys,
            no_auth=no_auth,
            max_body=max_body,
            max_batch=max_batch,
            settings=settings,
        )
        _serve_workers(worker, workers)
        return
    with EmbeddedDatabase(Path(path)) as database:
        for name, seconds in warm_up(database).items():
            _log.info("model %s loaded and run once in %.1f s", name, seconds)
        app = build(
            database,
            host=host,
            keys=keys,
            no_auth=no_auth,
            max_body=max_body,
            max_batch=max_batch,
        )
        uvicorn.Server(uvicorn.Config(app, **settings)).run()


def _serve_workers(worker: _Worker, workers: int) -> None:
    """Serve from ``workers`` processes until interrupted (Ctrl-C, SIGTERM).

    Each worker is a spawned interpreter that opens the database, warms it up, and only
    then listens, on a socket of its own bound to the one port with ``SO_REUSEPORT``: the
    kernel hands each new connection to one of the workers' sockets by a hash of its
    addresses. With one shared socket, whichever worker was running when a connection
    came accepted it, and on busy cores that was the busy one: 16 connections all went to
    one of 2 workers. This process holds the port (bound, never listening), starts the
    workers, starts another for one that dies, and on Ctrl-C or SIGTERM stops them all,
    each finishing its requests and closing its database.

    Raises:
        InvalidArgumentError: the port is in use, or the system has no SO_REUSEPORT.
        StorageError: a worker could not open the database.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise InvalidArgumentError("--workers needs SO_REUSEPORT (Linux, macOS, BSD)")
    with EmbeddedDatabase(worker.path):
        pass  # creates or upgrades the folder once, before the workers open it
    # The processes are the parallelism: a BLAS or OpenMP pool of a core's worth of
    # threads in each of them oversubscribes the cores (OpenBLAS threads spin while they
    # wait). With 2 workers on 2 busy cores, an exact scan of 10k rows took 15 ms a query
    # instead of 0.3 ms. The workers inherit these; a value the user set is kept.
    for variable in _THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    host, port = worker.settings["host"], worker.settings["port"]
    try:
        # A plain bind first: it fails while anything holds the port, even another
        # server's SO_REUSEPORT group that the workers' sockets would silently join.
        _bound(host, port, reuse_port=False).close()
        holder = _bound(host, port, reuse_port=True)
    except OSError as error:
        raise InvalidArgumentError(
            f"cannot serve on {host}:{port} (--host, --port): {error.strerror or error}"
        ) from None
    worker.settings["port"] = holder.getsockname()[1]  # port 0: the one the system chose
    try:
        _supervise(worker, workers)
    finally:
        holder.close()


def _supervise(worker: _Worker, workers: int) -> None:
    stop = threading.Event()
    failed = False

    def on_signal(number: int, frame: object) -> None:
        stop.set()

    uvicorn.Config("", **worker.settings)  # sets uvicorn's logging up here as in a worker
    handlers = {number: signal.signal(number, on_signal) for number in _STOP_SIGNALS}
    spawn = multiprocessing.get_context("spawn")
    slots = spawn.Array("i", workers, lock=False)  # each worker's connections

    def start(number: int) -> multiprocessing.process.BaseProcess:
        slots[number] = 0  # a worker that died took its connections along
        process = spawn.Process(target=worker.run, args=(slots, number), name="latentdb-worker")
        process.start()
        return process

    processes: list[multiprocessing.process.BaseProcess] = []
    try:
        _uvicorn_log.info("Started parent process [%d]", os.getpid())
        processes = [start(number) for number in range(workers)]
        while not stop.wait(0.5):
            for number, process in enumerate(processes):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    _uvicorn_log.error("Worker [%d] could not start: stopping", process.pid)
                    failed = True
                    stop.set()
                    break
                _uvicorn_log.warning(
                    "Worker [%d] died (exit code %s): starting another",
                    process.pid,
                    process.exitcode,
                )
                processes[number] = start(number)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests under way
        for process in processes:
            process.join()
        for number, handler in handlers.items():
            signal.signal(number, handler)
        _uvicorn_log.info("Stopping parent process [%d]", os.getpid())
    if failed:
        raise StorageError(
            f"a worker could not open the database in {worker.path} (its error is above)"
        )


def _bound(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet)."""
    bound = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        bound.bind((host.strip("[]"), port))
    except OSError:
        bound.close()
        raise
    return bound


class _Worker:
    """One worker process's settings and its body (picklable: each worker is spawned).
    It opens the database, warms it up (models and indexes), binds its own socket and
    serves until told to stop, then closes the database."""

    def __init__(
        self,
        path: Path,
        *,
        host: str,
        keys: Keyring,
        no_auth: bool,
        max_body: int,
        max_batch: int,
        settings: dict[str, Any],
    ) -> None:
        self.path = path
        self.host = host
        self.keys = keys
        self.no_auth = no_auth
        self.max_body = max_body
        self.max_batch = max_batch
        self.settings = settings

    def open(self, share: ConnectionShare | None = None) -> tuple[ASGIApp, Database]:
        """The app over the database, warmed up; exits the process if it cannot be."""
        try:
            database = EmbeddedDatabase(self.path)
            for name, seconds in warm_up(database).items():
                _log.info("model %s loaded and run once in %.1f s", name, seconds)
            app = build(
                database,
                host=self.host,
                keys=self.keys,
                no_auth=self.no_auth,
                max_body=self.max_body,
                max_batch=self.max_batch,
                keepalive_requests=WORKER_KEEPALIVE_REQUESTS,
                crowded=None if share is None else share.crowded,
            )
        except Exception:
            # Any other exit has the supervisor start the worker again, and again.
            _log.exception("worker %d could not open %s", os.getpid(), self.path)
            sys.exit(STARTUP_FAILURE)
        return app, database

    def run(self, slots: Any, number: int) -> None:
        """Serve until SIGTERM or SIGINT (the body of a worker process).

        Args:
            slots: The connections each worker holds (shared memory).
            number: This worker's slot in ``slots``.
        """
        share = ConnectionShare(slots, number)
        app, database = self.open(share)
        settings = {**self.settings, "http": counting(share)}
        try:
            try:
                listening = _bound(self.settings["host"], self.settings["port"], reuse_port=True)
            except OSError:
                _log.exception("worker %d could not bind its socket", os.getpid())
                sys.exit(STARTUP_FAILURE)
            with listening:
                uvicorn.Server(uvicorn.Config(app, **settings)).run(sockets=[listening])
        finally:
            database.close()


def warm_up(database: Database) -> dict[str, float]:
    """Load the index of every collection, and the model of every collection that
    embeds text (run once), before the first request: the first text query on a fresh
    server waited 4.6-5.5 s for the model to load (issue 18), and the first query of
    each worker for its index (a 100k-row HNSW index takes about a second). A model
    that cannot load is left to fail on its own collection's requests, with a warning
    now.

    Returns:
        Seconds each embedder took to load and embed one text, by embedder name.
    """
    seconds: dict[str, float] = {}
    for name in database.list_collections():
        collection = database.get_collection(name)
        collection.index_status()  # loads the index and catches it up with the store
        embedder = collection.embedder
        if embedder is None or embedder in seconds:
            continue
        started = time.perf_counter()
        try:
            model = collection_embedder(collection)
            if "text" in model.modalities:
                model.embed_texts(["warm up"])
        except LatentDBError as error:
            warnings.warn(
                f"collection {name!r}: its model {embedder!r} did not load ({error}); "
                "its text and image requests will fail until it does",
                LatentDBWarning,
                stacklevel=2,
            )
            continue
        seconds[embedder] = time.perf_counter() - started
    return seconds


class ServerThread:
    """A uvicorn server in a thread of this process, on a free loopback port (tests,
    benchmarks). Use as a context manager, or :meth:`start` and :meth:`stop`.

    Attributes:
        app: The application served (swap ``app.state.database`` to serve another).
        url: ``http://127.0.0.1:PORT``.
    """

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1") -> None:
        self.app = app
        self._socket = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
        )
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        port = self._socket.getsockname()[1]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", http=OneWriteProtocol
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="latentdb-server",
            daemon=True,
        )

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start serving; returns once the server accepts connections.

        Raises:
            StorageError: it did not start within ``timeout`` seconds.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise StorageError(f"the server at {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join()
        self._socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
