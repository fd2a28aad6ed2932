"""SQLite connections whose failures are named errors, and the database file's checks.

Every statement the store runs goes through :class:`GuardedConnection` and every row it
reads through :class:`GuardedCursor`, so a full disk, a read-only file or a damaged page
surfaces as a :class:`~latentdb.errors.StorageError` subclass, whichever query met it,
with SQLite's error kept as the ``__cause__``. Errors in a statement itself
(``SQLITE_ERROR``: a malformed full-text query, an expression too deep; constraints) are
left as they are, for the caller that knows what they mean.

A new database file is built under a unique temporary name and linked into place whole,
so a latentdb database file is never seen empty: an empty one is a damaged file, and it
is refused instead of opened as a new, empty database.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from latentdb.errors import (
    CorruptDatabaseError,
    DiskFullError,
    ForeignDatabaseError,
    ReadOnlyError,
    StorageError,
)

__all__ = [
    "GuardedConnection",
    "GuardedCursor",
    "check_database_file",
    "connect",
    "create_database_file",
    "primary_code",
    "storage_error",
]

# SQLite's primary result codes (sqlite.org/rescode.html) that name a storage fault.
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_NOMEM = 7
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_PROTOCOL = 15
_SQLITE_NOTADB = 26

_SQLITE_HEADER = b"SQLite format 3\x00"
# An I/O error is put down to a full disk when less than this is left free: a write
# that failed for space has just taken what there was (a WAL does not shrink).
_NEARLY_FULL = 8 << 20
# ... or to the file size limit when a file of the database is this close to it: SQLite
# writes a page (+ a 24-byte frame header) or a 32 KiB WAL-index chunk at a time.
_LIMIT_MARGIN = 64 << 10
# Temporary files of a creation killed part way are swept after this many seconds
# (creating a database takes milliseconds).
_STALE_PARTIAL = 600.0


def primary_code(error: BaseException) -> int | None:
    """SQLite's primary result code behind ``error`` (or its cause), if there is one."""
    while error is not None:
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF
        if error.__cause__ is None:
            return None
        error = error.__cause__
    return None


def _space_problem(files: Sequence[Path]) -> str | None:
    """Why a write to these files would run out of space, if it would: the process's
    file size limit (RLIMIT_FSIZE) reached by one of them, or a nearly full disk."""
    if sys.platform != "win32":
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            for file in files:
                with suppress(OSError):
                    if os.stat(file).st_size + _LIMIT_MARGIN >= limit:
                        return f"{file.name} reached the file size limit ({limit} bytes)"
    if files and hasattr(os, "statvfs"):
        with suppress(OSError):
            stat = os.statvfs(files[0].parent)
            free = stat.f_bavail * stat.f_frsize
            if free < _NEARLY_FULL:
                return f"the disk has {free} bytes free"
    return None


def storage_error(error: sqlite3.Error, files: Sequence[Path]) -> StorageError | None:
    """The named error for a storage failure SQLite reported, or None for an error in
    the statement itself (left to the caller).

    Args:
        error: What SQLite raised.
        files: The database file and its -wal, -shm and -journal files (for telling a
            full disk from another I/O error: SQLite reports a write refused for space
            as SQLITE_FULL, but one over RLIMIT_FSIZE as "disk I/O error").
    """
    code = primary_code(error)
    name = getattr(error, "sqlite_errorname", "")
    said = f"{error} ({name})" if name else str(error)
    if code == _SQLITE_FULL:
        return DiskFullError(f"the disk is full: {said}; the operation was rolled back")
    if code == _SQLITE_IOERR:
        problem = _space_problem(files)
        if problem is not None:
            return DiskFullError(f"out of space ({problem}): {said}; the operation was rolled back")
        return StorageError(f"the disk failed: {said}; the operation was rolled back")
    if code in (_SQLITE_READONLY, _SQLITE_PERM):
        return ReadOnlyError(f"the database is read-only: {said}; only reads are possible")
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return CorruptDatabaseError(
            f"the database file is damaged: {said}; restore it from a backup"
        )
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StorageError(f"the database stayed locked by another connection: {said}")
    if code in (_SQLITE_CANTOPEN, _SQLITE_NOMEM, _SQLITE_PROTOCOL):
        return StorageError(f"the database cannot be used: {said}")
    return None


class GuardedCursor(sqlite3.Cursor):
    """A cursor whose reads raise named storage errors (a damaged page may be met at
    any row, not only when the statement starts)."""

    def _fail(self, error: sqlite3.Error) -> Exception:
        connection = self.connection
        files = connection.files if isinstance(connection, GuardedConnection) else ()
        return storage_error(error, files) or error

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.Error as error:
            raise self._fail(error) from error

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        try:
            return super().fetchmany(size)
        except sqlite3.Error as error:
            raise self._fail(error) from error

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.Error as error:
            raise self._fail(error) from error

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.Error as error:
            raise self._fail(error) from error


class GuardedConnection(sqlite3.Connection):
    """A connection whose statements raise named storage errors (see the module)."""

    # The database file and its companions, for telling a full disk (set by connect()).
    files: tuple[Path, ...] = ()

    def execute(self, sql: str, parameters: Any = (), /) -> GuardedCursor:
        cursor = GuardedCursor(self)
        try:
            return cursor.execute(sql, parameters)
        except sqlite3.Error as error:
            raise (storage_error(error, self.files) or error) from error

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> GuardedCursor:
        cursor = GuardedCursor(self)
        try:
            return cursor.executemany(sql, parameters)
        except sqlite3.Error as error:
            raise (storage_error(error, self.files) or error) from error


def companion_files(path: Path) -> tuple[Path, ...]:
    """The database file and the files SQLite keeps beside it."""
    return (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm", "-journal")))


def connect(
    target: str | Path, *, files: Path, uri: bool = False, timeout: float = 60.0
) -> GuardedConnection:
    """Open a :class:`GuardedConnection` (autocommit: the store issues BEGIN itself).

    Args:
        target: A path, or a ``file:`` URI when ``uri`` is true.
        files: The database file, whose companions tell a full disk.
        timeout: Seconds to wait for another process's write lock before giving up.

    Raises:
        StorageError: a subclass when SQLite names the cause.
    """
    try:
        connection = sqlite3.connect(
            target,
            isolation_level=None,
            check_same_thread=False,
            timeout=timeout,
            uri=uri,
            factory=GuardedConnection,
        )
    except sqlite3.Error as error:
        raise (
            storage_error(error, companion_files(files))
            or StorageError(f"the database cannot be opened: {error}")
        ) from error
    connection.files = companion_files(files)
    return connection


def check_database_file(path: Path) -> bool:
    """Whether the database file exists; refuse it when it is not a SQLite file.

    Read before SQLite opens it: SQLite takes an empty file for a new database and
    would write a fresh schema over what was a damaged one.

    Raises:
        CorruptDatabaseError: the file is empty (latentdb never leaves one so).
        ForeignDatabaseError: the file does not start with SQLite's header.
        StorageError: it cannot be read.
    """
    try:
        with path.open("rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return False
    except OSError as error:
        raise StorageError(f"cannot read the database file {path}: {error}") from error
    if not header:
        raise CorruptDatabaseError(
            f"the database file {path} is empty (0 bytes): latentdb never leaves it so, "
            "so it was truncated or made by another program; restore it from a backup, "
            "or remove it to start a new database"
        )
    if header != _SQLITE_HEADER:
        raise ForeignDatabaseError(
            f"{path} is not a SQLite database (it starts with {header!r}): a file of "
            "another program, or a database whose first page is damaged"
        )
    return True


def _fsync(path: Path, *, folder: bool = False) -> None:
    if folder and sys.platform == "win32":
        return  # a folder cannot be opened for fsync there; NTFS journals renames
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# The page size of new database files (SQLite's default is 4096).
PAGE_SIZE = 8192


def create_database_file(path: Path, initialize: Callable[[GuardedConnection], None]) -> None:
    """Create the database file whole: built under a unique name, then linked into
    place, so that nobody ever sees it empty. When another process creates it first,
    theirs is kept.

    Args:
        path: Where the database file goes (its folder exists).
        initialize: Writes the schema (called inside one transaction).

    Raises:
        ReadOnlyError: the folder cannot be written.
        StorageError: another failure (a subclass when SQLite names it).
    """
    folder = path.parent
    _sweep_partials(folder, path.name)
    temporary = folder / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial"
    try:
        connection = connect(temporary, files=temporary)
        try:
            connection.execute("PRAGMA synchronous = FULL")
            # Before anything is written: a record of 384 float32s is ~1.6 KB, so a 4 KB
            # page held two (77% full; 1M rows took 1.99 GB) where 8 KB pages hold five.
            connection.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            connection.execute("BEGIN IMMEDIATE")
            initialize(connection)
            connection.execute("COMMIT")
        finally:
            connection.close()
        _fsync(temporary)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process created it meanwhile: open theirs
        except OSError:  # no hard links on this file system: copy, never replace
            _copy_new(temporary, path)
        _fsync(folder, folder=True)
    except PermissionError as error:
        raise ReadOnlyError(
            f"cannot create a database in {folder}: the folder is read-only ({error})"
        ) from error
    except OSError as error:
        raise StorageError(f"cannot create a database in {folder}: {error}") from error
    finally:
        for leftover in companion_files(temporary):
            with suppress(OSError):
                leftover.unlink()


def _copy_new(source: Path, target: Path) -> None:
    """Copy ``source`` to a ``target`` that must not exist yet."""
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(source.read_bytes())
        handle.flush()
        os.fsync(handle.fileno())


def _sweep_partials(folder: Path, name: str) -> None:
    """Remove the temporary files of creations killed part way (old enough that no
    creation still runs)."""
    now = time.time()
    for leftover in folder.glob(f".{name}.*.partial*"):
        with suppress(OSError):
            if now - leftover.stat().st_mtime > _STALE_PARTIAL:
                leftover.unlink()
