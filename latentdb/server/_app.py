"""The FastAPI application: every Database and Collection operation as an endpoint.

The routes (``_routes/``, a router per resource) translate JSON to one call of the
interface and its result back: the implementation does every check, so errors are its
own, sent as ``{"code", "status", "message"}`` and re-raised by the client as the same
class. They depend on the database and the caller's key (``_access.py``), which they
take from ``app.state`` per request, never from a closure.

An exception that is not a latentdb error (a bug) is answered in-band as a JSON 500
by the route itself (:class:`AnsweringRoute`): it never reaches uvicorn, which closes
a keep-alive connection after any exception that escapes the application (issue 15).
Messages never carry the database folder's path: it is replaced by ``<database>``.

Endpoints are plain functions, which FastAPI runs in its thread pool: a long query or
an ``optimize()`` holds a worker thread, never the event loop. The engine serializes
its work under its store's lock (one SQLite connection; faiss releases the GIL inside
a search), and background index builds run outside that lock, so reads go on while a
segment is built.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

from latentdb._version import __version__
from latentdb.api import Database
from latentdb.errors import InvalidArgumentError, LatentDBError, NotFoundError
from latentdb.server._auth import Keyring
from latentdb.server._fastlane import FastLane
from latentdb.server._metrics import Metrics
from latentdb.server._openapi import document, key_responses
from latentdb.server._plumbing import (
    ASGIApp,
    Cursors,
    Limits,
    answer_error,
    crash,
    error_response,
)
from latentdb.server._routes import OPEN, ROUTERS

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY", "create_app"]


# 64 MiB: 10,000 384-d vectors as JSON lists of floats take ~40 MB, ~20 MB in binary.
DEFAULT_MAX_BODY = 64 * 1024 * 1024
# Rows per write and queries per query call.
DEFAULT_MAX_BATCH = 10_000


def create_app(
    database: Database,
    *,
    keys: Keyring | None,
    max_body: int = DEFAULT_MAX_BODY,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> FastAPI:
    """The HTTP API over ``database``.

    Args:
        database: An embedded database (``app.state.database``; the caller closes it).
        keys: The API keys accepted; None serves without authentication.
        max_body: Largest request body in bytes (413 above).
        max_batch: Most rows per write, queries per query, ids per read (413 above).

    Returns:
        The FastAPI application (wrapped in the body limit at ``app.state.asgi``).
    """
    app = FastAPI(
        title="latentdb",
        version=__version__,
        description=(
            "A vector database that indexes a model's latent space. Send the API key as "
            "`Authorization: Bearer KEY`. Errors are `{code, status, message}`."
        ),
    )
    document(app)
    app.state.database = database
    app.state.keys = keys
    app.state.metrics = Metrics()
    app.state.cursors = Cursors()
    app.state.max_batch = max_batch
    for router in OPEN:
        app.include_router(router)
    for router in ROUTERS:
        app.include_router(router, responses=key_responses() if keys is not None else None)
    _answer_errors(app)
    return app


def _answer_errors(app: FastAPI) -> None:
    """Have ``app`` answer every error as ``{code, status, message}`` and count it."""
    metrics: Metrics = app.state.metrics

    @app.exception_handler(LatentDBError)
    async def on_latentdb_error(request: Request, error: LatentDBError) -> Response:
        return answer_error(request.app.state, error)

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        return await on_latentdb_error(request, InvalidArgumentError(problems))

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 404:
            return await on_latentdb_error(
                request, NotFoundError(f"no endpoint {request.method} {request.url.path}")
            )
        wrapped = InvalidArgumentError(str(error.detail))
        wrapped.status = error.status_code  # 405 and the like: keep the HTTP status
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        metrics.error(wrapped.code)
        return error_response(wrapped, headers=headers)

    @app.exception_handler(Exception)
    async def oncrash(request: Request, error: Exception) -> Response:
        # Only what escapes the routes gets here (AnsweringRoute answers the rest), and
        # Starlette re-raises it after this reply; Limits keeps it from uvicorn.
        return await on_latentdb_error(request, crash(request.method, request.url.path, error))


def _allowed_methods(request: Request) -> str:
    # Starlette names only the first route of the path; several share one (records).
    # The app holds its routers as included wholes: ask the routers' own routes.
    methods: set[str] = set()
    for route in (route for router in (*OPEN, *ROUTERS) for route in router.routes):
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def limited(
    app: FastAPI,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    keepalive_requests: int | None = None,
    crowded: Callable[[], bool] | None = None,
) -> ASGIApp:
    """``app`` behind the body size limit, the request metrics and the fast lane of
    queries (what uvicorn serves).

    Args:
        keepalive_requests: Close a keep-alive connection after this many requests
            (see :class:`~latentdb.server._plumbing.Limits`); None: never.
        crowded: Whether this worker holds more than its share of the connections (it
            then closes them sooner); None: one process.
    """
    return Limits(
        FastLane(app),
        max_body=max_body,
        metrics=app.state.metrics,
        keepalive_requests=keepalive_requests,
        crowded=crowded,
    )
