"""The OpenAPI document: every status a route can send, each with the error body.

FastAPI documents 200 and 422 by itself; this server never sends 422 (a request that
does not parse is a 400 ``invalid_argument``, like any bad argument), so 422 and its
schemas are taken out, and each route lists its error statuses instead (issue 15,
defect 14).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from latentdb.errors import LatentDBError, TransportError

__all__ = ["ErrorBody", "document", "key_responses", "responses"]

_WHY = {
    400: "The request does not parse, or an argument is invalid.",
    401: "No API key, or one this server does not know.",
    403: "The API key may not do this: it is read-only, or not for this collection.",
    404: "No such collection, alias, migration or record.",
    409: "It conflicts with what is stored: the name is taken, an id is repeated, the "
    "vectors come from another model, or the database can only be read.",
    413: "The body or a batch is over this server's limits.",
    500: "The server failed (the reason is in its log) or its storage did.",
}


def _error_classes() -> list[type[LatentDBError]]:
    """Every latentdb error a server can send (not the client's own TransportError)."""
    found, pending = [], [LatentDBError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not issubclass(cls, TransportError):
            found.append(cls)
    return found


def _description(status: int) -> str:
    """Why a reply has ``status``, and the codes of latentdb.errors that send it."""
    codes = sorted({cls.code for cls in _error_classes() if cls.status == status})
    return f"{_WHY.get(status, 'A latentdb error.')} Codes: {', '.join(codes)}."


class ErrorBody(BaseModel):
    """What every error reply carries."""

    code: str = Field(
        description="The error's stable name (collection_not_found, ...): the Python client "
        "raises the latentdb exception class of that code."
    )
    status: int = Field(description="The HTTP status of the reply.")
    message: str = Field(description="What was expected and what came.")


def _server_statuses() -> set[int]:
    """The statuses of 500 and above that a latentdb error can have (storage errors
    included)."""
    return {cls.status for cls in _error_classes() if cls.status >= 500}


def responses(*statuses: int, write: bool = False) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can send ``statuses``, besides those every
    route can send: 400 (a request that does not parse, a closed database), 413 (the
    body limit applies to every route) and 500 and up; 409 for a ``write`` (a read-only
    database). A server that wants keys adds :func:`key_responses` to every route but
    the open ones."""
    wanted = {400, 413, *statuses, *_server_statuses()} | ({409} if write else set())
    return _described(wanted)


def key_responses() -> dict[int | str, dict[str, Any]]:
    """401 and 403, for the routes of a server that wants keys."""
    return _described({401, 403})


def _described(statuses: set[int]) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorBody, "description": _description(status)}
        for status in sorted(statuses)
    }


def document(app: FastAPI) -> None:
    """Have ``app`` serve its OpenAPI document without FastAPI's 422 replies."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    replies = operation.get("responses", {})
                    replies.pop("422", None)
                    operation["responses"] = replies = dict(sorted(replies.items()))
                    for status, reply in replies.items():
                        if not status.startswith("2") and "content" in reply:
                            # Errors are JSON even where the route's reply is not (metrics).
                            content = reply["content"]
                            reply["content"] = {"application/json": content.popitem()[1]}
            schemas = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
