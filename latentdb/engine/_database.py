"""EmbeddedDatabase: a folder holding collections, the embedded engine's database."""

from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from latentdb.api import (
    DEFAULT_RECALL_TARGET,
    EXTERNAL,
    CollectionSettings,
    Database,
    IndexSpec,
    MigrationRequest,
    check_text,
    collection_requires_model,
    version_names,
)
from latentdb.embed import get_embedder
from latentdb.engine._collection import EmbeddedCollection
from latentdb.engine._migration import EmbeddedMigration
from latentdb.engine._packs import StorePacks
from latentdb.engine._rows import RowCache
from latentdb.engine._state import CollectionState, IdsByKey
from latentdb.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    DatabaseClosedError,
    InvalidArgumentError,
)
from latentdb.index import EXACT_KIND, BuildLock, SegmentedIndex
from latentdb.query import FilterCache
from latentdb.space import LatentSpace
from latentdb.store import CollectionRow, Store

if TYPE_CHECKING:
    from latentdb.api import Migration

__all__ = ["EmbeddedDatabase"]

INDEX_FOLDER = "indexes"
# Collections of more rows than this read their ids in the background when their index
# loads, the first queries asking the store for the ids they return (IdsByKey).
IDS_AT_ONCE = 200_000


class EmbeddedDatabase(Database):
    """The embedded engine's database: a folder with a SQLite store and the indexes
    derived from it.

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
        # Documents and metadata of rows queries returned lately, for every collection
        # (row keys are database-wide): one budget for the database.
        self._rows = RowCache()
        self._data_version = self._store.data_version()
        # Aliases as last read, and the data_version they were read at.
        self._aliases: dict[str, int] | None = None
        self._aliases_version = -1
        self._migrations: dict[int, EmbeddedMigration] = {}  # running here, by migration id
        self._build_locks: dict[int, BuildLock] = {}  # by collection id

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        if self._store is not None:
            try:
                for migration in list(self._migrations.values()):
                    migration.stop()  # after its batch: it resumes on the next migrate()
                for collection_id in list(self._states):
                    self._drop_state(collection_id, wait=True)
            finally:  # the store closes whatever a migration or a build did
                self._store.close()
                self._store = None

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._store is None

    @property
    def store(self) -> Store:
        """The open store (internal)."""
        if self._store is None:
            raise DatabaseClosedError(f"database {self.path} is closed")
        return self._store

    @property
    def version(self) -> int:
        """The store's data_version at the last catch-up (:meth:`sync`): while
        ``store.unchanged_since(version)``, every state not marked stale is current."""
        return self._data_version

    # -- collections ---------------------------------------------------------------

    def _create_collection(self, name: str, settings: CollectionSettings) -> EmbeddedCollection:
        space, embedder_name, config = settings.checked()
        store = self.store
        with store.write():
            row = store.insert_collection(
                name, space=space.to_dict(), embedder=embedder_name, config=config
            )
        return self._collection(row)

    def _get_collection(self, name: str) -> EmbeddedCollection:
        row = self.resolve(name)
        return self._collection(row, alias=None if row.name == name else name)

    # -- aliases -------------------------------------------------------------------

    def _create_alias(self, alias: str, collection: str) -> None:
        store = self.store
        with store.write():
            row = self._alias_target_row(collection)
            store.check_name_free(alias)
            store.set_alias(alias, row.id)
            self._aliases = None

    def _switch_alias(self, alias: str, collection: str) -> None:
        store = self.store
        with store.write():
            if alias not in store.aliases():
                raise CollectionNotFoundError(f"no alias named {alias!r} in {self.path}")
            row = self._alias_target_row(collection)
            store.set_alias(alias, row.id)
            self._aliases = None

    def _delete_alias(self, alias: str) -> None:
        store = self.store
        with store.write():
            if not store.delete_alias(alias):
                raise CollectionNotFoundError(f"no alias named {alias!r} in {self.path}")
            self._aliases = None

    def _list_aliases(self) -> dict[str, str]:
        store = self.store
        with store.read():
            names = {row.id: row.name for row in store.list_collections()}
            return {alias: names[target] for alias, target in sorted(store.aliases().items())}

    # -- migrations ----------------------------------------------------------------

    def _migrate(self, name: str, request: MigrationRequest) -> Migration:
        embedder, reduce, new_name = request.embedder, request.reduce, request.new_name
        store = self.store
        with store.write():
            source = self.resolve(name)
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
                migration = self._migrations.setdefault(row.id, EmbeddedMigration(self, row))
                break
            else:
                migration = self._new_migration(source, name, wanted, reduce, new_name)
        if request.background:
            return migration.start(request.progress)
        migration.run(request.progress)
        return migration

    def _new_migration(
        self,
        source: CollectionRow,
        name: str,
        embedder: str,
        reduce: int | None,
        new_name: str | None,
    ) -> EmbeddedMigration:
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
        target = self._create_collection(
            new_name or default_new,
            CollectionSettings(
                dimension=space.dimension if external else None,
                metric=space.metric,
                embedder=None if external else embedder,
                model=space.model if external else None,
                index=state.spec,
                recall_target=state.recall_target,
                reduce=reduce,
                require_model=collection_requires_model(source.config),
            ),
        )
        migration_id = store.insert_migration(
            alias=name,
            source_id=source.id,
            target_id=target._state.row.id,
            embedder=embedder,
            retire_as=None if is_alias else retired,
        )
        row = next(m for m in store.migrations() if m.id == migration_id)
        migration = self._migrations[migration_id] = EmbeddedMigration(self, row)
        return migration

    def _list_migrations(self) -> list[Migration]:
        return [
            self._migrations.get(row.id) or EmbeddedMigration(self, row)
            for row in self.store.migrations()
        ]

    def _collection_by_id(self, collection_id: int) -> EmbeddedCollection:
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

    def resolve(self, name: str) -> CollectionRow:
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

    def _list_collections(self) -> list[str]:
        return [row.name for row in self.store.list_collections()]

    def _delete_collection(self, name: str) -> None:
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
        self.store.remove_packs_folder(row.id)

    def _collection(self, row: CollectionRow, *, alias: str | None = None) -> EmbeddedCollection:
        state = self._states.get(row.id)
        if state is None:
            state = CollectionState(
                row=row,
                space=LatentSpace.from_dict(row.space),
                spec=IndexSpec.parse(row.config.get("index", EXACT_KIND)),
                recall_target=float(row.config.get("recall_target", DEFAULT_RECALL_TARGET)),
                rows=self._rows,
                filters=FilterCache(self.path / INDEX_FOLDER / str(row.id)),
            )
            self._states[row.id] = state
        return EmbeddedCollection(self, state, alias=alias)

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
        else:  # nothing says which rows changed
            state.rows.clear()
        state.stale = False

    def index(self, state: CollectionState) -> SegmentedIndex:
        """The collection's index: loaded from its files and caught up with the store on
        first use (call under the store lock)."""
        self.sync(state)
        if state.index is None:
            index = self._new_index(state)
            # The store's versions are read beside the loading of the index's files
            # (at 1M rows 0.36 s and 0.25 s of a 0.7 s reopen; each waits mostly
            # outside the GIL, in SQLite and in hashing the files).
            with ThreadPoolExecutor(1, thread_name_prefix="latentdb-versions") as pool:
                versions = pool.submit(self.store.versions_unlocked, state.row.id)
                index.load()
            # Where that read failed, _install reads again itself and meets the error.
            read = None if versions.exception() is not None else versions.result()
            self._install(state, index, versions=read)
        elif state.index.saved_elsewhere():
            self._adopt(state, state.index)
        assert state.index is not None  # apply() only drops it when it raises
        return state.index

    def _adopt(self, state: CollectionState, old: SegmentedIndex) -> None:
        """Load the segments another process saved (a seal, a merge, an optimize) in
        place of ``old``'s, keeping those both name (a segment's files never change under
        its name), and reconcile with the store as on first use (call under the lock).
        Queries go on on ``old``'s snapshot meanwhile."""
        if old.damaged:
            index = self._new_index(state)
            index.load(reuse=dict(old.sealed))
            index.take_live(old)
            old.close(wait=False)
            self._install(state, index)
            return
        # ``old`` is caught up (sync ran): its live rows are the store's, so it stands in
        # for the store's versions and ids, which took 0.35 s at 118k rows under the
        # lock, stalling every query of this process that another one's seal had sent
        # down the locked path (bench/server.py's mixed phase, two workers).
        keys, sequences = old.live_versions()
        index = self._new_index(state)
        index.load(reuse=dict(old.sealed))
        index.take_live(old)
        old.close(wait=False)
        missing = index.reconcile(keys, sequences)
        changes = self.store.rows_by_key(missing.tolist(), dimension=state.space.dimension)
        state.install(index, state.ids, changes)

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
            if built:  # its save ran inside that read, which adoption must not
                index.adopt_packs()
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
            packs=StorePacks(self.store, state.row.id),
        )

    def _build_lock(self, state: CollectionState) -> BuildLock:
        """The lock that serializes index builds of a collection, one per folder here
        (take it before the store's lock, see :class:`BuildLock`)."""
        lock = self._build_locks.get(state.row.id)
        if lock is None:
            folder = self.path / INDEX_FOLDER / str(state.row.id)
            lock = self._build_locks[state.row.id] = BuildLock(folder)
        return lock

    def _install(
        self,
        state: CollectionState,
        index: SegmentedIndex,
        *,
        versions: tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None,
    ) -> None:
        """Make ``index`` (its saved segments loaded) the collection's, reconciled with
        the store in one snapshot: a segment row is live only while the store holds its
        key at the sequence it indexed, and every other stored row is read back.

        Args:
            versions: The store's versions read before (see ``versions_unlocked``),
                taken when nothing was written since; else read again.
        """
        store, dimension, collection_id = self.store, state.space.dimension, state.row.id
        with store.read():
            if versions is not None and versions[0] == store.sequence():
                _, keys, sequences = versions
            else:
                keys, sequences = store.versions(collection_id)
            missing = index.reconcile(keys, sequences)
            background = keys.size > IDS_AT_ONCE  # the first queries need not wait for ids
            if background:
                ids = IdsByKey(fetch=partial(store.ids_by_key, collection_id, unlocked=True))
            else:
                ids = IdsByKey(store.ids_by_key(collection_id))
            recorded = index.sampler.queries()
            if len(recorded):  # what users asked before: filters' first tuning queries
                state.filters.note_queries(recorded)
            if missing.size == keys.size:  # nothing live in a segment: read everything
                changes = store.changes_since(collection_id, 0, dimension=dimension)
            else:
                changes = store.rows_by_key(missing.tolist(), dimension=dimension)
            state.install(index, ids, changes)
            if background:
                state.ids_reader = threading.Thread(
                    target=self._read_ids, args=(state, ids), daemon=True, name="latentdb-ids"
                )
                state.ids_reader.start()

    def _read_ids(self, state: CollectionState, ids: IdsByKey) -> None:
        """Read every id of the collection for ``ids`` (a background thread's work),
        then hand them over under the store's lock, which its writers hold."""
        try:
            pairs = self.store.ids_by_key(state.row.id, unlocked=True)
        except Exception:  # closed meanwhile, or the store failed: keys go on being asked
            return
        with self.store.lock:
            ids.complete(pairs)

    def _drop_state(self, collection_id: int, *, wait: bool = False) -> None:
        state = self._states.pop(collection_id, None)
        if state is not None and state.index is not None:
            state.index.close(wait=wait)
        if state is not None and wait:
            # Their reads go through this thread's own connections, which closing the
            # store closes: SQLite crashes the process under a statement running on one.
            if state.ids_reader is not None:
                state.ids_reader.join()
            state.filters.close()
