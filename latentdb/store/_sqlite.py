"""The durable store: SQLite in WAL mode, the source of truth for every record.

The store knows rows, bytes and sequence numbers; it knows nothing of indexes. Every
write runs inside :meth:`Store.write` (one ``BEGIN IMMEDIATE`` transaction, so one call
of the public API is all or nothing) and takes one new number from the database-wide
write sequence; every row it touches is stamped with that number and every deleted row
leaves a tombstone with it. A reader that remembers the last number it applied can catch
up with :meth:`Store.changes_since`, whichever process wrote.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.errors import (
    CollectionExistsError,
    FilterError,
    ForeignDatabaseError,
    ReadOnlyError,
    StorageError,
)
from latentdb.store._connection import (
    GuardedConnection,
    check_database_file,
    companion_files,
    connect,
    create_database_file,
    primary_code,
    storage_error,
)

__all__ = [
    "DATABASE_FILE",
    "Changes",
    "CollectionRow",
    "MigrationRow",
    "SqlFilter",
    "Store",
    "StoredRecord",
]

DATABASE_FILE = "latentdb.sqlite3"
# Seconds a connection waits for another process's write lock before giving up.
_BUSY_TIMEOUT = 60.0
# PRAGMA application_id of a latentdb file ("LtDB"), so that another application's
# SQLite file is never taken for ours (sqlite.org/fileformat2.html#appid).
_APPLICATION_ID = 0x4C744442
# Tables every latentdb schema has had since migration 1.
_CORE_TABLES = frozenset({"sequence", "collections", "records", "tombstones"})
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_CANTOPEN = 5, 6, 8, 14

# Numbered migrations; PRAGMA user_version records how many have run.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sequence (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        value INTEGER NOT NULL
    );
    INSERT INTO sequence (id, value) VALUES (0, 0);
    CREATE TABLE collections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        space TEXT NOT NULL,
        embedder TEXT,
        config TEXT NOT NULL DEFAULT '{}',
        created_seq INTEGER NOT NULL
    );
    CREATE TABLE records (
        key INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id INTEGER NOT NULL REFERENCES collections (id),
        id TEXT NOT NULL,
        vector BLOB NOT NULL,
        document TEXT,
        metadata TEXT,
        seq INTEGER NOT NULL,
        UNIQUE (collection_id, id)
    );
    CREATE INDEX records_by_seq ON records (collection_id, seq);
    CREATE TABLE tombstones (
        collection_id INTEGER NOT NULL,
        key INTEGER NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE INDEX tombstones_by_seq ON tombstones (collection_id, seq);
    """,
    # Aliases share the collections' namespace; a migration re-embeds one collection
    # into another, its cursor the (seq, key) of the last source row copied.
    """
    CREATE TABLE aliases (
        name TEXT PRIMARY KEY,
        collection_id INTEGER NOT NULL REFERENCES collections (id)
    );
    CREATE TABLE migrations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        alias TEXT NOT NULL,
        source_id INTEGER NOT NULL REFERENCES collections (id),
        target_id INTEGER NOT NULL UNIQUE REFERENCES collections (id),
        embedder TEXT NOT NULL,
        retire_as TEXT,
        cursor_seq INTEGER NOT NULL DEFAULT 0,
        cursor_key INTEGER NOT NULL DEFAULT 0,
        copied INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'running'
    );
    """,
    # Full-text index of the documents (where_document $match, hybrid search), kept in
    # step with the records by triggers, inside the very transactions that write them.
    """
    CREATE VIRTUAL TABLE records_fts USING fts5(
        document, content='records', content_rowid='key', tokenize='unicode61'
    );
    CREATE TRIGGER records_fts_insert AFTER INSERT ON records
    WHEN new.document IS NOT NULL BEGIN
        INSERT INTO records_fts (rowid, document) VALUES (new.key, new.document);
    END;
    CREATE TRIGGER records_fts_delete AFTER DELETE ON records
    WHEN old.document IS NOT NULL BEGIN
        INSERT INTO records_fts (records_fts, rowid, document)
        VALUES ('delete', old.key, old.document);
    END;
    CREATE TRIGGER records_fts_update_old AFTER UPDATE OF document ON records
    WHEN old.document IS NOT NULL BEGIN
        INSERT INTO records_fts (records_fts, rowid, document)
        VALUES ('delete', old.key, old.document);
    END;
    CREATE TRIGGER records_fts_update_new AFTER UPDATE OF document ON records
    WHEN new.document IS NOT NULL BEGIN
        INSERT INTO records_fts (rowid, document) VALUES (new.key, new.document);
    END;
    INSERT INTO records_fts (records_fts) VALUES ('rebuild');
    """,
)

FloatMatrix = npt.NDArray[np.float32]
KeyArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SqlFilter:
    """A condition on the ``metadata`` column: SQL text with ``?`` placeholders."""

    sql: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class CollectionRow:
    """A collection as stored: its space and embedder as the JSON the API layer wrote."""

    id: int
    name: str
    space: dict[str, Any]
    embedder: str | None
    config: dict[str, Any]


@dataclass(frozen=True)
class MigrationRow:
    """A re-embedding migration as stored.

    Attributes:
        alias: The name readers use; switched to the target when the copy is complete.
        retire_as: When ``alias`` was the source collection's own name, the name the
            source takes at the switch (so that the alias can take ``alias``).
        cursor: (seq, key) of the last source row copied; rows after it are to do.
        copied: Rows copied so far (a progress count; rows rewritten count again).
        state: "running" or "done".
    """

    id: int
    alias: str
    source_id: int
    target_id: int
    embedder: str
    retire_as: str | None
    cursor: tuple[int, int]
    copied: int
    state: str


@dataclass(frozen=True)
class StoredRecord:
    """One record's stored fields; those not asked for are None."""

    key: int
    id: str
    vector: FloatMatrix | None
    document: str | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class Changes:
    """What changed in one collection after a given sequence number.

    Attributes:
        keys: Row keys written (inserted or replaced), shape (n,), ascending.
        ids: Their user ids.
        vectors: Their vectors, float32 (n, d).
        sequences: The write sequence number of each row, int64 (n,).
        deleted: Row keys deleted, shape (m,).
        sequence: The database's sequence number the changes run up to.
        fresh: ``vectors`` is a new array nobody else holds: an index may keep it
            rather than copy it.
    """

    keys: KeyArray
    ids: list[str]
    vectors: FloatMatrix
    sequences: KeyArray
    deleted: KeyArray
    sequence: int
    fresh: bool = False


def vectors_to_blobs(vectors: FloatMatrix) -> list[bytes]:
    """Encode each row as little-endian float32 bytes."""
    little = np.ascontiguousarray(vectors, dtype="<f4")
    return [row.tobytes() for row in little]


def blobs_to_vectors(blobs: Sequence[bytes], dimension: int) -> FloatMatrix:
    """Decode little-endian float32 rows into a read-only (n, dimension) array."""
    if not blobs:
        return np.empty((0, dimension), dtype=np.float32)
    flat = np.frombuffer(b"".join(blobs), dtype="<f4")
    # No copy on little-endian machines: the result is read-only, and every caller
    # copies it (into an index, or into the array it returns).
    return flat.astype(np.float32, copy=False).reshape(len(blobs), dimension)


def _changes(
    cursor: sqlite3.Cursor, count: int, deleted: KeyArray, sequence: int, dimension: int
) -> Changes:
    """Changes from a cursor over at most ``count`` (key, id, vector, seq) rows, read a
    chunk at a time into arrays made once: the blobs of a whole collection never sit in
    memory together (as bytes they stayed in malloc's heap after use, +170 MiB at 100k
    x 384)."""
    keys = np.empty(count, dtype=np.int64)
    sequences = np.empty(count, dtype=np.int64)
    vectors = np.empty((count, dimension), dtype=np.float32)
    ids: list[str] = []
    filled = 0
    while chunk := cursor.fetchmany(_READ_CHUNK):
        stop = filled + len(chunk)
        keys[filled:stop] = [row[0] for row in chunk]
        ids.extend(row[1] for row in chunk)
        vectors[filled:stop] = blobs_to_vectors([row[2] for row in chunk], dimension)
        sequences[filled:stop] = [row[3] for row in chunk]
        filled = stop
    if filled < count:  # keys asked for that are not stored
        keys, sequences, vectors = keys[:filled], sequences[:filled], vectors[:filled].copy()
    return Changes(
        keys=keys,
        ids=ids,
        vectors=vectors,
        sequences=sequences,
        deleted=deleted,
        sequence=sequence,
        fresh=True,
    )


# Rows fetched from SQLite at a time when reading a collection back.
_READ_CHUNK = 4096


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a script, one by one (a trigger's body holds ";" too)."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def _json_list(values: Sequence[Any]) -> str:
    """One JSON array parameter, read back with ``json_each``: no variable-count limits."""
    return json.dumps(list(values))


def _schema_stamp(connection: sqlite3.Connection, path: Path) -> tuple[int, int]:
    """(application_id, user_version) of a file whose schema is latentdb's, or new.

    Raises:
        ForeignDatabaseError: the file is another application's SQLite database.
    """
    application = int(connection.execute("PRAGMA application_id").fetchone()[0])
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    tables = {
        row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if application == _APPLICATION_ID:
        return application, version
    # 0: not stamped yet, by a latentdb from before the stamp, or a new SQLite file.
    new = version == 0 and not tables
    if application != 0 or not (new or (version > 0 and tables >= _CORE_TABLES)):
        shown = ", ".join(sorted(tables)[:5]) or "none"
        raise ForeignDatabaseError(
            f"{path} is another application's SQLite database (application_id "
            f"{application}, user_version {version}, tables: {shown}), not latentdb's"
        )
    return application, version


def _initialize(connection: sqlite3.Connection) -> None:
    """Run the migrations the file has not had yet, and stamp it as latentdb's (inside
    a write transaction)."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    for number in range(version, len(_MIGRATIONS)):
        for statement in _statements(_MIGRATIONS[number]):
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {number + 1}")
    connection.execute(f"PRAGMA application_id = {_APPLICATION_ID}")


def _opening(error: BaseException, path: Path) -> BaseException:
    """``error`` met while opening the database at ``path``, saying so."""
    if isinstance(error, StorageError) and str(path) not in str(error):
        return type(error)(f"cannot open the database {path}: {error}")
    if isinstance(error, sqlite3.Error):
        return StorageError(f"cannot open the database {path}: {error}")
    return error


class Store:
    """A latentdb folder's SQLite database.

    One connection, used under a lock so that a Database may be shared by threads.
    Every statement goes through :class:`GuardedConnection`, so storage failures are
    named errors (see :mod:`latentdb.store._connection`).

    Attributes:
        read_only: The database can only be read (a read-only file, folder or file
            system); every write raises :class:`ReadOnlyError`.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / DATABASE_FILE
        self.lock = threading.RLock()
        self.read_only = False
        self._in_transaction = False
        # The WAL index (the "-shm" file SQLite shares between connections), opened to
        # read its header; see data_version().
        self._shm: int | None = None
        self._seen: tuple[bytes, int] | None = None  # (WAL index header, data_version)
        if not check_database_file(self.path):
            create_database_file(self.path, _initialize)
        self._connection = self._open()
        try:
            # FULL: a commit is on disk before add() returns, even across a power loss.
            self._connection.execute("PRAGMA synchronous = FULL")
            self._connection.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except BaseException as error:
            self._connection.close()
            raise _opening(error, self.path) from error.__cause__

    def _open(self) -> GuardedConnection:
        """Connect read-write, or read-only when the file or its folder cannot be
        written.

        SQLite needs the -wal and -shm files beside a WAL database even to read it
        (sqlite.org/wal.html, "Read-Only Databases"). When they exist (a writer has the
        database open), a ``mode=ro`` connection reads them. When they do not and the
        folder cannot be written, nobody can be writing here: ``immutable=1`` reads the
        file alone, as the snapshot it is.
        """
        connection = connect(self.path, files=self.path, timeout=_BUSY_TIMEOUT)
        try:
            _schema_stamp(connection, self.path)  # before anything is written to it
            self._enable_wal(connection)
        except StorageError as error:
            connection.close()
            if primary_code(error) not in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
                raise
        else:
            if not os.access(self.path, os.W_OK):  # SQLite opened the file read-only
                self.read_only = True
            return connection
        self.read_only = True
        wal = Path(f"{self.path}-wal")
        in_wal = wal.exists() and wal.stat().st_size > 0
        uri = self.path.absolute().as_uri() + ("?mode=ro" if in_wal else "?mode=ro&immutable=1")
        connection = connect(uri, files=self.path, uri=True, timeout=_BUSY_TIMEOUT)
        try:
            _schema_stamp(connection, self.path)
        except BaseException:
            connection.close()
            raise
        return connection

    def _enable_wal(self, connection: GuardedConnection) -> None:
        """Switch to WAL, waiting out another connection that holds the lock meanwhile.

        Changing the journal mode of a new file needs an exclusive lock, and SQLite
        answers SQLITE_BUSY at once rather than calling the busy handler when another
        process holds it (tests/test_durability.py races them).
        """
        deadline = time.monotonic() + _BUSY_TIMEOUT
        pause = 0.005
        while True:
            try:
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except StorageError as error:
                if primary_code(error) not in (_SQLITE_BUSY, _SQLITE_LOCKED):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
                continue
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.path} cannot use write-ahead logging (mode {mode})")
            return

    # -- connection and transactions -------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self.lock:
            try:
                self._connection.close()
            except sqlite3.Error as error:
                raise (storage_error(error, companion_files(self.path)) or error) from error
            finally:
                if self._shm is not None:
                    os.close(self._shm)
                    self._shm = None

    def _migrate(self) -> None:
        """Check that the file holds latentdb's schema, and bring it up to date.

        Raises:
            ForeignDatabaseError: another application's SQLite database.
            StorageError: a schema newer than this latentdb knows.
            ReadOnlyError: the schema needs an upgrade and the file cannot be written.
        """
        application, version = _schema_stamp(self._connection, self.path)
        if version > len(_MIGRATIONS):
            raise StorageError(
                f"{self.path} has schema version {version}; this latentdb knows up to "
                f"{len(_MIGRATIONS)}: upgrade latentdb to open it"
            )
        if version == len(_MIGRATIONS) and (application == _APPLICATION_ID or self.read_only):
            return
        if self.read_only:
            raise ReadOnlyError(
                f"{self.path} has schema version {version} and needs an upgrade to "
                f"{len(_MIGRATIONS)}, which needs write access; open it writable once"
            )
        with self.write():  # read again under the write lock: another process may
            _schema_stamp(self._connection, self.path)  # have upgraded it meanwhile
            _initialize(self._connection)

    def write(self) -> AbstractContextManager[None]:
        """One write transaction: all of it commits, or none of it (re-entrant).

        Raises:
            ReadOnlyError: the database can only be read (SQLite refuses the first
                statement that writes).
            StorageError: a subclass naming the failure (disk full, damaged file), after
                the transaction was rolled back.
        """
        return self._transaction("BEGIN IMMEDIATE")

    def read(self) -> AbstractContextManager[None]:
        """A consistent snapshot for several reads (re-entrant, also inside a write)."""
        return self._transaction("BEGIN")

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[None]:
        with self.lock:
            if self._in_transaction:  # nested: part of the outer transaction
                yield
                return
            self._connection.execute(begin)
            self._in_transaction = True
            try:
                try:
                    yield
                except BaseException as error:
                    self._roll_back(error)
                    raise
                try:
                    self._connection.execute("COMMIT")
                except BaseException as error:  # e.g. the disk filled up writing the WAL
                    self._roll_back(error)
                    raise
            finally:
                self._in_transaction = False

    def _roll_back(self, cause: BaseException) -> None:
        """Undo the open transaction after ``cause``, unless SQLite already has: after
        some disk-full, I/O and memory errors it rolls back by itself, and a ROLLBACK
        then fails with "no transaction is active", masking the real cause."""
        if not self._connection.in_transaction:
            return
        try:
            self._connection.execute("ROLLBACK")
        except (sqlite3.Error, StorageError) as error:
            cause.add_note(f"rolling back failed too: {error}")

    def data_version(self) -> int:
        """A number that changes when another connection commits (PRAGMA data_version).

        Every query asks, so the pragma (6 us, 25 us with cold caches after a graph
        search) runs only when the WAL index header has changed since it last ran: each
        commit rewrites that header, counter and frame count (sqlite.org/walformat.html,
        "the WAL-index header"). A header read half-written just differs and asks.
        """
        with self.lock:
            header = self._wal_index_header()
            seen = self._seen
            if header is not None and seen is not None and header == seen[0]:
                return seen[1]
            version = int(self._connection.execute("PRAGMA data_version").fetchone()[0])
            if header is not None:  # read before the pragma: a commit between them only
                self._seen = (header, version)  # makes the next call ask again
            elif self._shm is None:
                # Opened only now that our connection has read through the WAL: while
                # it holds the WAL index open, no other connection deletes that file.
                with suppress(OSError):
                    self._shm = os.open(f"{self.path}-shm", os.O_RDONLY)
            return version

    def _wal_index_header(self) -> bytes | None:
        """Both copies of the WAL-index header (96 bytes), or None if not readable.

        pread, not mmap: another process may truncate the file (a first connection
        resets it), and touching a mapped page past the end kills us with SIGBUS.
        """
        if self._shm is None:
            return None
        header = os.pread(self._shm, 96, 0)
        return header if len(header) == 96 else None

    def next_sequence(self) -> int:
        """Take the next write sequence number (inside :meth:`write`)."""
        row = self._connection.execute(
            "UPDATE sequence SET value = value + 1 WHERE id = 0 RETURNING value"
        ).fetchone()
        return int(row[0])

    def current_sequence(self) -> int:
        """The highest sequence number committed so far."""
        with self.lock:
            return int(self._connection.execute("SELECT value FROM sequence").fetchone()[0])

    # -- collections ---------------------------------------------------------------

    def insert_collection(
        self, name: str, *, space: dict[str, Any], embedder: str | None, config: dict[str, Any]
    ) -> CollectionRow:
        """Create a collection row (inside :meth:`write`).

        Raises:
            CollectionExistsError: the name is taken (by a collection or an alias).
        """
        self.check_name_free(name)
        seq = self.next_sequence()
        try:
            cursor = self._connection.execute(
                "INSERT INTO collections (name, space, embedder, config, created_seq) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, json.dumps(space), embedder, json.dumps(config), seq),
            )
        except sqlite3.IntegrityError:
            raise CollectionExistsError(f"a collection named {name!r} already exists") from None
        assert cursor.lastrowid is not None  # set by every INSERT
        return CollectionRow(cursor.lastrowid, name, space, embedder, config)

    def _collection_from(self, row: tuple[Any, ...] | None) -> CollectionRow | None:
        if row is None:
            return None
        return CollectionRow(row[0], row[1], json.loads(row[2]), row[3], json.loads(row[4]))

    def collection_by_name(self, name: str) -> CollectionRow | None:
        """The collection called ``name``, or None."""
        with self.lock:
            row = self._connection.execute(
                "SELECT id, name, space, embedder, config FROM collections WHERE name = ?",
                (name,),
            ).fetchone()
        return self._collection_from(row)

    def collection_by_id(self, collection_id: int) -> CollectionRow | None:
        """The collection with that row id, or None once it is deleted."""
        with self.lock:
            row = self._connection.execute(
                "SELECT id, name, space, embedder, config FROM collections WHERE id = ?",
                (collection_id,),
            ).fetchone()
        return self._collection_from(row)

    def list_collections(self) -> list[CollectionRow]:
        """Every collection, by name."""
        with self.lock:
            rows = self._connection.execute(
                "SELECT id, name, space, embedder, config FROM collections ORDER BY name"
            ).fetchall()
        return [row for row in map(self._collection_from, rows) if row is not None]

    def rename_collection(self, collection_id: int, name: str) -> None:
        """Give a collection another name (inside :meth:`write`).

        Raises:
            CollectionExistsError: the name is taken by a collection or an alias.
        """
        self.check_name_free(name)
        self.next_sequence()
        self._connection.execute(
            "UPDATE collections SET name = ? WHERE id = ?", (name, collection_id)
        )

    def check_name_free(self, name: str) -> None:
        """Collections and aliases share one namespace.

        Raises:
            CollectionExistsError: a collection or an alias is called ``name``.
        """
        with self.lock:
            taken = self._connection.execute(
                "SELECT 'a collection' FROM collections WHERE name = ?1 "
                "UNION ALL SELECT 'an alias' FROM aliases WHERE name = ?1",
                (name,),
            ).fetchone()
        if taken is not None:
            raise CollectionExistsError(f"{taken[0]} named {name!r} already exists")

    # -- aliases and migrations ----------------------------------------------------

    def aliases(self) -> dict[str, int]:
        """Every alias and the id of the collection it names."""
        with self.lock:
            return dict(self._connection.execute("SELECT name, collection_id FROM aliases"))

    def set_alias(self, name: str, collection_id: int) -> None:
        """Point an alias at a collection, creating it if new (inside :meth:`write`)."""
        self.next_sequence()
        self._connection.execute(
            "INSERT INTO aliases (name, collection_id) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET collection_id = excluded.collection_id",
            (name, collection_id),
        )

    def delete_alias(self, name: str) -> bool:
        """Remove an alias (inside :meth:`write`); False if there was none."""
        self.next_sequence()
        cursor = self._connection.execute("DELETE FROM aliases WHERE name = ?", (name,))
        return cursor.rowcount > 0

    def insert_migration(
        self, *, alias: str, source_id: int, target_id: int, embedder: str, retire_as: str | None
    ) -> int:
        """Record a new migration (inside :meth:`write`); its id."""
        self.next_sequence()
        cursor = self._connection.execute(
            "INSERT INTO migrations (alias, source_id, target_id, embedder, retire_as) "
            "VALUES (?, ?, ?, ?, ?)",
            (alias, source_id, target_id, embedder, retire_as),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def migrations(self, *, state: str | None = None) -> list[MigrationRow]:
        """Migrations, oldest first (only those in ``state`` when given)."""
        sql = (
            "SELECT id, alias, source_id, target_id, embedder, retire_as, cursor_seq, "
            "cursor_key, copied, state FROM migrations"
        )
        params: tuple[Any, ...] = ()
        if state is not None:
            sql, params = sql + " WHERE state = ?", (state,)
        with self.lock:
            rows = self._connection.execute(sql + " ORDER BY id", params).fetchall()
        return [
            MigrationRow(
                id=row[0],
                alias=row[1],
                source_id=row[2],
                target_id=row[3],
                embedder=row[4],
                retire_as=row[5],
                cursor=(row[6], row[7]),
                copied=row[8],
                state=row[9],
            )
            for row in rows
        ]

    def advance_migration(self, migration_id: int, cursor: tuple[int, int], copied: int) -> None:
        """Move a migration's cursor past rows just copied (inside :meth:`write`)."""
        self._connection.execute(
            "UPDATE migrations SET cursor_seq = ?, cursor_key = ?, copied = copied + ? "
            "WHERE id = ?",
            (cursor[0], cursor[1], copied, migration_id),
        )

    def finish_migration(self, migration_id: int) -> None:
        """Mark a migration done (inside :meth:`write`)."""
        self.next_sequence()
        self._connection.execute(
            "UPDATE migrations SET state = 'done' WHERE id = ?", (migration_id,)
        )

    def rows_after(
        self, collection_id: int, cursor: tuple[int, int], limit: int
    ) -> list[tuple[int, int, str, str | None, dict[str, Any] | None]]:
        """Up to ``limit`` rows written after ``cursor`` = (seq, key), in (seq, key) order:
        (seq, key, id, document, metadata). A rewritten row gets a new seq, so it comes
        round again."""
        with self.lock:
            rows = self._connection.execute(
                "SELECT seq, key, id, document, metadata FROM records "
                "WHERE collection_id = ? AND (seq, key) > (?, ?) ORDER BY seq, key LIMIT ?",
                (collection_id, cursor[0], cursor[1], limit),
            ).fetchall()
        return [
            (seq, key, record_id, document, None if metadata is None else json.loads(metadata))
            for seq, key, record_id, document, metadata in rows
        ]

    def count_without_document(self, collection_id: int) -> int:
        """Records of a collection that have no document."""
        with self.lock:
            return int(
                self._connection.execute(
                    "SELECT COUNT(*) FROM records WHERE collection_id = ? AND document IS NULL",
                    (collection_id,),
                ).fetchone()[0]
            )

    def ids_missing_from(self, collection_id: int, other_id: int) -> list[str]:
        """Ids stored in one collection and not in the other."""
        with self.lock:
            rows = self._connection.execute(
                "SELECT id FROM records AS r WHERE collection_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM records WHERE collection_id = ? AND id = r.id)",
                (collection_id, other_id),
            ).fetchall()
        return [row[0] for row in rows]

    def update_collection_config(self, collection_id: int, config: dict[str, Any]) -> None:
        """Replace a collection's config JSON (inside :meth:`write`)."""
        self.next_sequence()
        self._connection.execute(
            "UPDATE collections SET config = ? WHERE id = ?", (json.dumps(config), collection_id)
        )

    def drop_collection(self, collection_id: int) -> None:
        """Delete a collection, all its rows and the migrations from or to it (inside
        :meth:`write`; aliases of it must be gone first)."""
        self.next_sequence()
        for table in ("records", "tombstones"):
            self._connection.execute(
                f"DELETE FROM {table} WHERE collection_id = ?", (collection_id,)
            )
        self._connection.execute(
            "DELETE FROM migrations WHERE source_id = ?1 OR target_id = ?1", (collection_id,)
        )
        self._connection.execute("DELETE FROM collections WHERE id = ?", (collection_id,))

    # -- records: reads ------------------------------------------------------------

    def count(self, collection_id: int) -> int:
        """Number of records in a collection."""
        with self.lock:
            return int(
                self._connection.execute(
                    "SELECT COUNT(*) FROM records WHERE collection_id = ?", (collection_id,)
                ).fetchone()[0]
            )

    def keys_for_ids(self, collection_id: int, ids: Sequence[str]) -> dict[str, int]:
        """Map each stored id among ``ids`` to its row key; missing ids are absent."""
        with self.lock:
            rows = self._connection.execute(
                "SELECT id, key FROM records WHERE collection_id = ? "
                "AND id IN (SELECT value FROM json_each(?))",
                (collection_id, _json_list(ids)),
            ).fetchall()
        return dict(rows)

    def select(
        self,
        collection_id: int,
        *,
        ids: Sequence[str] | None = None,
        where: SqlFilter | None = None,
        limit: int | None = None,
        offset: int = 0,
        after: int | None = None,
    ) -> list[tuple[int, str]]:
        """(key, id) of the records among ``ids`` that pass ``where`` (and whose key is
        above ``after``), in key order."""
        sql = "SELECT key, id FROM records WHERE collection_id = ?"
        params: list[Any] = [collection_id]
        if after is not None:
            sql += " AND key > ?"
            params.append(after)
        if ids is not None:
            sql += " AND id IN (SELECT value FROM json_each(?))"
            params.append(_json_list(ids))
        if where is not None:
            sql += f" AND ({where.sql})"
            params.extend(where.params)
        sql += " ORDER BY key LIMIT ? OFFSET ?"
        params.extend((-1 if limit is None else limit, offset))
        with self.lock:
            try:
                return self._connection.execute(sql, params).fetchall()
            except sqlite3.OperationalError as error:
                if "fts5" in str(error):  # a malformed $match query
                    raise FilterError(f"$match: {error}") from None
                raise

    def text_ranking(
        self, collection_id: int, match: str, limit: int, *, where: SqlFilter | None = None
    ) -> list[int]:
        """Keys of the records whose documents match an FTS5 query, best BM25 first."""
        sql = (
            "SELECT r.key FROM records_fts AS f JOIN records AS r ON r.key = f.rowid "
            "WHERE records_fts MATCH ? AND r.collection_id = ?"
        )
        params: list[Any] = [match, collection_id]
        if where is not None:
            sql += (
                f" AND r.key IN (SELECT key FROM records WHERE collection_id = ? AND ({where.sql}))"
            )
            params += [collection_id, *where.params]
        sql += " ORDER BY bm25(records_fts) LIMIT ?"
        params.append(limit)
        with self.lock:
            try:
                return [row[0] for row in self._connection.execute(sql, params)]
            except sqlite3.OperationalError as error:
                if "fts5" in str(error):
                    raise FilterError(f"$match: {error}") from None
                raise

    def fetch(
        self,
        keys: Sequence[int],
        *,
        dimension: int,
        vectors: bool = False,
        documents: bool = False,
        metadatas: bool = False,
    ) -> dict[int, StoredRecord]:
        """The asked-for fields of the given row keys, by key (missing keys absent)."""
        columns = ["key", "id"]
        columns += ["vector"] if vectors else ["NULL"]
        columns += ["document"] if documents else ["NULL"]
        columns += ["metadata"] if metadatas else ["NULL"]
        sql = (
            f"SELECT {', '.join(columns)} FROM records "
            "WHERE key IN (SELECT value FROM json_each(?))"
        )
        with self.lock:
            rows = self._connection.execute(sql, (_json_list([int(k) for k in keys]),)).fetchall()
        out: dict[int, StoredRecord] = {}
        for key, record_id, blob, document, metadata in rows:
            vector = blobs_to_vectors([blob], dimension)[0] if blob is not None else None
            out[key] = StoredRecord(
                key,
                record_id,
                vector,
                document,
                json.loads(metadata) if metadata is not None else None,
            )
        return out

    def changes_since(self, collection_id: int, sequence: int, *, dimension: int) -> Changes:
        """Rows written and deleted in a collection after ``sequence``, consistently."""
        with self.read():
            connection = self._connection
            now = int(connection.execute("SELECT value FROM sequence").fetchone()[0])
            deleted = connection.execute(
                "SELECT key FROM tombstones WHERE collection_id = ? AND seq > ?",
                (collection_id, sequence),
            ).fetchall()
            dead = np.fromiter((row[0] for row in deleted), dtype=np.int64, count=len(deleted))
            count = connection.execute(
                "SELECT COUNT(*) FROM records WHERE collection_id = ? AND seq > ?",
                (collection_id, sequence),
            ).fetchone()[0]
            cursor = connection.execute(
                "SELECT key, id, vector, seq FROM records WHERE collection_id = ? AND seq > ? "
                "ORDER BY key",
                (collection_id, sequence),
            )
            return _changes(cursor, int(count), dead, now, dimension)

    def metadata_since(
        self, collection_id: int, sequence: int
    ) -> tuple[int, list[tuple[int, dict[str, Any] | None]], list[int]]:
        """(sequence now, (key, metadata) of rows written after ``sequence``, keys
        deleted after it), read consistently."""
        with self.read():
            connection = self._connection
            now = int(connection.execute("SELECT value FROM sequence").fetchone()[0])
            rows = connection.execute(
                "SELECT key, metadata FROM records WHERE collection_id = ? AND seq > ?",
                (collection_id, sequence),
            ).fetchall()
            deleted = connection.execute(
                "SELECT key FROM tombstones WHERE collection_id = ? AND seq > ?",
                (collection_id, sequence),
            ).fetchall()
        loads = json.loads
        return (
            now,
            [(key, None if text is None else loads(text)) for key, text in rows],
            [row[0] for row in deleted],
        )

    @contextmanager
    def all_rows(
        self, collection_id: int, *, dimension: int
    ) -> Iterator[tuple[int, Iterator[tuple[KeyArray, FloatMatrix, KeyArray]]]]:
        """Every row of a collection as (keys, vectors, write sequences) chunks in key
        order, read while the context is open: (row count, chunks). For building an
        index without holding the whole collection in memory."""
        with self.read():
            connection = self._connection
            count = connection.execute(
                "SELECT COUNT(*) FROM records WHERE collection_id = ?", (collection_id,)
            ).fetchone()[0]
            cursor = connection.execute(
                "SELECT key, vector, seq FROM records WHERE collection_id = ? ORDER BY key",
                (collection_id,),
            )

            def chunks() -> Iterator[tuple[KeyArray, FloatMatrix, KeyArray]]:
                while rows := cursor.fetchmany(_READ_CHUNK):
                    keys = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
                    blobs = [row[1] for row in rows]
                    sequences = np.fromiter((row[2] for row in rows), np.int64, len(rows))
                    yield keys, np.array(blobs_to_vectors(blobs, dimension)), sequences

            yield int(count), chunks()

    def rows_by_key(self, keys: Sequence[int], *, dimension: int) -> Changes:
        """The current rows of some keys (missing keys left out), as Changes."""
        with self.read():
            now = int(self._connection.execute("SELECT value FROM sequence").fetchone()[0])
            cursor = self._connection.execute(
                "SELECT key, id, vector, seq FROM records "
                "WHERE key IN (SELECT value FROM json_each(?)) ORDER BY key",
                (_json_list([int(k) for k in keys]),),
            )
            return _changes(cursor, len(keys), np.empty(0, dtype=np.int64), now, dimension)

    def versions(self, collection_id: int) -> tuple[KeyArray, KeyArray, dict[int, str]]:
        """Every record of a collection as (keys int64 (n,) ascending, the write
        sequence of each, the id of each key), read consistently."""
        # Two queries, each answered from an index alone (records_by_seq and the
        # (collection_id, id) one): one query of all three columns reads the table's
        # pages, vectors and all, and took 2.4x as long at 100k rows.
        with self.read():
            connection = self._connection
            pairs = connection.execute(
                "SELECT key, seq FROM records WHERE collection_id = ?", (collection_id,)
            ).fetchall()
            named = connection.execute(
                "SELECT key, id FROM records WHERE collection_id = ?", (collection_id,)
            ).fetchall()
        keys = np.fromiter((row[0] for row in pairs), dtype=np.int64, count=len(pairs))
        sequences = np.fromiter((row[1] for row in pairs), dtype=np.int64, count=len(pairs))
        order = np.argsort(keys, kind="stable")
        return keys[order], sequences[order], dict(named)

    # -- records: writes (inside write()) ----------------------------------------------

    def insert_records(
        self,
        collection_id: int,
        *,
        ids: Sequence[str],
        vectors: FloatMatrix,
        documents: Sequence[str | None],
        metadatas: Sequence[str | None],
        sequence: int,
    ) -> None:
        """Insert new rows, or replace every field of rows whose id is already stored.

        A replaced row keeps its key, so its place in insertion order stays.
        """
        self._connection.executemany(
            "INSERT INTO records (collection_id, id, vector, document, metadata, seq) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (collection_id, id) DO UPDATE SET vector = excluded.vector, "
            "document = excluded.document, metadata = excluded.metadata, seq = excluded.seq",
            zip(
                [collection_id] * len(ids),
                ids,
                vectors_to_blobs(vectors),
                documents,
                metadatas,
                [sequence] * len(ids),
                strict=True,
            ),
        )

    def update_records(
        self,
        keys: Sequence[int],
        *,
        vectors: FloatMatrix | None,
        documents: Sequence[str | None] | None,
        metadatas: Sequence[str | None] | None,
        sequence: int,
    ) -> None:
        """Replace the given fields of existing rows; fields passed as None stay."""
        assignments = ["seq = ?"]
        columns: list[Sequence[Any]] = [[sequence] * len(keys)]
        if vectors is not None:
            assignments.append("vector = ?")
            columns.append(vectors_to_blobs(vectors))
        if documents is not None:
            assignments.append("document = ?")
            columns.append(documents)
        if metadatas is not None:
            assignments.append("metadata = ?")
            columns.append(metadatas)
        self._connection.executemany(
            f"UPDATE records SET {', '.join(assignments)} WHERE key = ?",
            zip(*columns, keys, strict=True),
        )

    def delete_records(self, collection_id: int, keys: Sequence[int], *, sequence: int) -> None:
        """Delete rows and leave a tombstone for each, stamped with ``sequence``."""
        payload = _json_list([int(k) for k in keys])
        self._connection.execute(
            "DELETE FROM records WHERE key IN (SELECT value FROM json_each(?))", (payload,)
        )
        self._connection.execute(
            "INSERT INTO tombstones (collection_id, key, seq) SELECT ?, value, ? FROM json_each(?)",
            (collection_id, sequence, payload),
        )

    def keys_at(self, collection_id: int, sequence: int) -> list[tuple[int, str]]:
        """(key, id) of the rows stamped with ``sequence``, in key order."""
        return self._connection.execute(
            "SELECT key, id FROM records WHERE collection_id = ? AND seq = ? ORDER BY key",
            (collection_id, sequence),
        ).fetchall()
