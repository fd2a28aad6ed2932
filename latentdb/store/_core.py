"""The store's connection: opening (read-write, or read-only when it must), the schema
brought up to date, transactions, the write sequence, and noticing other processes'
commits (:meth:`StoreCore.data_version`)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from latentdb.errors import ReadOnlyError, StorageError
from latentdb.store._connection import (
    GuardedConnection,
    check_database_file,
    companion_files,
    connect,
    create_database_file,
    primary_code,
    storage_error,
)
from latentdb.store._schema import (
    APPLICATION_ID,
    DATABASE_FILE,
    MIGRATIONS,
    initialize,
    schema_stamp,
)
from latentdb.store._wal import CommitWatch

# Seconds a connection waits for another process's write lock before giving up.
_BUSY_TIMEOUT = 60.0
# The file mapped by each reader() connection (address space, not memory).
_READER_MMAP_BYTES = 1 << 30
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_CANTOPEN = 5, 6, 8, 14


def _opening(error: BaseException, path: Path) -> BaseException:
    """``error`` met while opening the database at ``path``, saying so."""
    if isinstance(error, StorageError) and str(path) not in str(error):
        return type(error)(f"cannot open the database {path}: {error}")
    if isinstance(error, sqlite3.Error):
        return StorageError(f"cannot open the database {path}: {error}")
    return error


class StoreCore:
    """The connection and transactions every part of :class:`~latentdb.store.Store`
    works through (see there)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / DATABASE_FILE
        self.lock = threading.RLock()
        # Read-only connections of the threads that read without the lock (reader()).
        self._local = threading.local()
        self._readers: weakref.WeakSet[GuardedConnection] = weakref.WeakSet()
        self._reader_target: tuple[str | Path, bool] = (self.path, False)
        self.read_only = False
        # The thread whose transaction is open (threading.get_ident), 0 when none: it holds
        # the lock for the whole transaction.
        self._transaction_thread = 0
        if not check_database_file(self.path):
            create_database_file(self.path, initialize)
        self._connection = self._open()
        try:
            # FULL: a commit is on disk before add() returns, even across a power loss.
            self._connection.execute("PRAGMA synchronous = FULL")
            self._connection.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            self._commits = CommitWatch(self.path, self._ask_data_version, self._page_size)
            # Whether no connection has committed since data_version() returned a
            # version (without the lock; False when unsure: then ask data_version).
            # The watch's own method, not one that calls it: every query asks.
            self.unchanged_since: Callable[[int], bool] = self._commits.unchanged
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
            schema_stamp(connection, self.path)  # before anything is written to it
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
        self._reader_target = (uri, True)
        try:
            schema_stamp(connection, self.path)
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
                for reader in list(self._readers):
                    reader.close()
                self._connection.close()
            except sqlite3.Error as error:
                raise (storage_error(error, companion_files(self.path)) or error) from error
            finally:
                self._commits.close()

    def reader(self) -> GuardedConnection:
        """The calling thread's own read-only connection, for reads that take no lock:
        each statement sees the latest commit. Made on first use; closed by
        :meth:`close`, or when the thread ends."""
        connection: GuardedConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            target, uri = self._reader_target
            connection = connect(target, files=self.path, uri=uri, timeout=_BUSY_TIMEOUT)
            connection.execute("PRAGMA query_only = 1")
            # Rows read through the OS's page cache, not copied into SQLite's own one
            # per connection: 10 random rows of a 100k collection in ~60 us, not ~85.
            connection.execute(f"PRAGMA mmap_size = {_READER_MMAP_BYTES}")
            self._local.connection = connection
            self._readers.add(connection)
        return connection

    def _migrate(self) -> None:
        """Check that the file holds latentdb's schema, and bring it up to date.

        Raises:
            ForeignDatabaseError: another application's SQLite database.
            StorageError: a schema newer than this latentdb knows.
            ReadOnlyError: the schema needs an upgrade and the file cannot be written.
        """
        application, version = schema_stamp(self._connection, self.path)
        if version > len(MIGRATIONS):
            raise StorageError(
                f"{self.path} has schema version {version}; this latentdb knows up to "
                f"{len(MIGRATIONS)}: upgrade latentdb to open it"
            )
        if version == len(MIGRATIONS) and (application == APPLICATION_ID or self.read_only):
            return
        if self.read_only:
            raise ReadOnlyError(
                f"{self.path} has schema version {version} and needs an upgrade to "
                f"{len(MIGRATIONS)}, which needs write access; open it writable once"
            )
        with self.write():  # read again under the write lock: another process may
            schema_stamp(self._connection, self.path)  # have upgraded it meanwhile
            initialize(self._connection)

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
            if self._transaction_thread:  # nested: part of the outer transaction
                yield
                return
            self._connection.execute(begin)
            self._transaction_thread = threading.get_ident()
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
                self._transaction_thread = 0

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

    @property
    def in_transaction(self) -> bool:
        """Whether the calling thread has a transaction of the store's connection open
        (another thread's does not count: this thread's next transaction waits for it)."""
        return self._transaction_thread == threading.get_ident()

    def data_version(self) -> int:
        """A number that changes when another connection commits (PRAGMA data_version,
        run only when the WAL-index header says it may have changed: see
        :mod:`latentdb.store._wal`)."""
        with self.lock:
            return self._commits.data_version()

    def _ask_data_version(self) -> int:
        return int(self._connection.execute("PRAGMA data_version").fetchone()[0])

    def _page_size(self) -> int:
        return int(self._connection.execute("PRAGMA page_size").fetchone()[0])

    def next_sequence(self) -> int:
        """Take the next write sequence number (inside :meth:`write`)."""
        row = self._connection.execute(
            "UPDATE sequence SET value = value + 1 WHERE id = 0 RETURNING value"
        ).fetchone()
        return int(row[0])
