"""Migrations: re-embed every document of a collection into a new latent space (or copy
its vectors into a collection of the same space indexed another way, e.g. reduced by
PCA), behind an alias that switches when the copy is complete.

The copy walks the source's rows in (write sequence, key) order. A row written again
during the copy gets a new sequence number and so comes round again; the cursor, kept
in SQLite after each batch, is the (sequence, key) of the last row copied. A migration
that was killed continues from there (at most one batch is embedded twice: a batch is
written, then the cursor moves, and a repeated upsert writes the same values). The last
rows and the deletes are brought over inside the write transaction that switches the
alias, so no write to the source is lost on the way.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from latentdb.analysis import SpaceComparison
from latentdb.api import Migration, MigrationProgress, MigrationStatus, check_callable
from latentdb.errors import CollectionNotFoundError, InvalidArgumentError
from latentdb.store import MigrationRow

if TYPE_CHECKING:
    from latentdb.engine._collection import EmbeddedCollection as Collection
    from latentdb.engine._database import EmbeddedDatabase as Database

__all__ = ["EmbeddedMigration"]

# Rows embedded and written per step: one cursor update per batch.
BATCH = 256


def _same_space(source: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    """Whether two collections' spaces differ at most in ``reduce``."""
    fields = ("model", "fingerprint", "dimension", "metric", "normalized")
    return all(source.get(name) == target.get(name) for name in fields)


class EmbeddedMigration(Migration):
    """A migration of the embedded engine: runs in a thread of this process, its
    cursor kept in the store so that a killed run resumes."""

    def __init__(self, database: Database, row: MigrationRow) -> None:
        self._database = database
        self._row = row
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._copies = False  # vectors copied as they are, not re-embedded (set by run)

    @property
    def id(self) -> int:
        return self._row.id

    def _current(self) -> MigrationRow:
        for row in self._database.store.migrations():
            if row.id == self._row.id:
                self._row = row
                return row
        raise CollectionNotFoundError(
            f"migration {self._row.id} is gone: its source or target was deleted"
        )

    def _status(self) -> MigrationStatus:
        store = self._database.store
        with store.read():
            row = self._current()
            source, target = (
                store.collection_by_id(row.source_id),
                store.collection_by_id(row.target_id),
            )
            total = store.count(row.source_id)
        assert source is not None and target is not None  # deleting either drops the row
        return MigrationStatus(
            alias=row.alias,
            source=source.name,
            target=target.name,
            embedder=row.embedder,
            copied=row.copied,
            total=total,
            state=row.state,
            error=None if self._error is None else f"{type(self._error).__name__}: {self._error}",
        )

    def _preview(self, *, sample: int, k: int) -> SpaceComparison:
        status = self._status()
        return self._database.compare(status.source, status.target, sample=sample, k=k)

    # -- running -------------------------------------------------------------------

    def start(self, progress: MigrationProgress | None = None) -> Migration:
        check_callable(progress, "progress")
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._run_catching, args=(progress,), name="latentdb-migrate", daemon=True
        )
        self._thread.start()
        return self

    def _run_catching(self, progress: MigrationProgress | None) -> None:
        try:
            self.run(progress)
        except BaseException as error:  # kept for wait() and status()
            self._error = error

    def wait(self, timeout: float | None = None) -> MigrationStatus:
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 <= timeout < float("inf")
        ):
            raise InvalidArgumentError(f"timeout must be None or seconds >= 0; got {timeout!r}")
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"migration {self.id} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self.status()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def run(self, progress: MigrationProgress | None = None) -> MigrationStatus:
        check_callable(progress, "progress")
        row = self._current()
        if row.state == "done":
            return self.status()
        database = self._database
        target = database._collection_by_id(row.target_id)
        source = database.store.collection_by_id(row.source_id)
        if source is not None:  # the same space but for reduce: copy the vectors
            self._copies = _same_space(source.space, target.space.to_dict())
        total = database.store.count(row.source_id)
        copied = row.copied
        while not self._stop.is_set():
            done = self._copy_batch(target)
            if not done:
                break
            copied += done
            if progress is not None:
                progress(copied, max(total, copied))
        if self._stop.is_set():
            return self.status()
        target.optimize()  # indexed before readers are sent to it
        self._switch(target)
        return self.status()

    def _copy_batch(self, target: Collection) -> int:
        """Embed (or copy) and write the next batch after the cursor; rows copied (0:
        none left)."""
        store = self._database.store
        row = self._row
        if not self._copies:
            rows = store.rows_after(row.source_id, row.cursor, BATCH)
            if not rows:
                return 0
            target.upsert(
                [r[2] for r in rows],
                documents=[r[3] for r in rows],
                metadatas=[r[4] for r in rows],
            )
        else:
            with store.read():  # one snapshot: each row's vector with its document
                rows = store.rows_after(row.source_id, row.cursor, BATCH)
                if not rows:
                    return 0
                stored = store.rows_by_key([r[1] for r in rows], dimension=target.space.dimension)
            # Keys come back ascending; a row deleted meanwhile is missing (its delete is
            # carried over at the switch).
            position = dict(zip(stored.keys.tolist(), range(len(stored.ids)), strict=True))
            kept = [r for r in rows if r[1] in position]
            if kept:
                target.upsert(
                    [r[2] for r in kept],
                    vectors=stored.vectors[[position[r[1]] for r in kept]],
                    documents=[r[3] for r in kept],
                    metadatas=[r[4] for r in kept],
                    model=target.space.model,  # the source's: same space, copied
                )
        with store.write():
            store.advance_migration(row.id, (rows[-1][0], rows[-1][1]), len(rows))
        self._current()
        return len(rows)

    def _switch(self, target: Collection) -> None:
        """Bring over the last writes and the deletes, then switch, in one transaction:
        writers wait, readers go on reading the source until it commits."""
        database = self._database
        store = database.store
        try:
            with store.write():
                while self._copy_batch(target):
                    pass
                row = self._row
                gone = store.ids_missing_from(row.target_id, row.source_id)
                if gone:
                    target.delete(gone)
                if row.retire_as is not None:
                    store.rename_collection(row.source_id, row.retire_as)
                store.set_alias(row.alias, row.target_id)
                store.finish_migration(row.id)
        except BaseException:
            database._forget_index(row.target_id)  # rows mirrored, then rolled back
            raise
        finally:
            database._aliases = None
        database._renamed(row.source_id)
        self._current()
