"""Handing pages of memory back to the system before the memory itself is freed."""

from __future__ import annotations

import ctypes
import mmap
import sys

__all__ = ["forget", "populate"]

# madvise(MADV_DONTNEED) drops the pages of private anonymous memory (numpy's and
# std::vector's large buffers): they read as zeros when next touched. Linux only.
_MADV_DONTNEED = 4
# madvise(MADV_POPULATE_READ) maps the pages of a file mapping in one call (Linux 5.14+),
# as a read of each page would, one fault at a time; MADV_WILLNEED only reads ahead.
_MADV_WILLNEED, _MADV_POPULATE_READ = 3, 22
_MADVISE = ctypes.CDLL(None, use_errno=True).madvise if sys.platform == "linux" else None


def forget(start: int, stop: int) -> None:
    """Drop the whole pages between addresses ``start`` and ``stop`` (a no-op elsewhere
    than Linux). Their contents are lost: only for memory that will not be read again
    before it is written."""
    if _MADVISE is None:
        return
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, stop // page * page  # whole pages inside
    if last > first:
        _MADVISE(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


def populate(start: int, stop: int) -> bool:
    """Map in the pages of a file mapping between addresses ``start`` and ``stop`` now
    (a background thread's work: the call holds no lock and releases the GIL), so that
    a scan of them later pays no page fault per 4 KiB. Where MADV_POPULATE_READ is not
    known, the file is read ahead instead. Whether it was done; a range no longer mapped
    (its index closed meanwhile) is refused by the kernel, harmlessly."""
    if _MADVISE is None or stop <= start:
        return False
    page = mmap.PAGESIZE
    first = start // page * page
    length = ctypes.c_size_t(stop - first)
    if _MADVISE(ctypes.c_void_p(first), length, _MADV_POPULATE_READ) == 0:
        return True
    return bool(_MADVISE(ctypes.c_void_p(first), length, _MADV_WILLNEED) == 0)
