"""A fast lane for the hot route: ``POST /v1/collections/{name}/query``.

FastAPI's routing, dependency solving, thread hops and body parsing cost more per
request than a one-vector search on 100k rows: called in process on 2 busy cores, the
app took 3.7-4.0 ms beyond a 0.6-0.8 ms search, the lane 0.55 ms (issue 18). The lane
is a pure ASGI layer in front of the
FastAPI app. For a query request it does what the route does (look the key up, parse
the body into :class:`~latentdb.server._routes.queries.QueryBody`, call the route's own
function) and answers with the route's own reply. It answers only what it can answer
exactly as the app would; anything else (no key or an unknown one, a body that is not
a JSON object or does not validate, another content type) goes to the FastAPI app
untouched, whose answer is then the one the client gets. Errors of the call itself are
answered as the app answers them (``{code, status, message}``, counted in /metrics).

Where the call runs: a search of a few vectors without filters, texts or images takes
well under a millisecond, less than handing it to a thread and back costs on a busy
machine, so it runs on the event loop. Any other query (filters can build columns,
texts need the model, an exact scan may be long) runs in the app's thread pool, like
every other route, so that it holds a thread rather than the loop.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from latentdb.client import VECTOR_HEADER, VectorFormat, rows_of
from latentdb.errors import AuthError, LatentDBError
from latentdb.server._access import Access
from latentdb.server._plumbing import Receive, Scope, Send, answer_error, crash, presented_key
from latentdb.server._routes import queries

__all__ = ["INLINE_QUERIES", "FastLane"]

# Queries per request that still run on the event loop (a plain ANN search of this many
# vectors takes ~1 ms on 100k rows); more go to a thread.
INLINE_QUERIES = 4
_QUERY_PATH = re.compile(r"/v1/collections/([^/]+)/query")
_BINARY = VECTOR_HEADER.lower().encode("latin-1")


class FastLane:
    """Answers query requests without FastAPI's routing; hands the rest to ``app``."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.route = _route("/v1/collections/{name}/query", "POST")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _QUERY_PATH.fullmatch(scope["path"])
            if match is not None:
                await self._query(match.group(1), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _query(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.app.state
        headers = dict(scope["headers"])
        body, more = b"", True
        while more:  # under Limits, one message holds the whole body
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body += message.get("body", b"")
            more = message.get("more_body", False)
        prepared = _prepare(state, headers, body)
        if prepared is None:  # the app answers it, or says what is wrong with it
            await self.app(scope, _replay(body, receive), send)
            return
        parsed, key = prepared
        scope["route"] = self.route  # /metrics counts it under the route's path
        access = Access(database=state.database, key=key, max_batch=state.max_batch)
        form: VectorFormat = "binary" if headers.get(_BINARY, b"") == b"binary" else "json"
        try:
            if _short(parsed):
                response = queries.query(name, parsed, access, form)
            else:
                response = await run_in_threadpool(queries.query, name, parsed, access, form)
        except LatentDBError as error:
            response = answer_error(state, error)
        except Exception as error:
            response = answer_error(state, crash(scope["method"], scope["path"], error))
        await response(scope, receive, send)


def _prepare(
    state: Any, headers: dict[bytes, bytes], body: bytes
) -> tuple[queries.QueryBody, Any] | None:
    """The parsed body and the caller's key, or None to let the app answer."""
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        return None
    key = None
    keyring = state.keys
    if keyring is not None:
        api_key_header = headers.get(b"x-api-key")
        presented = presented_key(
            headers.get(b"authorization", b"").decode("latin-1"),
            None if api_key_header is None else api_key_header.decode("latin-1"),
        )
        try:
            key = keyring.find(presented)
        except AuthError:
            return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    try:
        return queries.QueryBody.model_validate(document), key
    except ValidationError:
        return None


def _short(body: queries.QueryBody) -> bool:
    """Whether the query is a plain ANN search of a few vectors (run on the loop)."""
    return (
        body.texts is None
        and body.images is None
        and body.where is None
        and body.where_document is None
        and not body.exact
        and not body.hybrid
        and rows_of(body.vectors) <= INLINE_QUERIES
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the body read, then what ``receive`` gives."""
    replayed = False

    async def replay() -> MutableMapping[str, Any]:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _route(path: str, method: str) -> BaseRoute:
    for route in queries.router.routes:
        if getattr(route, "path", None) == path and method in getattr(route, "methods", ()):
            return route
    raise LookupError(f"no route {method} {path}")
