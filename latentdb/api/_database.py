"""Database: a folder holding collections, the one entry point of the embedded engine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

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
from latentdb.index import FlatIndex
from latentdb.space import METRICS, LatentSpace, Metric
from latentdb.store import Changes, CollectionRow, Store

if TYPE_CHECKING:
    from latentdb.api._collection import Collection

__all__ = ["EXTERNAL_MODEL", "Database", "connect"]

# The model name of a collection whose vectors come from outside, when none is given.
EXTERNAL_MODEL = "external"


@dataclass
class CollectionState:
    """What one Database knows of a collection: its space and, once loaded, its index.

    ``ids`` maps the row keys the index holds to user ids, so a query that returns
    only ids and distances needs no trip to SQLite.
    """

    row: CollectionRow
    space: LatentSpace
    index: FlatIndex | None = None
    ids: dict[int, str] = field(default_factory=dict)
    # The write sequence number the index reflects.
    applied: int = 0
    stale: bool = False

    def apply(self, changes: Changes) -> None:
        """Mirror committed writes into the loaded index (a no-op until it is loaded)."""
        index = self.index
        if index is None:
            return
        try:
            index.upsert(changes.keys, changes.vectors)
            index.remove(changes.deleted)
        except BaseException:
            self.index = None  # half-applied: rebuilt from the store on next use
            self.ids = {}
            raise
        self.ids.update(zip(changes.keys.tolist(), changes.ids, strict=True))
        for key in changes.deleted.tolist():
            self.ids.pop(key, None)
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
            self._store.close()
            self._store = None
            self._states.clear()

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
        store = self.store
        with store.write():
            row = store.insert_collection(
                name, space=space.to_dict(), embedder=embedder_name, config={}
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
    ) -> Collection:
        """The collection called ``name``, created with these arguments if missing.

        Raises:
            CollectionExistsError: it exists in another latent space than the one asked.
            and whatever :meth:`create_collection` raises.
        """
        row = self.store.collection_by_name(name)
        if row is None:
            try:
                return self.create_collection(
                    name, dimension=dimension, metric=metric, embedder=embedder, model=model
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
        self._states.pop(row.id, None)

    def _collection(self, row: CollectionRow) -> Collection:
        from latentdb.api._collection import Collection

        state = self._states.get(row.id)
        if state is None:
            state = CollectionState(row=row, space=LatentSpace.from_dict(row.space))
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
        if store.collection_by_id(state.row.id) is None:
            self._states.pop(state.row.id, None)
            raise CollectionNotFoundError(f"collection {state.row.name!r} was deleted")
        if state.index is not None:
            state.apply(
                store.changes_since(state.row.id, state.applied, dimension=state.space.dimension)
            )
        state.stale = False

    def index(self, state: CollectionState) -> FlatIndex:
        """The collection's index, loaded from the store on first use (under the lock)."""
        self.sync(state)
        if state.index is None:
            changes = self.store.changes_since(state.row.id, 0, dimension=state.space.dimension)
            state.index, state.ids = FlatIndex(state.space.dimension, state.space.metric), {}
            state.apply(changes)
        assert state.index is not None  # apply() only drops it when it raises
        return state.index


def connect(path: str | os.PathLike[str]) -> Database:
    """Open (or create) the database in folder ``path``.

    Args:
        path: A folder; created with its parents if missing.

    Returns:
        A :class:`Database`, usable as a context manager.
    """
    return Database(path)
