"""Views into faiss's own buffers: the float32 storage of an HNSW index, and room
reserved for its codes and neighbour lists (handed back to the system until they
arrive, then taken in 2 MiB pages).

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

from latentdb.index._memory import forget, prefer_huge_pages

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


def _neighbour_slots(index: Any, rows: int) -> int:
    """Neighbour-list slots ``rows`` nodes are expected to take, with room to spare: a
    node has 2M at level 0 and M at each level above, and faiss draws levels so that a
    node reaches level l with probability M^-l, i.e. M/(M-1) <= 2 slots above level 0
    on average."""
    hnsw = faiss.downcast_index(index).hnsw
    return int(rows * (hnsw.nb_neighbors(0) + 2) + 64 * hnsw.nb_neighbors(1))


def _reserve(vector: Any, size: int) -> tuple[int, int]:
    """Size a std::vector-backed buffer to ``size`` items and empty it again: it keeps
    that capacity. Returns the address range of the capacity."""
    vector.resize(size)
    start = _codes_address(vector, 1)
    stop = start + vector.byte_size()
    vector.resize(0)  # std::vector keeps its capacity
    return start, stop


@functools.cache
def codes_keep_capacity() -> bool:
    """Whether an HNSW index keeps its storage's codes and its graph's neighbour lists
    in growable buffers that keep their memory when emptied, and fill that memory in
    place as rows are added (std::vectors): what :func:`reserve_codes` relies on before
    it hands the pages of that memory back with ``madvise``. Checked once, on a tiny
    index."""
    try:
        index = faiss.IndexHNSWFlat(_PROBE_DIMENSION, 4)
        storage = _flat_storage(index)
        size = _PROBE_ROWS * storage.code_size
        reserved, _ = _reserve(storage.codes, size)
        neighbours = index.hnsw.neighbors
        linked, _ = _reserve(neighbours, _neighbour_slots(index, _PROBE_ROWS))
        index.add(np.ones((_PROBE_ROWS, _PROBE_DIMENSION), dtype=np.float32))
        return bool(
            storage.codes.size() == size
            and _codes_address(storage.codes, size) == reserved
            and neighbours.size() > 0
            and _codes_address(neighbours, 1) == linked
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
    """Room for ``rows`` codes in an HNSW index's storage, and for their neighbour lists
    in its graph, before chunks are added. Grown chunk by chunk, each std::vector
    reallocates and briefly holds two copies (+120 MiB of codes at 100k x 384). Sizing
    one writes zeros to every page, so the pages are handed back at once: the capacity
    stays, memory is taken only as rows arrive, and it is taken in 2 MiB pages. A graph
    build reads both buffers at random, and with 4 KiB pages it ran 10-24% slower at
    100k rows here. Nothing is reserved where faiss's buffers are not such vectors
    (:func:`codes_keep_capacity`)."""
    if not codes_keep_capacity():
        return
    storage = _flat_storage(index)
    for vector, size in (
        (storage.codes, rows * storage.code_size),
        (faiss.downcast_index(index).hnsw.neighbors, _neighbour_slots(index, rows)),
    ):
        start, stop = _reserve(vector, size)
        forget(start, stop)
        prefer_huge_pages(start, stop)


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
