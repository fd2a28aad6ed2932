"""The HTTP plumbing under the routes: JSON replies, error replies without server
paths, the guard that answers a crash in-band, API key lookup, the body limit and the
scroll cursors."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from latentdb.api import GetResult
from latentdb.client import error_to_wire
from latentdb.errors import (
    InvalidArgumentError,
    LatentDBError,
    PayloadTooLargeError,
    ServerError,
)
from latentdb.server._auth import ApiKey, Keyring
from latentdb.server._metrics import Metrics

__all__ = [
    "OPEN_PATHS",
    "REBALANCE_REQUESTS",
    "ASGIApp",
    "AnsweringRoute",
    "Cursors",
    "Limits",
    "Receive",
    "Scope",
    "Send",
    "answer_error",
    "crash",
    "error_response",
    "json_response",
    "key_of",
    "presented_key",
    "scrub",
]

log = logging.getLogger("latentdb.server")

# A scroll cursor left alone this long is dropped.
CURSOR_IDLE_SECONDS = 600.0
MAX_CURSORS = 1000
# Requests a connection makes before a crowded worker closes it (see Limits).
REBALANCE_REQUESTS = 10
# Connections whose requests Limits counts at most (see keepalive_requests).
_MAX_CONNECTIONS_COUNTED = 10_000
# The only routes answered without an API key.
OPEN_PATHS = frozenset({"/healthz"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def json_response(payload: object, status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def error_response(
    error: LatentDBError, *, database: object = None, headers: dict[str, str] | None = None
) -> Response:
    wire = error_to_wire(error)
    wire["message"] = scrub(wire["message"], database)
    response = json_response(wire, error.status)
    response.headers.update(headers or {})
    return response


def answer_error(state: Any, error: LatentDBError) -> Response:
    """The app's reply to ``error`` (``state``: the app's state), counted in /metrics."""
    state.metrics.error(error.code)
    return error_response(error, database=state.database)


def scrub(message: str, database: object) -> str:
    """``message`` with the database folder's path (as given, absolute or resolved)
    replaced by ``<database>``: replies name collections, never server paths."""
    path = getattr(database, "path", None)
    if not isinstance(path, Path):
        return message
    forms = {str(path), str(path.absolute()), str(path.resolve())}
    for form in sorted((f for f in forms if f not in ("", ".")), key=len, reverse=True):
        message = message.replace(form, "<database>")
    return message


def crash(method: str, path: str, error: BaseException) -> ServerError:
    # Details go to the log only: a reply never carries a stack trace.
    log.error("%s %s failed", method, path, exc_info=error)
    return ServerError("the server failed to answer; the reason is in its log")


def key_of(request: Request) -> ApiKey | None:
    """The key the request presents (``Authorization: Bearer`` or ``X-API-Key``),
    looked up once per request; None when the server wants no keys.

    Raises:
        AuthError: no key, or one the server does not know.
    """
    keyring: Keyring | None = request.app.state.keys
    if keyring is None:
        return None
    found: ApiKey | None = getattr(request.state, "key", None)
    if found is None:
        headers = request.headers
        presented = presented_key(headers.get("authorization", ""), headers.get("x-api-key"))
        found = request.state.key = keyring.find(presented)
    return found


def presented_key(authorization: str, api_key_header: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer KEY``, else ``X-API-Key``."""
    scheme, _, token = authorization.partition(" ")
    presented = token.strip() if scheme.lower() == "bearer" else None
    return presented or api_key_header


class AnsweringRoute(APIRoute):
    """A route that turns any exception other than a latentdb or HTTP error into a
    :class:`ServerError`, answered by the app's exception handler like any error.

    Starlette hands other exceptions to its outermost middleware, which sends the 500
    and then re-raises so the server can log it; uvicorn then closes the connection
    (the response is already out), and a client's next request on that keep-alive
    connection races the close and gets a reset (issue 15, defect 4). Here the
    exception never leaves the route.

    It also checks the API key before the request is parsed, so that without a valid
    key every request gets the same 401, whatever its body says."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        answer = super().get_route_handler()
        open_route = self.path in OPEN_PATHS

        async def guarded(request: Request) -> Response:
            try:
                if not open_route:
                    key_of(request)
                return await answer(request)
            except (LatentDBError, HTTPException, RequestValidationError):
                raise
            except Exception as error:
                raise crash(request.method, request.url.path, error) from None

        return guarded


class Limits:
    """A pure ASGI middleware: refuses bodies over ``max_body`` bytes with 413 (before
    reading them, when Content-Length says so), and counts every request for /metrics.

    With ``keepalive_requests``, a keep-alive connection is closed (``Connection:
    close``) after that many requests, as nginx's directive of that name does, and, with
    ``crowded`` too, after ``REBALANCE_REQUESTS`` while ``crowded()`` says this worker
    holds more than its share of the connections. The kernel hands each new connection to
    a worker by a hash of its addresses (``SO_REUSEPORT``), so 16 connections can split
    12/4 between 2 workers; a client that reconnects is hashed again, and the shares even
    out."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        metrics: Metrics,
        keepalive_requests: int | None = None,
        crowded: Callable[[], bool] | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics
        self.keepalive_requests = keepalive_requests
        self.crowded = crowded
        # Requests answered on each open connection, by client address (the event loop
        # alone touches it). Connections that close early leave entries: dropped in bulk.
        self._served: dict[tuple[str, int], int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        status, started = [500], [False]
        close = self._last_on_connection(scope.get("client"), scope.get("path", ""))

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0], started[0] = message["status"], True
                if close:
                    message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
            await send(message)

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                await self._too_large(int(declared), sending)
                return
            body, more = bytearray(), True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body:
                    await self._too_large(None, sending)
                    return
            replayed = False

            async def replay() -> MutableMapping[str, Any]:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}

            await self.app(scope, replay, sending)
        except Exception as error:
            # Anything the routes did not answer (a bug in a middleware): answer it here
            # rather than let it reach uvicorn, which would drop the connection. Once a
            # reply is out, Starlette re-raises to have it logged: it was, so swallow it.
            if started[0]:
                log.debug("%s %s failed after its reply", scope["method"], scope.get("path"))
            else:
                failure = crash(scope["method"], scope.get("path", ""), error)
                self.metrics.error(failure.code)
                await self._send(error_response(failure), sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            seconds = time.perf_counter() - started_at
            self.metrics.observe(scope["method"], path, status[0], seconds)

    def _last_on_connection(self, client: tuple[str, int] | None, path: str) -> bool:
        """Whether this request is the last its connection may make. Never a page of a
        scroll: its cursor lives in this worker, and the next page must find it."""
        if self.keepalive_requests is None or client is None:
            return False
        served = self._served.get(client, 0) + 1
        due = served >= self.keepalive_requests or (
            served >= REBALANCE_REQUESTS and self.crowded is not None and self.crowded()
        )
        if due and not path.endswith("/scroll"):
            self._served.pop(client, None)
            return True
        if len(self._served) >= _MAX_CONNECTIONS_COUNTED:
            self._served.clear()
        self._served[client] = served
        return False

    async def _too_large(self, size: int | None, send: Send) -> None:
        said = "" if size is None else f" of {size:,} bytes"
        error = PayloadTooLargeError(
            f"request body{said} is over this server's limit of {self.max_body:,} bytes "
            "(latentdb serve --max-body): send fewer rows per call"
        )
        self.metrics.error(error.code)
        await self._send(error_response(error), send)

    @staticmethod
    async def _send(response: Response, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(k.encode(), v.encode()) for k, v in response.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": response.body})


class Cursors:
    """Open ``scroll`` iterations, by an unguessable token; idle ones expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, tuple[str, Iterator[GetResult], float]] = {}

    def open(self, collection: str, pages: Iterator[GetResult]) -> str:
        """Keep ``pages`` under a new token."""
        token = secrets.token_urlsafe(18)
        now = time.monotonic()
        with self._lock:
            for old, (_, _, used) in list(self._open.items()):
                if now - used > CURSOR_IDLE_SECONDS:
                    del self._open[old]
            if len(self._open) >= MAX_CURSORS:
                oldest = min(self._open, key=lambda t: self._open[t][2])
                del self._open[oldest]
            self._open[token] = (collection, pages, now)
        return token

    def take(self, token: str, collection: str) -> Iterator[GetResult]:
        """The iteration under ``token`` (taken out while a page is read).

        Raises:
            InvalidArgumentError: unknown or expired token, or another collection's.
        """
        with self._lock:
            entry = self._open.pop(token, None)
        if entry is None or entry[0] != collection:
            raise InvalidArgumentError(
                "scroll cursor is unknown or expired (cursors live "
                f"{CURSOR_IDLE_SECONDS:.0f} s unused, and on one server): start the scroll again"
            )
        return entry[1]

    def put_back(self, token: str, collection: str, pages: Iterator[GetResult]) -> None:
        """Keep the iteration again after a page."""
        with self._lock:
            self._open[token] = (collection, pages, time.monotonic())
