"""Views into faiss's own buffers: the float32 storage of an HNSW index, and room
reserved for its codes (handed back to the system until codes arrive).

Both reach past faiss's Python API into its C++ layout, so the layout is checked once,
on a tiny index, before it is relied on (:func:`codes_keep_capacity`,
:func:`storage_is_float_rows`): a faiss whose layout differs gets the safe path instead
(no reservation, or a copy of the vectors), slower or bigger but with the same results.
tests/index/test_buffers.py fails loudly when an upgrade changes the layout.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt

from latentdb.index._memory import forget

__all__ = [
    "codes_keep_capacity",
    "mapping_works",
    "owned_copy",
    "read_mapped",
    "reserve_codes",
    "storage_is_float_rows",
    "storage_view",
]

# faiss's SWIG type stubs lack the downcasts and rev_swig_ptr.
faiss: Any = _faiss

# Rows of the probe index: enough to grow its storage a few times over.
_PROBE_ROWS = 64
_PROBE_DIMENSION = 4


def _flat_storage(index: Any) -> Any:
    return faiss.downcast_index(faiss.downcast_index(index).storage)


def _codes_address(codes: Any, size: int) -> int:
    return int(faiss.rev_swig_ptr(codes.data(), size).ctypes.data)


@functools.cache
def codes_keep_capacity() -> bool:
    """Whether an HNSW index's flat storage keeps its codes in a growable buffer that
    keeps its memory when emptied, and fills that memory in place as rows are added
    (a std::vector): what :func:`reserve_codes` relies on before it hands the pages of
    that memory back with ``madvise``. Checked once, on a tiny index."""
    try:
        index = faiss.IndexHNSWFlat(_PROBE_DIMENSION, 4)
        storage = _flat_storage(index)
        size = _PROBE_ROWS * storage.code_size
        storage.codes.resize(size)
        reserved = _codes_address(storage.codes, size)
        storage.codes.resize(0)
        index.add(np.ones((_PROBE_ROWS, _PROBE_DIMENSION), dtype=np.float32))
        return bool(
            storage.codes.size() == size and _codes_address(storage.codes, size) == reserved
        )
    except Exception:  # another layout, or no such methods: take the safe path
        return False


@functools.cache
def storage_is_float_rows() -> bool:
    """Whether an HNSW index's flat storage holds its vectors as float32 rows, one after
    another, at ``get_xb()``: what :func:`storage_view` relies on. Checked once."""
    try:
        index = faiss.IndexHNSWFlat(_PROBE_DIMENSION, 4)
        count = _PROBE_ROWS * _PROBE_DIMENSION
        rows = np.arange(count, dtype=np.float32).reshape(_PROBE_ROWS, _PROBE_DIMENSION)
        index.add(rows)
        flat = faiss.rev_swig_ptr(_flat_storage(index).get_xb(), rows.size)
        return bool(np.array_equal(np.asarray(flat).reshape(rows.shape), rows))
    except Exception:
        return False


def reserve_codes(index: Any, rows: int) -> None:
    """Room for ``rows`` codes in an HNSW index's storage, before chunks are added: grown
    chunk by chunk, the std::vector reallocates and briefly holds two copies (+120 MiB at
    100k x 384). Sizing it writes zeros to every page, so the pages are handed back at
    once: the capacity stays, and memory is taken only as codes arrive. Nothing is
    reserved where faiss's storage is not such a vector (:func:`codes_keep_capacity`)."""
    if not codes_keep_capacity():
        return
    storage = _flat_storage(index)
    size = rows * storage.code_size
    storage.codes.resize(size)
    start = _codes_address(storage.codes, size)
    storage.codes.resize(0)  # std::vector keeps its capacity
    forget(start, start + size)


def storage_view(index: Any, shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    """The float32 vectors (rows, dimension) an IndexHNSWFlat stores: a view (no copy),
    or a copy read back through faiss where its layout is not the one checked for."""
    storage = _flat_storage(index)
    if not storage_is_float_rows():
        copied: npt.NDArray[np.float32] = storage.reconstruct_n(0, shape[0])
        return copied.reshape(shape)
    flat = faiss.rev_swig_ptr(storage.get_xb(), shape[0] * shape[1])
    return np.asarray(flat).reshape(shape)


def read_mapped(path: Path) -> Any:
    """The faiss index saved at ``path`` with its codes memory-mapped from the file
    (``IO_FLAG_MMAP_IFC``), not read into memory: at 1M rows x 384 reading the 1.5 GB of
    vectors was most of a reopen, and mapped they are the page cache's pages, shared by
    every process that opens the collection. Such an index must never grow: see
    :func:`owned_copy`."""
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)


def owned_copy(index: Any) -> Any:
    """A copy of ``index`` that holds its codes in its own memory. A mapped index's
    codes are the file's pages, which faiss cannot grow: adding rows to it, or to its
    ``clone_index``, aborts the process (faiss 1.15: "This operation cannot be performed
    on a viewed vector")."""
    return faiss.deserialize_index(faiss.serialize_index(index))


@functools.cache
def mapping_works() -> bool:
    """Whether faiss reads an HNSW index mapped (:func:`read_mapped`) with the same
    answers, and :func:`owned_copy` of it takes new rows. Checked once, on a tiny index
    in a temporary file; where it fails, indexes are read into memory as before."""
    try:
        count = _PROBE_ROWS * _PROBE_DIMENSION
        rows = np.arange(count, dtype=np.float32).reshape(_PROBE_ROWS, _PROBE_DIMENSION) % 7
        index = faiss.IndexHNSWFlat(_PROBE_DIMENSION, 4)
        index.add(rows)
        with tempfile.TemporaryDirectory(prefix="latentdb-probe-") as folder:
            path = Path(folder) / "probe.faiss"
            faiss.write_index(index, str(path))
            mapped = read_mapped(path)
            same = np.array_equal(mapped.search(rows, 3)[1], index.search(rows, 3)[1])
            copy = owned_copy(mapped)
            copy.add(rows[:2])
            del mapped
        return bool(same and copy.ntotal == _PROBE_ROWS + 2)
    except Exception:
        return False
