"""ShardHost: the code a Ray actor runs, holding embedded engines for shard folders.

One host serves one (shard, replica) position of every sharded collection a Ray job
uses: shard 0's first replica of every collection lives in the host named
``latentdb-shard-0-replica-0``, and so on. Each shard of each collection is its own
folder, an embedded :class:`~latentdb.Database` holding one collection called
``"shard"``. The host opens a folder on first use and keeps it open until every
:class:`ShardedDatabase` that used it has released it, so a test suite's many
databases reuse a few long-lived actors instead of starting processes (about a second
each) per collection.

A host keeps nothing that is not on disk: when Ray restarts it after a crash, the next
call opens the folder again and the embedded engine recovers every committed write
from SQLite (DESIGN.md: "a crash loses no acknowledged write").

This module does not import Ray: :func:`latentdb.distributed._shards.host_class` wraps
:class:`ShardHost` in ``ray.remote`` when the first sharded database is opened.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentdb.api import Collection, GetResult, IndexSpec, scroll_request
from latentdb.engine import EmbeddedCollection, EmbeddedDatabase
from latentdb.errors import CollectionNotFoundError, DuplicateIdError, InvalidArgumentError
from latentdb.store import DATABASE_FILE

__all__ = ["SHARD_COLLECTION", "ShardHost"]

# The name of the one collection inside each shard folder.
SHARD_COLLECTION = "shard"


@dataclass
class _Engine:
    database: EmbeddedDatabase
    collection: EmbeddedCollection
    holders: set[str] = field(default_factory=set)


class ShardHost:
    """Embedded engines for shard folders, answering the calls of sharded collections.

    Every method takes the folder of the shard it acts on and the ``holder`` token of
    the :class:`ShardedDatabase` calling, so that one host serves many databases.
    """

    def __init__(self) -> None:
        self._engines: dict[str, _Engine] = {}
        self._lock = threading.Lock()

    def pid(self) -> int:
        """The host's process id (tests see a restart by its change)."""
        return os.getpid()

    def create(self, folder: str, holder: str, spec: Mapping[str, Any]) -> None:
        """Create the shard folder and its collection (or open it, when it exists).

        Args:
            spec: ``dimension``, ``metric``, ``model``, ``index`` (an IndexSpec's dict),
                ``recall_target`` and, when set, ``reduce`` of the sharded collection.
        """
        reduce = {} if spec.get("reduce") is None else {"reduce": int(spec["reduce"])}
        self._open(
            folder,
            holder,
            lambda database: database.get_or_create_collection(
                SHARD_COLLECTION,
                dimension=int(spec["dimension"]),
                metric=spec["metric"],
                embedder=None,
                model=spec["model"],
                index=IndexSpec.parse(spec["index"]),
                recall_target=float(spec["recall_target"]),
                # The driver checks model= before any shard is written to.
                require_model=False,
                **reduce,
            ),
        )

    def _open(
        self, folder: str, holder: str, collection_of: Callable[[EmbeddedDatabase], Collection]
    ) -> _Engine:
        """The engine of ``folder`` for ``holder``, opened (with ``collection_of`` its
        database) if this process has not yet."""
        with self._lock:
            engine = self._engines.get(folder)
            if engine is None:
                database = EmbeddedDatabase(folder)
                try:
                    collection = collection_of(database)
                except BaseException:
                    database.close()
                    raise
                assert isinstance(collection, EmbeddedCollection)  # the engine's own
                engine = self._engines[folder] = _Engine(database, collection)
            engine.holders.add(holder)
            return engine

    def _engine(self, folder: str, holder: str) -> _Engine:
        """The open engine of ``folder``, opened now if this process has not yet.

        Raises:
            CollectionNotFoundError: the folder holds no shard (it was deleted).
        """
        if folder not in self._engines and not (Path(folder) / DATABASE_FILE).exists():
            raise CollectionNotFoundError(f"shard folder {folder} does not exist")
        return self._open(
            folder, holder, lambda database: database.get_collection(SHARD_COLLECTION)
        )

    def call(self, folder: str, holder: str, method: str, arguments: Mapping[str, Any]) -> Any:
        """Run one :class:`~latentdb.Collection` method on the shard in ``folder``.

        ``method`` is a Collection method, or one of the host's own: ``add_again``
        (the retry of an add whose reply was lost), ``present`` (which ids are
        stored), ``page`` (a page of ``get`` and the number of matches) and
        ``page_after`` (a page of ``scroll`` after a row key).

        Raises:
            InvalidArgumentError: an unknown method.
            LatentDBError: whatever the embedded collection raises.
        """
        collection = self._engine(folder, holder).collection
        if method in _PASSED:
            return getattr(collection, method)(**arguments)
        own = getattr(self, f"_{method}", None)
        if own is None or method not in _OWN:
            raise InvalidArgumentError(f"a shard host has no method {method!r}")
        return own(collection, **arguments)

    @staticmethod
    def _add_again(collection: EmbeddedCollection, *, ids: list[str], **fields: Any) -> None:
        """An add retried after its host died: done already when every id is stored
        with the very vectors sent (an add commits whole or not at all), else added.

        Raises:
            DuplicateIdError: some ids are stored with other vectors, or only some are.
        """
        stored = collection.get(ids, include=("vectors",))
        if not stored.ids:
            collection.add(ids, **fields)
            return
        wanted = collection.space.prepare(fields["vectors"], rows=len(ids))
        position = {record_id: row for row, record_id in enumerate(ids)}
        rows = [position[record_id] for record_id in stored.ids]
        vectors = stored.vectors
        whole = len(stored.ids) == len(ids) and vectors is not None
        if whole and np.array_equal(vectors, wanted[rows]):  # type: ignore[arg-type]
            return  # prepared alike, bit for bit: this very add committed before
        raise DuplicateIdError(
            f"id {stored.ids[0]!r} is already stored ({len(stored.ids)} of the {len(ids)} "
            "ids are): use upsert to replace"
        )

    @staticmethod
    def _present(collection: EmbeddedCollection, *, ids: list[str]) -> list[str]:
        """Those of ``ids`` that are stored."""
        return collection.get(ids, include=()).ids

    @staticmethod
    def _page(
        collection: EmbeddedCollection,
        *,
        where: Any,
        where_document: Any,
        limit: int | None,
        offset: int,
        include: Sequence[str],
    ) -> tuple[GetResult, int]:
        """A page of the matching records in insertion order, and how many match."""
        everything = collection.get(where=where, where_document=where_document, include=())
        total = len(everything.ids)
        if limit == 0 or offset >= total:
            return GetResult(ids=[]), total
        page = collection.get(
            where=where,
            where_document=where_document,
            limit=limit,
            offset=offset,
            include=include,
        )
        return page, total

    @staticmethod
    def _page_after(
        collection: EmbeddedCollection,
        *,
        after: int,
        batch: int,
        where: Any,
        where_document: Any,
        include: Sequence[str],
    ) -> tuple[GetResult, int]:
        """Up to ``batch`` matching records after row key ``after``, and the last key."""
        request = scroll_request(batch, where, where_document, include)
        return collection.page_after(request, after)

    def release(self, holder: str) -> None:
        """Forget ``holder``; close the folders no other holder uses."""
        with self._lock:
            for folder, engine in list(self._engines.items()):
                engine.holders.discard(holder)
                if not engine.holders:
                    engine.database.close()
                    del self._engines[folder]

    def drop(self, folder: str) -> None:
        """Close the shard in ``folder`` and delete the folder."""
        with self._lock:
            engine = self._engines.pop(folder, None)
            if engine is not None:
                engine.database.close()
            shutil.rmtree(folder, ignore_errors=True)


# Collection methods a host runs as they are.
_PASSED = frozenset(
    {
        "add",
        "upsert",
        "update",
        "delete",
        "get",
        "query",
        "count",
        "optimize",
        "index_status",
        "set_recall_target",
        "clear_recorded_queries",
        "evaluate",
    }
)
# The host's own methods (``_name``) reachable through ``call``.
_OWN = frozenset({"add_again", "present", "page", "page_after"})
