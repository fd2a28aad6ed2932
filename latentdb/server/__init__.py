"""The HTTP server: a FastAPI app over an embedded Database, served by uvicorn.

Start it with ``latentdb serve PATH``; connect with ``latentdb.connect("http://...")``.
Needs the ``server`` extra (``pip install 'latentdb[server]'``).
"""

from latentdb._extras import needs_extra

with needs_extra("server", "the latentdb server"):
    import fastapi  # noqa: F401
    import orjson  # noqa: F401
    import uvicorn  # noqa: F401

from latentdb.server._app import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, create_app, limited
from latentdb.server._auth import ENV_KEYS, ApiKey, Keyring
from latentdb.server._serve import (
    ServerThread,
    build,
    check_exposure,
    is_loopback,
    serve,
    warm_up,
)

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY",
    "ENV_KEYS",
    "ApiKey",
    "Keyring",
    "ServerThread",
    "build",
    "check_exposure",
    "create_app",
    "is_loopback",
    "limited",
    "serve",
    "warm_up",
]
