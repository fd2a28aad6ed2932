"""Database: a folder holding collections, the one entry point of the embedded engine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from latentdb.api._validation import check_collection_name, check_non_negative
from latentdb.embed import get_embedder
from latentdb.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    DatabaseClosedError,
    DimensionMismatchError,
    InvalidArgumentError,
    ModelMismatchError,
)
from latentdb.index import IndexSpec, SegmentedIndex
from latentdb.space import METRICS, LatentSpace, Metric
from latentdb.store import Changes, CollectionRow, Store

if TYPE_CHECKING:
    from latentdb.api._collection import Collection

__all__ = ["EXTERNAL_MODEL", "Database", "connect"]

# The model name of a collection whose vectors come from outside, when none is given.
EXTERNAL_MODEL = "external"
# Recall@10 that approximate search is tuned to reach unless a collection says otherwise.
DEFAULT_RECALL_TARGET = 0.95
INDEX_FOLDER = "indexes"


def check_recall_target(value: object) -> float:
    """A recall target: a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise InvalidArgumentError(f"recall_target must be a number in (0, 1]; got {value!r}")
    return float(value)


class IdsByKey:
    """User ids by row key, for answering queries without SQLite.

    A dict, mirrored into a numpy object array indexed by key while the keys are dense
    enough (keys are database-wide, so several collections' keys interleave): one fancy
    index then maps a query's keys, a third of the time of dict lookups after a graph
    search has left the dict's entries out of the CPU caches.
    """

    def __init__(self, pairs: Mapping[int, str] | None = None) -> None:
        self._ids: dict[int, str] = dict(pairs or {})
        self._array: npt.NDArray[np.object_] | None = None
        self._offset = 0
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
            if array is None and keys.size:
                self._mirror()
            return
        rows = keys - self._offset
        if rows.min() < 0 or rows.max() >= array.shape[0]:
            self._mirror()
        else:
            array[rows] = ids if isinstance(ids, list) else list(ids)

    def discard(self, keys: npt.NDArray[np.int64]) -> None:
        """Forget ``keys`` (those not held are ignored)."""
        for key in keys.tolist():
            self._ids.pop(key, None)
        array = self._array
        if array is not None and keys.size:
            rows = keys - self._offset
            rows = rows[(rows >= 0) & (rows < array.shape[0])]
            array[rows] = None

    def lookup(self, keys: npt.NDArray[np.int64]) -> list[list[str]]:
        """The ids of a (nq, k) matrix of held keys, as nested lists."""
        array = self._array
        if array is not None:
            found: list[list[str]] = (
                array[keys] if self._offset == 0 else array[keys - self._offset]
            ).tolist()
            return found
        ids = self._ids
        return [[ids[key] for key in row] for row in keys.tolist()]


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

    def drop_index(self) -> None:
        """Forget the loaded index; the next use loads it again from the store."""
        if self.index is not None:
            self.index.close(wait=False)
        self.index, self.ids = None, IdsByKey()

    def apply(self, changes: Changes) -> None:
        """Mirror committed writes into the loaded index (a no-op until it is loaded)."""
        index = self.index
        if index is None:
            return
        try:
            index.apply(
                changes.keys,
                changes.vectors,
                changes.sequences,
                changes.deleted,
                changes.sequence,
                adopt=changes.fresh,
            )
        except BaseException:
            self.drop_index()  # half-applied: rebuilt from the store on next use
            raise
        self.ids.update(changes.keys, changes.ids)
        self.ids.discard(changes.deleted)
        self.applied = changes.sequence


class Database:
    """A latentdb database: a folder with a SQLite store and the indexes derived from it.

    Open one with :func:`latentdb.connect`. Several processes may open the same folder:
    writes are serialized by SQLite, and each reader catches up with the others'
    committed writes before it answers.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InvalidArgumentError(
                f"cannot create database folder {self.path}: {error}"
            ) from None
        self._store: Store | None = Store(self.path)
        self._states: dict[int, CollectionState] = {}
        self._data_version = self._store.data_version()

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the database; collections obtained from it stop working."""
        if self._store is not None:
            for collection_id in list(self._states):
                self._drop_state(collection_id, wait=True)
            self._store.close()
            self._store = None

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    @property
    def store(self) -> Store:
        """The open store (internal)."""
        if self._store is None:
            raise DatabaseClosedError(f"database {self.path} is closed")
        return self._store

    # -- collections ---------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        *,
        dimension: int | None = None,
        metric: Metric = "cosine",
        embedder: str | None = "minilm",
        model: str | None = None,
        index: str | IndexSpec = "auto",
        recall_target: float = DEFAULT_RECALL_TARGET,
    ) -> Collection:
        """Create a collection bound to one latent space.

        Args:
            name: 1-128 letters, digits, ``.``, ``_``, ``-``.
            dimension: Required when ``embedder`` is None; else taken from the embedder.
            metric: ``"cosine"`` (vectors stored unit length), ``"l2"`` or ``"ip"``.
            embedder: Registered embedder name (default ``"minilm"``), or None (or
                ``"external"``) when you bring your own vectors.
            model: With ``embedder=None``, names where the vectors come from (e.g.
                ``"openai/text-embedding-3-small"``); with an embedder, must match it.
            index: ``"auto"`` (exact while under 20,000 rows, then HNSW), ``"flat"``,
                ``"hnsw"``, ``"hnsw-sq8"``, ``"ivf"``, ``"ivf-pq"``, or an
                :class:`~latentdb.index.IndexSpec` with explicit build parameters.
            recall_target: The recall@10 that search parameters are tuned to reach.

        Returns:
            The new :class:`Collection`.

        Raises:
            CollectionExistsError: the name is taken.
            InvalidArgumentError: bad name, metric or dimension.
            DimensionMismatchError, ModelMismatchError: they contradict the embedder.
            EmbedderError: unknown embedder.
        """
        check_collection_name(name)
        space, embedder_name = self._space_for(dimension, metric, embedder, model)
        config = {
            "index": IndexSpec.parse(index).to_dict(),
            "recall_target": check_recall_target(recall_target),
        }
        store = self.store
        with store.write():
            row = store.insert_collection(
                name, space=space.to_dict(), embedder=embedder_name, config=config
            )
        return self._collection(row)

    def _space_for(
        self,
        dimension: int | None,
        metric: str,
        embedder: str | None,
        model: str | None,
    ) -> tuple[LatentSpace, str | None]:
        if metric not in METRICS:
            raise InvalidArgumentError(
                f"metric must be one of {', '.join(METRICS)}; got {metric!r}"
            )
        if dimension is not None:
            check_non_negative(dimension, "dimension", minimum=1)
        if embedder is None or embedder == "external":
            if dimension is None:
                raise InvalidArgumentError(
                    "a collection without an embedder needs dimension= (the width of the "
                    "vectors you will add)"
                )
            space = LatentSpace(
                model=model or EXTERNAL_MODEL,
                fingerprint=None,
                dimension=dimension,
                metric=metric,
                normalized=metric == "cosine",
            )
            return space, None
        encoder = get_embedder(embedder)
        if dimension is not None and dimension != encoder.dimension:
            raise DimensionMismatchError(
                f"embedder {embedder!r} makes vectors of dimension {encoder.dimension}; "
                f"got dimension={dimension}"
            )
        if model is not None and model != encoder.model:
            raise ModelMismatchError(
                f"embedder {embedder!r} is model {encoder.model!r}; got model={model!r}"
            )
        space = LatentSpace(
            model=encoder.model,
            fingerprint=encoder.fingerprint,
            dimension=encoder.dimension,
            metric=metric,
            normalized=metric == "cosine",
        )
        return space, embedder

    def get_collection(self, name: str) -> Collection:
        """The collection called ``name``.

        Raises:
            CollectionNotFoundError: there is none.
        """
        row = self.store.collection_by_name(name)
        if row is None:
            raise CollectionNotFoundError(f"no collection named {name!r} in {self.path}")
        return self._collection(row)

    def get_or_create_collection(
        self,
        name: str,
        *,
        dimension: int | None = None,
        metric: Metric = "cosine",
        embedder: str | None = "minilm",
        model: str | None = None,
        index: str | IndexSpec = "auto",
        recall_target: float = DEFAULT_RECALL_TARGET,
    ) -> Collection:
        """The collection called ``name``, created with these arguments if missing.

        An existing collection must be in the latent space asked for; its index
        settings stay as they are.

        Raises:
            CollectionExistsError: it exists in another latent space than the one asked.
            and whatever :meth:`create_collection` raises.
        """
        row = self.store.collection_by_name(name)
        if row is None:
            try:
                return self.create_collection(
                    name,
                    dimension=dimension,
                    metric=metric,
                    embedder=embedder,
                    model=model,
                    index=index,
                    recall_target=recall_target,
                )
            except CollectionExistsError:  # another process created it meanwhile
                row = self.store.collection_by_name(name)
                if row is None:
                    raise
        existing = self._collection(row)
        wanted, wanted_embedder = self._space_for(dimension, metric, embedder, model)
        have = existing.space
        differences = [
            f"{label} {theirs!r} (asked {mine!r})"
            for label, theirs, mine in (
                ("embedder", row.embedder, wanted_embedder),
                ("model", have.model, wanted.model),
                ("dimension", have.dimension, wanted.dimension),
                ("metric", have.metric, wanted.metric),
            )
            if theirs != mine
        ]
        if differences:
            raise CollectionExistsError(
                f"collection {name!r} exists with a different latent space: "
                + ", ".join(differences)
            )
        return existing

    def list_collections(self) -> list[str]:
        """Names of every collection, sorted."""
        return [row.name for row in self.store.list_collections()]

    def delete_collection(self, name: str) -> None:
        """Delete a collection and all its records.

        Raises:
            CollectionNotFoundError: there is none.
        """
        store = self.store
        with store.write():
            row = store.collection_by_name(name)
            if row is None:
                raise CollectionNotFoundError(f"no collection named {name!r} in {self.path}")
            store.drop_collection(row.id)
        self._drop_state(row.id)
        shutil.rmtree(self.path / INDEX_FOLDER / str(row.id), ignore_errors=True)

    def _collection(self, row: CollectionRow) -> Collection:
        from latentdb.api._collection import Collection

        state = self._states.get(row.id)
        if state is None:
            state = CollectionState(
                row=row,
                space=LatentSpace.from_dict(row.space),
                spec=IndexSpec.parse(row.config.get("index", "flat")),
                recall_target=float(row.config.get("recall_target", DEFAULT_RECALL_TARGET)),
            )
            self._states[row.id] = state
        return Collection(self, state)

    # -- keeping in step with the store (internal) ---------------------------------

    def sync(self, state: CollectionState) -> None:
        """Bring ``state`` up to date with every committed write (call under the lock).

        Raises:
            CollectionNotFoundError: the collection was deleted (here or elsewhere).
        """
        store = self.store
        version = store.data_version()
        if version != self._data_version:  # another connection committed something
            self._data_version = version
            for other in self._states.values():
                other.stale = True
        if self._states.get(state.row.id) is not state:
            raise CollectionNotFoundError(f"collection {state.row.name!r} was deleted")
        if not state.stale:
            return
        row = store.collection_by_id(state.row.id)
        if row is None:
            self._drop_state(state.row.id)
            raise CollectionNotFoundError(f"collection {state.row.name!r} was deleted")
        if row.config != state.row.config:  # e.g. another process set a recall target
            state.row = row
            state.recall_target = float(row.config.get("recall_target", DEFAULT_RECALL_TARGET))
            if state.index is not None:
                state.index.recall_target = state.recall_target
        if state.index is not None:
            state.apply(
                store.changes_since(state.row.id, state.applied, dimension=state.space.dimension)
            )
        state.stale = False

    def index(self, state: CollectionState) -> SegmentedIndex:
        """The collection's index: loaded from its files and caught up with the store on
        first use (call under the store lock)."""
        self.sync(state)
        if state.index is None:
            index = self._new_index(state)
            self._install(state, index, *index.load())
        assert state.index is not None  # apply() only drops it when it raises
        return state.index

    def build_index(self, state: CollectionState) -> bool:
        """optimize() for a collection whose index is not loaded and has nothing saved
        (a bulk load): build it from rows streamed out of the store, never holding them
        all in memory beside the index (call under the store lock). False, with the
        index loaded as :meth:`index` does, when that does not apply."""
        self.sync(state)
        if state.index is not None:
            return False
        index = self._new_index(state)
        covered, outside = index.load()
        built = False
        if not index.sealed:
            dimension = state.space.dimension
            with self.store.all_rows(state.row.id, dimension=dimension) as (count, now, parts):
                built = index.build_from_parts(count, parts, now)
            if built:
                covered, outside = now, np.empty(0, dtype=np.int64)
        self._install(state, index, covered, outside)
        return built

    def _new_index(self, state: CollectionState) -> SegmentedIndex:
        return SegmentedIndex(
            dimension=state.space.dimension,
            metric=state.space.metric,
            spec=state.spec,
            folder=self.path / INDEX_FOLDER / str(state.row.id),
            lock=self.store.lock,
            recall_target=state.recall_target,
        )

    def _install(
        self,
        state: CollectionState,
        index: SegmentedIndex,
        covered: int,
        outside: npt.NDArray[np.int64],
    ) -> None:
        """Make ``index`` the collection's, caught up with the store: the rows kept out
        of its saved segments (``outside``), then every write after ``covered``."""
        store, dimension = self.store, state.space.dimension
        state.index, state.ids = index, IdsByKey(store.ids_by_key(state.row.id))
        state.apply(store.rows_by_key(outside.tolist(), dimension=dimension))
        state.apply(store.changes_since(state.row.id, covered, dimension=dimension))

    def _drop_state(self, collection_id: int, *, wait: bool = False) -> None:
        state = self._states.pop(collection_id, None)
        if state is not None and state.index is not None:
            state.index.close(wait=wait)


def connect(path: str | os.PathLike[str]) -> Database:
    """Open (or create) the database in folder ``path``.

    Args:
        path: A folder; created with its parents if missing.

    Returns:
        A :class:`Database`, usable as a context manager.
    """
    return Database(path)
