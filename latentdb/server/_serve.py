"""Running the app under uvicorn: ``latentdb serve``, and a server in a thread."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
import warnings
from pathlib import Path

import uvicorn

from latentdb.api import Database, collection_embedder
from latentdb.engine import EmbeddedDatabase
from latentdb.errors import InvalidArgumentError, LatentDBError, LatentDBWarning, StorageError
from latentdb.server._app import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, create_app, limited
from latentdb.server._auth import Keyring
from latentdb.server._plumbing import ASGIApp

__all__ = ["ServerThread", "build", "check_exposure", "is_loopback", "serve", "warm_up"]

_log = logging.getLogger("latentdb.server")


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
) -> ASGIApp:
    """The served application, after the checks on how it may be exposed.

    Raises:
        InvalidArgumentError: see :func:`check_exposure`.
    """
    check_exposure(host, keys, no_auth=no_auth, max_body=max_body, max_batch=max_batch)
    app = create_app(
        database, keys=None if no_auth else keys, max_body=max_body, max_batch=max_batch
    )
    return limited(app, max_body=max_body)


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
) -> None:
    """Serve the database in folder ``path`` until interrupted (Ctrl-C, SIGTERM).

    One process, one embedded :class:`Database`; requests run in a thread pool. With
    ``certfile`` and ``keyfile`` it speaks HTTPS (uvicorn's TLS options).

    Raises:
        InvalidArgumentError: see :func:`build`; a certificate without its key.
    """
    if (certfile is None) != (keyfile is None):
        raise InvalidArgumentError("TLS needs both --certfile and --keyfile")
    check_exposure(host, keys, no_auth=no_auth, max_body=max_body, max_batch=max_batch)
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
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            access_log=access_log,
            log_level=log_level,
            server_header=False,
        )
        uvicorn.Server(config).run()


def warm_up(database: Database) -> dict[str, float]:
    """Load the model of every collection that embeds text, and run it once, before
    the first request: the first text query on a fresh server waited 4.6-5.5 s for the
    model to load (issue 18). A model that cannot load is left to fail on its own
    collection's requests, with a warning now.

    Returns:
        Seconds each embedder took to load and embed one text, by embedder name.
    """
    seconds: dict[str, float] = {}
    for name in database.list_collections():
        collection = database.get_collection(name)
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
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
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
