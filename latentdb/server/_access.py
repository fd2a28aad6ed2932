"""What every route depends on: the served database, the caller's key and the limits.

Routes take an :class:`Access` (``access: Authorized``) rather than closing over the
database: FastAPI builds one per request from ``app.state``, so a test may point a
running app at another database (``app.state.database``) between requests.

The key is looked up (401) by :class:`~latentdb.server._plumbing.AnsweringRoute` before
the body is parsed; what it may do (403) is checked by the route, after the body
parses, against the names the request touches.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from latentdb.api import Collection, Database
from latentdb.client import VECTOR_HEADER, VectorFormat
from latentdb.errors import InvalidArgumentError, PayloadTooLargeError
from latentdb.server._auth import ApiKey
from latentdb.server._plumbing import Cursors, key_of

__all__ = ["Access", "Authorized", "Scrolls", "VectorForm", "images"]


@dataclass(frozen=True)
class Access:
    """The served database as the request's API key may use it."""

    database: Database
    key: ApiKey | None
    max_batch: int

    def allows(self, name: str) -> bool:
        """Whether the key may see ``name`` (always, without keys)."""
        return self.key is None or self.key.allows(name)

    def check(self, *names: str, write: bool) -> None:
        """Refuse the request unless the key may read (or write) every one of ``names``
        (the database as a whole when none is named).

        Raises:
            ForbiddenError: a read-only key writes, or a key for other collections.
        """
        if self.key is None:
            return
        for name in names or (None,):
            self.key.check(write=write, collection=name)

    def collection(self, name: str, *, write: bool) -> Collection:
        """The collection (or alias) ``name``, once the key may use it.

        Raises:
            ForbiddenError: the key may not.
            CollectionNotFoundError: there is no such collection.
        """
        self.check(name, write=write)
        return self.database.get_collection(name)

    def batch(self, count: int, what: str) -> None:
        """Refuse more than the server's ``max_batch`` rows (queries, ids) in one call.

        Raises:
            PayloadTooLargeError: ``count`` is over the limit.
        """
        if count > self.max_batch:
            raise PayloadTooLargeError(
                f"{count:,} {what} in one request is over this server's limit of "
                f"{self.max_batch:,} (latentdb serve --max-batch): split the call"
            )


async def access(request: Request) -> Access:
    """The request's :class:`Access` (a FastAPI dependency)."""
    state = request.app.state
    return Access(database=state.database, key=key_of(request), max_batch=state.max_batch)


async def vector_form(request: Request) -> VectorFormat:
    """The form of arrays the reply uses, named by the ``X-LatentDB-Vectors`` header."""
    return "binary" if request.headers.get(VECTOR_HEADER, "") == "binary" else "json"


async def scrolls(request: Request) -> Cursors:
    """The app's open ``scroll`` iterations (cursors live on one server)."""
    found: Cursors = request.app.state.cursors
    return found


Authorized = Annotated[Access, Depends(access)]
Scrolls = Annotated[Cursors, Depends(scrolls)]
VectorForm = Annotated[VectorFormat, Depends(vector_form)]


def images(value: object) -> Any:
    """Images as the engine takes them: base64 text decoded to the encoded bytes.

    Raises:
        InvalidArgumentError: an item is not base64 (a path is not read on the server).
    """
    if not isinstance(value, list):
        return value  # the engine names what is wrong
    decoded = []
    for position, item in enumerate(value):
        try:
            decoded.append(base64.b64decode(item, validate=True))
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"images travel as base64 of their encoded bytes; the one at position "
                f"{position} is not (file paths are not read on the server)"
            ) from None
    return decoded
