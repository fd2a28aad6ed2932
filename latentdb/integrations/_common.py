"""What the LangChain and LlamaIndex stores share: the database they work on (opened or
given, closed if opened), the keyword arguments they refuse, and deleting every record."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from latentdb._closeable import Closeable
from latentdb._connect import connect
from latentdb.api import Collection, Database
from latentdb.errors import InvalidArgumentError

__all__ = ["DatabaseHolder", "delete_every", "open_database", "refuse_unknown"]

# Ids per delete call when deleting everything: keeps one request well under a server's
# batch limit.
_DELETE_BATCH = 1000


def open_database(
    path: str | os.PathLike[str] | None, database: Database | None
) -> tuple[Database, bool]:
    """The database a store keeps its collection in, and whether the store opened it
    (then its ``close`` closes it; a ``database=`` given is left open).

    Args:
        path: A database folder or server URL to open with :func:`latentdb.connect`.
        database: An open database to use instead.

    Raises:
        InvalidArgumentError: neither or both of ``path`` and ``database``.
    """
    if path is not None and database is None:
        return connect(path), True
    if path is None and database is not None:
        return database, False
    raise InvalidArgumentError(
        "LatentDBVectorStore needs path= (a folder or server URL) or database= (an "
        "open latentdb Database), not both"
    )


class DatabaseHolder(Closeable):
    """The database side of a store: set ``_database`` and ``_owned`` from
    :func:`open_database`; :meth:`close` (or the end of a ``with`` block) closes the
    database only if the store opened it."""

    _database: Database
    _owned: bool

    def close(self) -> None:
        """Close the database if this store opened it (``path=``)."""
        if self._owned:
            self._database.close()

    @property
    def database(self) -> Database:
        """The database holding the collection."""
        return self._database


def refuse_unknown(kwargs: Mapping[str, Any], method: str) -> None:
    """The frameworks pass options as keywords: a misspelled one must not pass silently.

    Raises:
        InvalidArgumentError: ``kwargs`` is not empty.
    """
    if kwargs:
        raise InvalidArgumentError(
            f"LatentDBVectorStore.{method}() got unknown keyword arguments {sorted(kwargs)}"
        )


def delete_every(collection: Collection) -> None:
    """Delete every record of ``collection`` (the collection stays), in batches."""
    every = [i for page in collection.scroll(include=[]) for i in page.ids]
    for start in range(0, len(every), _DELETE_BATCH):
        collection.delete(every[start : start + _DELETE_BATCH])
