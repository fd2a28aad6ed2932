"""Database: a folder holding collections, the one entry point of the embedded engine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from latentdb.api._validation import (
    MAX_DIMENSION,
    check_callable,
    check_collection_name,
    check_flag,
    check_name,
    check_non_negative,
    check_text,
)
from latentdb.embed import get_embedder
from latentdb.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    DatabaseClosedError,
    DimensionMismatchError,
    InvalidArgumentError,
    ModelMismatchError,
)
from latentdb.index import BuildLock, IndexSpec, SegmentedIndex
from latentdb.query._planner import FilterCache
from latentdb.space import METRICS, LatentSpace, Metric
from latentdb.store import Changes, CollectionRow, Store

if TYPE_CHECKING:
    from latentdb.api._collection import Collection
    from latentdb.api._migration import Migration, MigrationProgress

__all__ = ["EXTERNAL_MODEL", "Database", "connect"]

# The model name of a collection whose vectors come from outside, when none is given.
EXTERNAL_MODEL = "external"
# The embedder name of a collection whose vectors users bring (stored as None).
EXTERNAL = "external"
# Recall@10 that approximate search is tuned to reach unless a collection says otherwise.
DEFAULT_RECALL_TARGET = 0.95
INDEX_FOLDER = "indexes"


def check_recall_target(value: object) -> float:
    """A recall target: a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise InvalidArgumentError(f"recall_target must be a number in (0, 1]; got {value!r}")
    return float(value)


def check_require_model(value: object, embedder: str | None, model: str | None) -> bool:
    """``create_collection``'s ``require_model=``: a bool, and when True for a
    collection without an embedder, a ``model=`` naming its vectors' model (writes
    must then name it; "external", the name of no model, would check nothing).

    Raises:
        InvalidArgumentError: not a bool, or no model named.
    """
    required = check_flag(value, "require_model")
    if required and embedder is None and model is None:
        raise InvalidArgumentError(
            "a collection without an embedder needs model= naming the model its vectors "
            "come from (e.g. model='openai/text-embedding-3-small'): every write of "
            "vectors must then say model= the same, so that vectors of another model "
            "cannot slip in. To accept vectors without a model name, create it with "
            "require_model=False"
        )
    return required


def collection_requires_model(config: Mapping[str, object]) -> bool:
    """Whether a collection's stored config requires ``model=`` with vectors: collections
    created before the setting existed have none and keep accepting vectors without."""
    return config.get("require_model") is True


def reduced_space(space: LatentSpace, spec: IndexSpec, reduce: int | None) -> LatentSpace:
    """``space`` with ``create_collection``'s ``reduce=`` recorded (checked: an ANN index,
    and 1 <= reduce < dimension); unchanged when ``reduce`` is None."""
    if reduce is None:
        return space
    if spec.kind == "flat":
        raise InvalidArgumentError(
            "reduce= needs an ANN index (auto, hnsw, hnsw-sq8, ivf or ivf-pq): a "
            "flat index scans the full vectors"
        )
    return replace(space, reduce=reduce)  # LatentSpace checks the value


def check_same_space(
    name: str,
    existing: tuple[LatentSpace, str | None],
    wanted: tuple[LatentSpace, str | None],
    reduce: int | None,
) -> None:
    """``get_or_create_collection``'s check that an existing collection's (space,
    embedder) is the one asked for (and its reduction, when ``reduce`` is given).

    Raises:
        CollectionExistsError: naming each difference.
    """
    (have, have_embedder), (want, want_embedder) = existing, wanted
    differences = [
        f"{label} {theirs!r} (asked {mine!r})"
        for label, theirs, mine in (
            ("embedder", have_embedder, want_embedder),
            ("model", have.model, want.model),
            ("dimension", have.dimension, want.dimension),
            ("metric", have.metric, want.metric),
            ("reduce", have.reduce, have.reduce if reduce is None else reduce),
        )
        if theirs != mine
    ]
    if differences:
        raise CollectionExistsError(
            f"collection {name!r} exists with a different latent space: " + ", ".join(differences)
        )


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
    # Metadata as columns and recent filters, built on the first filtered query.
    filters: FilterCache = field(default_factory=FilterCache)

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
        self.applied = max(self.applied, changes.sequence)


class Database:
    """A latentdb database: a folder with a SQLite store and the indexes derived from it.

    Open one with :func:`latentdb.connect`. Several processes may open the same folder:
    writes are serialized by SQLite, and each reader catches up with the others'
    committed writes before it answers.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, str | os.PathLike):
            raise InvalidArgumentError(
                f"path must be a folder (str or path); got {type(path).__name__}"
            )
        check_text(os.fspath(path), "path")
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
        # Aliases as last read, and the data_version they were read at.
        self._aliases: dict[str, int] | None = None
        self._aliases_version = -1
        self._migrations: dict[int, Migration] = {}  # running here, by migration id
        self._build_locks: dict[int, BuildLock] = {}  # by collection id

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the database; collections obtained from it stop working."""
        if self._store is not None:
            try:
                for migration in list(self._migrations.values()):
                    migration.stop()  # after its batch: it resumes on the next migrate()
                for collection_id in list(self._states):
                    self._drop_state(collection_id, wait=True)
            finally:  # the store closes whatever a migration or a build did
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
        reduce: int | None = None,
        require_model: bool = True,
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
            reduce: Index a PCA projection of the vectors to this many dimensions
                (learned from the rows when the first ANN segment is built; queries are
                projected the same way). The original vectors are kept: candidates are
                re-scored with them, so distances stay exact and the re-rank depth is
                tuned with the other knobs to reach ``recall_target``. Saves index
                memory and time per distance; :meth:`Collection.evaluate` shows what
                it costs in recall. Needs an ANN index (not ``"flat"``).
            require_model: Every write of vectors (``vectors=`` in ``add``,
                ``upsert`` and ``update``) must name their model with ``model=``, the
                collection's, so that vectors of another model can never slip in;
                a collection without an embedder then needs ``model=`` here. Texts
                and images the collection embeds itself need no ``model=``. False
                accepts vectors without a model name (a ``model=`` given is still
                checked). Fixed for the collection's life (see
                :attr:`Collection.require_model`).

        Returns:
            The new :class:`Collection`.

        Raises:
            CollectionExistsError: the name is taken.
            InvalidArgumentError: bad name, metric, dimension or ``reduce``; no
                ``model=`` for a collection without an embedder that requires it.
            DimensionMismatchError, ModelMismatchError: they contradict the embedder.
            EmbedderError: unknown embedder.
        """
        check_collection_name(name)
        space, embedder_name = self._space_for(dimension, metric, embedder, model)
        spec = IndexSpec.parse(index)
        space = reduced_space(space, spec, reduce)
        config = {
            "index": spec.to_dict(),
            "recall_target": check_recall_target(recall_target),
            "require_model": check_require_model(require_model, embedder_name, model),
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
        if not isinstance(metric, str) or metric not in METRICS:
            raise InvalidArgumentError(
                f"metric must be one of {', '.join(METRICS)}; got {metric!r}"
            )
        if dimension is not None:
            check_non_negative(dimension, "dimension", minimum=1, maximum=MAX_DIMENSION)
        check_text(embedder, "embedder", optional=True)
        check_text(model, "model", optional=True)
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
        """The collection called ``name``, or the one the alias ``name`` points at.

        A collection got through an alias follows it: after :meth:`switch_alias` (here
        or in another process) its next call goes to the new collection.

        Raises:
            CollectionNotFoundError: no collection or alias has that name.
            InvalidArgumentError: ``name`` is not a string.
        """
        check_name(name)
        with self.store.lock:
            target = self._alias_targets().get(name)
            if target is not None:
                return self._collection(self._row_by_id(target, name), alias=name)
            row = self.store.collection_by_name(name)
        if row is None:
            raise CollectionNotFoundError(f"no collection or alias named {name!r} in {self.path}")
        return self._collection(row)

    # -- aliases -------------------------------------------------------------------

    def create_alias(self, alias: str, collection: str) -> None:
        """Make ``alias`` a second name of ``collection``, usable wherever a collection
        name is.

        Raises:
            CollectionExistsError: a collection or alias is already called ``alias``.
            CollectionNotFoundError: no collection called ``collection`` (an alias of
                an alias is refused too).
            InvalidArgumentError: a bad name.
        """
        check_collection_name(alias)
        check_name(collection, "collection")
        store = self.store
        with store.write():
            row = self._alias_target_row(collection)
            store.check_name_free(alias)
            store.set_alias(alias, row.id)
            self._aliases = None

    def switch_alias(self, alias: str, collection: str) -> None:
        """Point an existing alias at another collection, atomically: every call after
        this one (in any process) reads the new collection, none sees a mix.

        Raises:
            CollectionNotFoundError: no such alias, or no collection ``collection``.
            InvalidArgumentError: a name is not a string.
        """
        check_name(alias, "alias")
        check_name(collection, "collection")
        store = self.store
        with store.write():
            if alias not in store.aliases():
                raise CollectionNotFoundError(f"no alias named {alias!r} in {self.path}")
            row = self._alias_target_row(collection)
            store.set_alias(alias, row.id)
            self._aliases = None

    def delete_alias(self, alias: str) -> None:
        """Remove an alias; its collection stays.

        Raises:
            CollectionNotFoundError: no such alias.
            InvalidArgumentError: ``alias`` is not a string.
        """
        check_name(alias, "alias")
        store = self.store
        with store.write():
            if not store.delete_alias(alias):
                raise CollectionNotFoundError(f"no alias named {alias!r} in {self.path}")
            self._aliases = None

    def list_aliases(self) -> dict[str, str]:
        """Every alias and the name of the collection it points at, by alias."""
        store = self.store
        with store.read():
            names = {row.id: row.name for row in store.list_collections()}
            return {alias: names[target] for alias, target in sorted(store.aliases().items())}

    # -- migrations ----------------------------------------------------------------

    def migrate(
        self,
        name: str,
        *,
        embedder: str | None = None,
        reduce: int | None = None,
        new_name: str | None = None,
        background: bool = True,
        progress: MigrationProgress | None = None,
    ) -> Migration:
        """Re-embed every document of a collection with another embedder (or re-index
        its vectors as they are, with another ``reduce``) into a new collection, and
        switch ``name`` to it when the copy is complete and indexed.

        ``name`` is an alias or a collection. A collection ``docs`` is renamed
        ``docs-v1`` at the switch and ``docs`` becomes an alias of the new one (default
        name ``docs-v2``): code that reads ``docs`` needs no change. Until the switch,
        ``name`` reads the old version, and writes to it are carried over. Calling this
        again for a migration that was interrupted (even by a crash) resumes it.

        Args:
            name: The alias or collection to migrate.
            embedder: The new embedder (e.g. ``"sentence-transformers:/models/e5"``).
                None (or the collection's own): the vectors are copied, not re-embedded,
                so records without documents are fine; ``reduce`` must then change.
            reduce: The new collection's ``reduce=`` (see :meth:`create_collection`);
                None indexes it at full width.
            new_name: The new collection's name (default: the next ``-vN``).
            background: Run in a thread and return at once (``Migration.wait()``);
                False runs it here and returns when done.
            progress: ``progress(copied, total)`` after each batch.

        Returns:
            The :class:`Migration`.

        Raises:
            CollectionNotFoundError: no collection or alias ``name``.
            InvalidArgumentError: records without a document (they cannot be
                re-embedded; the count is given), nothing that would change (the same
                embedder and ``reduce``), a bad ``reduce``, the collection's embedder
                has drifted from its vectors (copying them would mix spaces), or another
                migration of ``name`` to a different target is running.
            EmbedderError, CollectionExistsError: bad embedder or ``new_name``.
        """
        from latentdb.api._migration import Migration, version_names

        check_name(name)
        check_text(embedder, "embedder", optional=True)
        if reduce is not None:
            check_non_negative(reduce, "reduce", minimum=1, maximum=MAX_DIMENSION)
        if new_name is not None:
            check_collection_name(new_name)
        background = check_flag(background, "background")
        check_callable(progress, "progress")
        store = self.store
        with store.write():
            source = self._resolve(name)
            wanted = (source.embedder or EXTERNAL) if embedder is None else embedder
            for row in store.migrations(state="running"):
                if row.alias != name:
                    continue
                target = store.collection_by_id(row.target_id)
                target_reduce = None if target is None else target.space.get("reduce")
                if row.embedder != wanted or target_reduce != reduce:
                    raise InvalidArgumentError(
                        f"a migration of {name!r} to embedder {row.embedder!r} (reduce "
                        f"{target_reduce}) is running: finish it, or delete its target "
                        "collection to cancel it"
                    )
                migration = self._migrations.setdefault(row.id, Migration(self, row))
                break
            else:
                migration = self._new_migration(
                    source, name, wanted, reduce, new_name, version_names
                )
        if background:
            return migration.start(progress)
        migration.run(progress)
        return migration

    def _new_migration(
        self,
        source: CollectionRow,
        name: str,
        embedder: str,
        reduce: int | None,
        new_name: str | None,
        version_names: Callable[[str, Callable[[str], bool]], tuple[str, str]],
    ) -> Migration:
        from latentdb.api._migration import Migration

        store = self.store
        space = LatentSpace.from_dict(source.space)
        copies = embedder == (source.embedder or EXTERNAL)  # the same space: copy vectors
        if copies:
            if reduce == space.reduce:
                width = "at full width" if reduce is None else f"reduced to {reduce}"
                raise InvalidArgumentError(
                    f"collection {source.name!r} is already embedded with {embedder!r} and "
                    f"indexed {width}: pass another embedder= or reduce= to migrate it"
                )
            if source.embedder is not None:
                current = get_embedder(source.embedder).fingerprint
                if current != space.fingerprint:
                    raise InvalidArgumentError(
                        f"embedder {source.embedder!r} has drifted from the vectors of "
                        f"{source.name!r} (fingerprint {current} now, {space.fingerprint} "
                        f"stored): copying them into its space would mix two; migrate with "
                        f"embedder={source.embedder!r} given again after re-registering the "
                        "old model, or to another embedder to re-embed"
                    )
        else:
            get_embedder(embedder)  # an unknown name fails before anything else is said
            missing = store.count_without_document(source.id)
            if missing:
                raise InvalidArgumentError(
                    f"{missing} of the {store.count(source.id)} records of {source.name!r} have "
                    "no document, so they cannot be re-embedded: give them documents or "
                    "delete them"
                )

        def taken(candidate: str) -> bool:
            try:
                store.check_name_free(candidate)
            except CollectionExistsError:
                return True
            return False

        retired, default_new = version_names(source.name, taken)
        is_alias = name in store.aliases()
        state = self._collection(source)._bound
        external = copies and source.embedder is None
        target = self.create_collection(
            new_name or default_new,
            dimension=space.dimension if external else None,
            metric=space.metric,
            embedder=None if external else embedder,
            model=space.model if external else None,
            index=state.spec,
            recall_target=state.recall_target,
            reduce=reduce,
            require_model=collection_requires_model(source.config),
        )
        migration_id = store.insert_migration(
            alias=name,
            source_id=source.id,
            target_id=target._bound.row.id,
            embedder=embedder,
            retire_as=None if is_alias else retired,
        )
        row = next(m for m in store.migrations() if m.id == migration_id)
        migration = self._migrations[migration_id] = Migration(self, row)
        return migration

    def list_migrations(self) -> list[Migration]:
        """Every migration of this database, running or done, oldest first."""
        from latentdb.api._migration import Migration

        return [
            self._migrations.get(row.id) or Migration(self, row) for row in self.store.migrations()
        ]

    def _collection_by_id(self, collection_id: int) -> Collection:
        with self.store.lock:
            row = self.store.collection_by_id(collection_id)
            if row is None:
                raise CollectionNotFoundError(f"collection {collection_id} was deleted")
            return self._collection(row)

    def _forget_index(self, collection_id: int) -> None:
        """Drop a loaded index whose mirrored writes were rolled back."""
        with self.store.lock:
            state = self._states.get(collection_id)
            if state is not None:
                state.drop_index()
                state.stale = True

    def _renamed(self, collection_id: int) -> None:
        """Take a collection's new name (given by this connection) into its state."""
        with self.store.lock:
            state = self._states.get(collection_id)
            row = self.store.collection_by_id(collection_id)
            if state is not None and row is not None:
                state.row = replace(state.row, name=row.name)

    def _alias_target_row(self, collection: str) -> CollectionRow:
        row = self.store.collection_by_name(collection)
        if row is None:
            kind = "an alias" if collection in self.store.aliases() else "no collection"
            raise CollectionNotFoundError(
                f"{collection!r} is {kind}: an alias must name a collection"
                if kind == "an alias"
                else f"no collection named {collection!r} in {self.path}"
            )
        return row

    def _alias_targets(self) -> dict[str, int]:
        """Aliases → collection ids, read again once another connection has committed
        (call under the store lock)."""
        version = self.store.data_version()
        if self._aliases is None or version != self._aliases_version:
            self._aliases = self.store.aliases()
            self._aliases_version = version
        return self._aliases

    def _row_by_id(self, collection_id: int, name: str) -> CollectionRow:
        row = self.store.collection_by_id(collection_id)
        if row is None:  # pragma: no cover - a foreign key keeps aliased collections
            raise CollectionNotFoundError(f"alias {name!r} points at a deleted collection")
        return row

    def follow_alias(self, alias: str, current: CollectionState) -> CollectionState:
        """The state of the collection ``alias`` points at now (``current`` if the
        same).

        Raises:
            CollectionNotFoundError: the alias was deleted.
        """
        with self.store.lock:
            target = self._alias_targets().get(alias)
            if target is None:
                raise CollectionNotFoundError(f"alias {alias!r} was deleted")
            if target == current.row.id and self._states.get(target) is current:
                return current
            state = self._states.get(target)
            if state is None:
                state = self._collection(self._row_by_id(target, alias))._bound
            return state

    def _resolve(self, name: str) -> CollectionRow:
        """The collection called ``name``, through an alias or not.

        Raises:
            CollectionNotFoundError: neither a collection nor an alias.
        """
        with self.store.lock:
            target = self._alias_targets().get(name)
            if target is not None:
                return self._row_by_id(target, name)
            row = self.store.collection_by_name(name)
        if row is None:
            raise CollectionNotFoundError(f"no collection or alias named {name!r} in {self.path}")
        return row

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
        reduce: int | None = None,
        require_model: bool = True,
    ) -> Collection:
        """The collection called ``name``, created with these arguments if missing.

        An existing collection must be in the latent space asked for (and reduced to
        ``reduce`` dimensions, when that is given); its index settings and its
        ``require_model`` stay as they are (:attr:`Collection.require_model` says which).

        Raises:
            CollectionExistsError: it exists in another latent space than the one asked.
            and whatever :meth:`create_collection` raises.
        """
        check_collection_name(name)
        check_flag(require_model, "require_model")
        try:
            row: CollectionRow | None = self._resolve(name)
        except CollectionNotFoundError:
            row = None
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
                    reduce=reduce,
                    require_model=require_model,
                )
            except CollectionExistsError:  # another process created it meanwhile
                row = self.store.collection_by_name(name)
                if row is None:
                    raise
        existing = self.get_collection(name)
        wanted = self._space_for(dimension, metric, embedder, model)
        check_same_space(name, (existing.space, row.embedder), wanted, reduce)
        return existing

    def list_collections(self) -> list[str]:
        """Names of every collection, sorted."""
        return [row.name for row in self.store.list_collections()]

    def delete_collection(self, name: str) -> None:
        """Delete a collection and all its records (a migration into it is cancelled).

        Raises:
            CollectionNotFoundError: there is none.
            InvalidArgumentError: ``name`` is an alias, an alias points at the
                collection, or a migration is re-embedding it; ``name`` is not a string.
        """
        check_name(name)
        store = self.store
        with store.write():
            row = store.collection_by_name(name)
            aliases = store.aliases()
            if row is None and name in aliases:
                raise InvalidArgumentError(
                    f"{name!r} is an alias: delete_alias() it, or name the collection itself"
                )
            if row is None:
                raise CollectionNotFoundError(f"no collection named {name!r} in {self.path}")
            pointing = sorted(alias for alias, target in aliases.items() if target == row.id)
            if pointing:
                raise InvalidArgumentError(
                    f"collection {name!r} is the target of alias {', '.join(map(repr, pointing))}:"
                    " switch or delete the alias first"
                )
            if any(m.source_id == row.id for m in store.migrations(state="running")):
                raise InvalidArgumentError(
                    f"collection {name!r} is being migrated: delete the migration's target "
                    "collection first to cancel it"
                )
            store.drop_collection(row.id)
        self._drop_state(row.id)
        shutil.rmtree(self.path / INDEX_FOLDER / str(row.id), ignore_errors=True)

    def _collection(self, row: CollectionRow, *, alias: str | None = None) -> Collection:
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
        return Collection(self, state, alias=alias)

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
        if row.name != state.row.name:  # renamed by a migration's switch
            state.row = replace(state.row, name=row.name)
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
            index.load()
            self._install(state, index)
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
        index.load()
        built = False
        if not index.sealed:
            dimension = state.space.dimension
            with self.store.all_rows(state.row.id, dimension=dimension) as (count, parts):
                built = index.build_from_parts(count, parts)
        self._install(state, index)
        return built

    def _new_index(self, state: CollectionState) -> SegmentedIndex:
        return SegmentedIndex(
            dimension=state.space.dimension,
            metric=state.space.metric,
            spec=state.spec,
            folder=self.path / INDEX_FOLDER / str(state.row.id),
            lock=self.store.lock,
            build_lock=self._build_lock(state),
            recall_target=state.recall_target,
            reduce=state.space.reduce,
        )

    def _build_lock(self, state: CollectionState) -> BuildLock:
        """The lock that serializes index builds of a collection, one per folder here
        (take it before the store's lock, see :class:`BuildLock`)."""
        lock = self._build_locks.get(state.row.id)
        if lock is None:
            folder = self.path / INDEX_FOLDER / str(state.row.id)
            lock = self._build_locks[state.row.id] = BuildLock(folder)
        return lock

    def _install(self, state: CollectionState, index: SegmentedIndex) -> None:
        """Make ``index`` (its saved segments loaded) the collection's, reconciled with
        the store in one snapshot: a segment row is live only while the store holds its
        key at the sequence it indexed, and every other stored row is read back."""
        store, dimension, collection_id = self.store, state.space.dimension, state.row.id
        with store.read():
            keys, sequences, ids = store.versions(collection_id)
            missing = index.reconcile(keys, sequences)
            state.index = index
            state.ids = IdsByKey(ids)
            if missing.size == keys.size:  # nothing live in a segment: read everything
                state.apply(store.changes_since(collection_id, 0, dimension=dimension))
            else:
                state.apply(store.rows_by_key(missing.tolist(), dimension=dimension))

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
