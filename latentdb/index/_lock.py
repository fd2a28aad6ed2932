"""One index build at a time per collection folder, across threads and processes.

Two processes that optimize the same collection at once used to write the manifest
through one fixed temporary name and sweep each other's segments (issue 15). A build
lock is a thread lock plus an ``flock`` on a file in the folder: the second caller
waits. Take it before the store's lock, never while holding it (a background build
holds this lock and then waits for the store's); :meth:`BuildLock.acquire` with
``blocking=False`` is safe anywhere.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

__all__ = ["BuildLock", "claim", "release_claim"]

LOCK_FILE = ".build.lock"
# Held by the process that builds a background segment (seal or merge) of the folder.
SEAL_CLAIM_FILE = ".seal.lock"


def claim(folder: Path, name: str = SEAL_CLAIM_FILE) -> int | None:
    """An exclusive ``flock`` on ``folder/name`` taken without waiting, as an open file
    descriptor that :func:`release_claim` gives back (from any thread); None when
    another holder has it or the folder cannot hold the file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def release_claim(fd: int) -> None:
    """Give back a :func:`claim` (closing the descriptor drops its lock)."""
    os.close(fd)


class BuildLock:
    """A re-entrant lock over ``folder``'s index builds (the folder may not exist yet)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._lock = threading.RLock()
        self._depth = 0
        self._owner: int | None = None
        self._fd: int | None = None

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock; False when ``blocking`` is False and someone else holds it.

        A folder that cannot hold a lock file (read-only) gives the thread lock alone:
        nothing can be built there anyway.
        """
        if not self._lock.acquire(blocking=blocking):
            return False
        if self._depth == 0 and self.folder is not None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                fd = None
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                except OSError:
                    os.close(fd)
                    self._lock.release()
                    return False
                self._fd = fd
        self._depth += 1
        self._owner = threading.get_ident()
        return True

    def release(self) -> None:
        """Give the lock back (once per :meth:`acquire`)."""
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None
        self._lock.release()

    def held(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._depth > 0 and self._owner == threading.get_ident()

    def __enter__(self) -> BuildLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
