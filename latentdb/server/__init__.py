"""The HTTP server: a FastAPI app over an embedded Database, served by uvicorn.

Start it with ``latentdb serve PATH``; connect with ``latentdb.connect("http://...")``.
Needs the ``server`` extra (``pip install 'latentdb[server]'``).
"""

try:
    import fastapi  # noqa: F401
    import orjson  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as error:  # pragma: no cover - the extra is installed in development
    raise ImportError(
        f"the latentdb server needs the 'server' extra ({error.name} is missing): "
        "pip install 'latentdb[server]'"
    ) from None

from latentdb.server._app import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, create_app, limited
from latentdb.server._auth import ENV_KEYS, ApiKey, Keyring
from latentdb.server._serve import ServerThread, build, check_exposure, is_loopback, serve

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
]
