"""Handing pages of memory back to the system before the memory itself is freed."""

from __future__ import annotations

import ctypes
import mmap
import sys

__all__ = ["forget"]

# madvise(MADV_DONTNEED) drops the pages of private anonymous memory (numpy's and
# std::vector's large buffers): they read as zeros when next touched. Linux only.
_MADV_DONTNEED = 4
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
