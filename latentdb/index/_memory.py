"""Handing pages of memory back to the system before the memory itself is freed."""

from __future__ import annotations

import ctypes
import mmap
import sys

__all__ = ["forget", "populate", "prefer_huge_pages"]

# madvise(MADV_DONTNEED) drops the pages of private anonymous memory (numpy's and
# std::vector's large buffers): they read as zeros when next touched. Linux only.
_MADV_DONTNEED = 4
# madvise(MADV_POPULATE_READ) maps the pages of a file mapping in one call (Linux 5.14+),
# as a read of each page would, one fault at a time; MADV_WILLNEED only reads ahead.
_MADV_WILLNEED, _MADV_POPULATE_READ = 3, 22
# madvise(MADV_HUGEPAGE) asks for 2 MiB pages where transparent huge pages are enabled
# only on request ("madvise", the common default); numpy asks so for its own arrays.
_MADV_HUGEPAGE = 14
_HUGE_PAGE = 2 << 20
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


def prefer_huge_pages(start: int, stop: int) -> bool:
    """Ask for 2 MiB pages in the aligned part of ``start``..``stop`` of private anonymous
    memory, for the pages not yet touched (call it after :func:`forget`). A graph build
    reads its vectors and neighbour lists at random: with 4 KiB pages each read also
    misses the TLB. Whether the kernel took the advice (False where it has no
    transparent huge pages, or elsewhere than Linux; nothing else changes then)."""
    if _MADVISE is None:
        return False
    first, last = -(-start // _HUGE_PAGE) * _HUGE_PAGE, stop // _HUGE_PAGE * _HUGE_PAGE
    if last <= first:
        return False
    return bool(
        _MADVISE(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_HUGEPAGE) == 0
    )


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
