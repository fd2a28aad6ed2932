"""Noticing other connections' commits cheaply, through SQLite's WAL-index header.

Every query asks whether another process has committed (``PRAGMA data_version``: 6 us,
25 us with cold caches after a graph search). A commit always rewrites the WAL-index
header at the start of the ``-shm`` file (its change counter and frame count,
sqlite.org/walformat.html, "the WAL-index header"), so the pragma need only run when
those 96 bytes differ from the last time it ran. A header read half-written just
differs and asks.

That reads a file SQLite documents but does not promise to keep, so nothing here is
trusted blindly:

- once per process, :func:`probe_wal_index` checks the linked SQLite on a scratch
  database: the header carries the version this module knows, and a commit from a
  second connection changes it (and that connection's ``data_version``);
- for each database, the header is checked when first read (version, initialized,
  both copies equal, the page size the database reports);
- every :data:`RECHECK_EVERY` answers the header alone would give, the pragma runs
  anyway, and a change the header did not show turns the shortcut off.

Whenever a check fails or the file cannot be read, :class:`CommitWatch` asks the pragma
on every call (correct, only slower) and says why in a :class:`LatentDBWarning`.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import tempfile
import threading
import warnings
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from latentdb.errors import LatentDBWarning

# iVersion of the WAL-index header (WALINDEX_MAX_VERSION in SQLite's wal.c, unchanged
# since 3.7.0); another value means a layout this module does not know.
WAL_INDEX_VERSION = 3007000
# Two copies of the 48-byte header; SQLite writes the second first, readers compare.
_HEADER_SIZE = 96
_COPY_SIZE = 48
# iVersion u32, 4 unused bytes, iChange u32, isInit u8, bigEndCksum u8, szPage u16,
# mxFrame u32, in the machine's byte order (the file is shared memory).
_FIELDS = struct.Struct("=I4xIBBHI")
# Answers given from an unchanged header between two checks against the pragma.
RECHECK_EVERY = 64

_probe_lock = threading.Lock()
_probe_result: list[str | None] = []  # [] until probed; then [None] or [why not]


def read_header(descriptor: int) -> bytes | None:
    """Both copies of the WAL-index header, or None when the file is shorter.

    pread, not mmap: another process may truncate the file (a first connection resets
    it), and touching a mapped page past the end kills us with SIGBUS.

    Raises:
        OSError: the file cannot be read.
    """
    header = os.pread(descriptor, _HEADER_SIZE, 0)
    return header if len(header) == _HEADER_SIZE else None


def header_problem(header: bytes | None, page_size: int) -> str | None:
    """Why a WAL-index header is not as this module assumes, or None when it is.

    Args:
        header: Both copies, as :func:`read_header` returns them.
        page_size: The database's ``PRAGMA page_size``.
    """
    if header is None:
        return "the -shm file is shorter than a WAL-index header"
    version, _change, initialized, _endian, size, frames = _FIELDS.unpack_from(header)
    if version != WAL_INDEX_VERSION:
        return f"its WAL-index version is {version}, not {WAL_INDEX_VERSION}"
    if initialized != 1:
        return "its WAL-index header is not marked initialized"
    if header[:_COPY_SIZE] != header[_COPY_SIZE:]:
        return "the two copies of its WAL-index header differ"
    # 1 stands for 64 KiB; 0 while the WAL holds no frame yet.
    if (65536 if size == 1 else size) != page_size and (size, frames) != (0, 0):
        return f"its WAL-index header gives page size {size}, the database {page_size}"
    return None


def _change_and_frames(header: bytes) -> tuple[int, int]:
    fields = _FIELDS.unpack_from(header)
    return int(fields[1]), int(fields[5])


def probe_wal_index() -> str | None:
    """Whether this process's SQLite keeps the WAL-index header as assumed: None when
    it does, else why not. Checked once, on a scratch database, then remembered.

    A second connection's commit must change the header's change counter and frame
    count, and the first connection's ``data_version``.
    """
    with _probe_lock:
        if not _probe_result:
            _probe_result.append(_probe())
        return _probe_result[0]


def _probe() -> str | None:
    if not hasattr(os, "pread"):
        return "this platform has no pread"
    try:
        with tempfile.TemporaryDirectory(prefix="latentdb-wal-probe-") as folder:
            path = Path(folder) / "probe.sqlite3"
            with (
                closing(sqlite3.connect(path, isolation_level=None)) as writer,
                closing(sqlite3.connect(path, isolation_level=None)) as reader,
            ):
                for connection in (writer, reader):  # scratch: no fsync (3 ms, not 25)
                    connection.execute("PRAGMA synchronous = OFF")
                if writer.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                    return "a scratch database cannot use write-ahead logging"
                writer.execute("CREATE TABLE probe (x)")
                before = int(reader.execute("PRAGMA data_version").fetchone()[0])
                page_size = int(reader.execute("PRAGMA page_size").fetchone()[0])
                descriptor = os.open(f"{path}-shm", os.O_RDONLY)
                try:
                    first = read_header(descriptor)
                    problem = header_problem(first, page_size)
                    if problem is not None or first is None:
                        return problem
                    writer.execute("INSERT INTO probe VALUES (1)")
                    second = read_header(descriptor)
                finally:
                    os.close(descriptor)
                after = int(reader.execute("PRAGMA data_version").fetchone()[0])
    except (OSError, sqlite3.Error) as error:
        return f"the probe failed: {error}"
    if second is None:
        return "the -shm file shrank after a commit"
    (change, frames), (change_after, frames_after) = map(_change_and_frames, (first, second))
    if change_after == change or frames_after <= frames:
        return "a commit from another connection left the WAL-index header unchanged"
    if after == before:
        return "a commit from another connection left PRAGMA data_version unchanged"
    return None


class CommitWatch:
    """``PRAGMA data_version`` of one connection, asked only when the WAL-index header
    says another connection may have committed (see the module).

    Not thread-safe but for :meth:`unchanged`: the store calls the rest under its lock.

    Attributes:
        fallback: Why the header is not used (the pragma runs on every call), or None
            while it is, or may yet be.
    """

    def __init__(self, path: Path, ask: Callable[[], int], page_size: Callable[[], int]) -> None:
        """
        Args:
            path: The database file (the header is in its ``-shm`` companion).
            ask: Runs ``PRAGMA data_version`` on the store's connection.
            page_size: Runs ``PRAGMA page_size`` on it.
        """
        self._shm_path = f"{path}-shm"
        self._ask = ask
        self._page_size = page_size
        self._shm: int | None = None
        self._seen: tuple[bytes, int] | None = None  # (header, data_version)
        self._unchecked = 0  # answers from the header since the pragma last ran
        self._unlocked = 0  # answers of unchanged() since it last said False to recheck
        self.fallback: str | None = probe_wal_index()
        if self.fallback is not None:
            self._warn()

    def data_version(self) -> int:
        """A number that changes when another connection commits."""
        if self.fallback is not None:
            return self._ask()
        header = self._header()
        seen = self._seen
        if header is not None and seen is not None and header == seen[0]:
            if self._unchecked < RECHECK_EVERY:
                self._unchecked += 1
                return seen[1]
            version = self._ask()
            self._unchecked = 0
            # Read again: a commit between the first read and the pragma is a race,
            # not a header that stopped changing.
            if version != seen[1] and self._header() == header:
                self._give_up("another connection committed and the header did not change")
            return version
        version = self._ask()
        self._unchecked = 0
        if header is not None:  # read before the pragma: a commit between them only
            self._seen = (header, version)  # makes the next call ask again
        elif self._shm is None and self.fallback is None:  # not given up just now
            self._open()
        return version

    def unchanged(self, version: int) -> bool:
        """Whether no connection has committed since :meth:`data_version` last returned
        ``version``: one read of the WAL-index header, safe without the store's lock
        (False when unsure, and on every :data:`RECHECK_EVERY`-th call, so that the
        pragma still checks the header now and then)."""
        seen, shm = self._seen, self._shm
        if seen is None or shm is None or seen[1] != version or self.fallback is not None:
            return False
        self._unlocked += 1
        if self._unlocked >= RECHECK_EVERY:  # a race may lose a count: harmless
            self._unlocked = 0
            return False
        try:
            return os.pread(shm, _HEADER_SIZE, 0) == seen[0]  # read_header, inlined
        except OSError:  # closed meanwhile (or reused): ask under the lock
            return False

    def close(self) -> None:
        """Close the ``-shm`` file (idempotent)."""
        if self._shm is not None:
            os.close(self._shm)
            self._shm = None
        self._seen = None

    def _open(self) -> None:
        """Open the -shm file and check its header. Called only once the connection has
        read through the WAL: while it holds the WAL index open, no other connection
        deletes that file."""
        try:
            descriptor = os.open(self._shm_path, os.O_RDONLY)
        except OSError:
            return  # no WAL index (e.g. an immutable read-only database): ask each time
        try:
            header = read_header(descriptor)
        except OSError as error:
            os.close(descriptor)
            self._give_up(f"the -shm file cannot be read: {error}")
            return
        if header is None or header[:_COPY_SIZE] != header[_COPY_SIZE:]:
            os.close(descriptor)  # not written yet, or read half-written: try again later
            return
        problem = header_problem(header, self._page_size())
        if problem is not None:
            os.close(descriptor)
            self._give_up(problem)
            return
        self._shm = descriptor

    def _header(self) -> bytes | None:
        if self._shm is None:
            return None
        try:
            return read_header(self._shm)
        except OSError as error:
            self._give_up(f"the -shm file cannot be read: {error}")
            return None

    def _give_up(self, why: str) -> None:
        self.close()
        self.fallback = why
        self._warn()

    def _warn(self) -> None:
        warnings.warn(
            f"{self._shm_path}: {self.fallback}; noticing other connections' commits with "
            "PRAGMA data_version on every query instead (correct, a few microseconds slower)",
            LatentDBWarning,
            stacklevel=4,
        )
