"""The engine's in-memory state of one collection: its row, its space, its index and
the ids of its row keys."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from latentdb.engine._rows import RowCache
from latentdb.index import IndexSpec, SegmentedIndex
from latentdb.query import FilterCache
from latentdb.space import LatentSpace
from latentdb.store import Changes, CollectionRow

__all__ = ["CollectionState", "IdsByKey"]


class IdsByKey:
    """User ids by row key, for answering queries without SQLite.

    A dict, mirrored into a numpy object array indexed by key while the keys are dense
    enough (keys are database-wide, so several collections' keys interleave): one fancy
    index then maps a query's keys, a third of the time of dict lookups after a graph
    search has left the dict's entries out of the CPU caches.
    """

    def __init__(
        self,
        pairs: Mapping[int, str] | None = None,
        *,
        fetch: Callable[[list[int]], dict[int, str]] | None = None,
    ) -> None:
        """
        Args:
            pairs: Ids by key.
            fetch: Given, ``pairs`` is partial until :meth:`complete` brings the rest:
                meanwhile a key not held is asked of the store with it (the ids of
                those of the keys it still holds). Reopening a collection of 1M rows
                spent ~0.45 s reading every id before its first query could run.
        """
        self._ids: dict[int, str] = dict(pairs or {})
        self._array: npt.NDArray[np.object_] | None = None
        self._offset = 0
        self._fetch = fetch
        if fetch is None:
            self._mirror()

    def complete(self, pairs: Mapping[int, str]) -> None:
        """Take every id (read after this map was made, in the background; call under
        the lock its writers hold). A key keeps its id for life, so where both hold one
        they agree; a key deleted since stays until the array is next rebuilt, as
        :meth:`discard` leaves them."""
        merged = dict(pairs)
        merged.update(self._ids)
        self._ids, self._fetch = merged, None
        self._mirror()

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, key: int) -> str:
        return self._ids[key]

    def _mirror(self) -> None:
        """Rebuild the array (with room to grow), or drop it if keys are too sparse."""
        self._array = None
        if not self._ids:
            return
        low, high = min(self._ids), max(self._ids)
        if high - low + 1 > _MAX_KEY_SPAN_PER_ID * len(self._ids) + 1024:
            return
        self._offset = 0 if low <= len(self._ids) else low  # 0: one subtraction less
        array = np.empty(2 * (high - self._offset + 1) + 1024, dtype=object)
        keys = np.fromiter(self._ids, dtype=np.int64, count=len(self._ids))
        array[keys - self._offset] = list(self._ids.values())
        self._array = array

    def update(self, keys: npt.NDArray[np.int64], ids: Sequence[str]) -> None:
        """Add or replace the ids of ``keys``."""
        self._ids.update(zip(keys.tolist(), ids, strict=True))
        array = self._array
        if array is None or not keys.size:
            if array is None and keys.size and self._fetch is None:
                self._mirror()
            return
        rows = keys - self._offset
        if rows.min() < 0 or rows.max() >= array.shape[0]:
            self._mirror()
        else:
            array[rows] = ids if isinstance(ids, list) else list(ids)

    def discard(self, keys: npt.NDArray[np.int64]) -> None:
        """Forget ``keys`` (those not held are ignored).

        The array keeps their ids (until it is next rebuilt): a key is never reused,
        and a query searching a snapshot taken before the delete may still look it up.
        """
        for key in keys.tolist():
            self._ids.pop(key, None)

    def lookup(self, keys: npt.NDArray[np.int64]) -> list[list[str]]:
        """The ids of a (nq, k) matrix of held keys, as nested lists.

        Raises:
            KeyError, IndexError: a key is not held (a query on a snapshot may meet a
                key deleted since, once the array has been rebuilt without it).
        """
        array = self._array
        if array is not None:
            found: list[list[str]] = (
                array[keys] if self._offset == 0 else array[keys - self._offset]
            ).tolist()
            return found
        ids, fetch = self._ids, self._fetch
        rows = keys.tolist()
        if fetch is not None:  # still partial: ask the store for the keys not held
            absent = [key for row in rows for key in row if key not in ids]
            if absent:
                ids.update(fetch(absent))
        return [[ids[key] for key in row] for row in rows]


# The id array is kept while the keys span at most this many slots per id.
_MAX_KEY_SPAN_PER_ID = 4


@dataclass
class CollectionState:
    """What one Database knows of a collection: its space and, once loaded, its index.

    ``ids`` maps the row keys the index holds to user ids, so a query that returns
    only ids and distances needs no trip to SQLite.
    """

    row: CollectionRow
    space: LatentSpace
    spec: IndexSpec
    recall_target: float
    index: SegmentedIndex | None = None
    ids: IdsByKey = field(default_factory=IdsByKey)
    # The write sequence number the index reflects.
    applied: int = 0
    stale: bool = False
    # Metadata as columns and recent filters, built on the first filtered query.
    filters: FilterCache = field(default_factory=FilterCache)
    # The thread reading every id in the background (IdsByKey), while it may run.
    ids_reader: threading.Thread | None = None
    # Documents and metadata of rows queries returned lately (the database's cache,
    # shared by its collections).
    rows: RowCache = field(default_factory=RowCache)

    def drop_index(self) -> None:
        """Forget the loaded index; the next use loads it again from the store."""
        if self.index is not None:
            self.index.close(wait=False)
        self.index, self.ids = None, IdsByKey()

    def apply(self, changes: Changes) -> None:
        """Mirror committed writes into the loaded index (a no-op until it is loaded)."""
        self.rows.drop(np.concatenate((changes.keys, changes.deleted)).tolist())
        index = self.index
        if index is None:
            return
        try:
            _mirror(changes, index, self.ids)
        except BaseException:
            self.drop_index()  # half-applied: rebuilt from the store on next use
            raise
        self.applied = max(self.applied, changes.sequence)

    def install(self, index: SegmentedIndex, ids: IdsByKey, changes: Changes) -> None:
        """Make ``index`` (and ``ids``) the collection's once ``changes`` (the rows no
        segment of it holds) are in them: a query that takes no lock finds either the
        index before or this one whole, never one still missing rows (the sharded
        alias test caught a query answered from an index whose growing rows were still
        being read). On failure ``index`` is closed and the collection's index dropped:
        the next use loads it again from the store."""
        self.rows.drop(np.concatenate((changes.keys, changes.deleted)).tolist())
        try:
            _mirror(changes, index, ids)
        except BaseException:
            index.close(wait=False)
            self.drop_index()
            raise
        self.index, self.ids = index, ids
        self.applied = max(self.applied, changes.sequence)


def _mirror(changes: Changes, index: SegmentedIndex, ids: IdsByKey) -> None:
    """Apply committed writes to ``index`` and ``ids``: ids first, since index.apply()
    publishes the snapshot that lock-free queries read them for."""
    ids.update(changes.keys, changes.ids)
    index.apply(
        changes.keys,
        changes.vectors,
        changes.sequences,
        changes.deleted,
        changes.sequence,
        adopt=changes.fresh,
    )
    ids.discard(changes.deleted)
