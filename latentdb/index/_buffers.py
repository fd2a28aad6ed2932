"""Views into faiss's own buffers: the float32 storage of an HNSW index, and room
reserved for its codes (handed back to the system until codes arrive)."""

from __future__ import annotations

from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt

from latentdb.index._memory import forget

__all__ = ["reserve_codes", "storage_view"]

# faiss's SWIG type stubs lack the downcasts and rev_swig_ptr.
faiss: Any = _faiss


def reserve_codes(index: Any, rows: int) -> None:
    """Room for ``rows`` codes in an HNSW index's storage, before chunks are added: grown
    chunk by chunk, the std::vector reallocates and briefly holds two copies (+120 MiB at
    100k x 384). Sizing it writes zeros to every page, so the pages are handed back at
    once: the capacity stays, and memory is taken only as codes arrive."""
    storage = faiss.downcast_index(faiss.downcast_index(index).storage)
    size = rows * storage.code_size
    storage.codes.resize(size)
    start = int(faiss.rev_swig_ptr(storage.codes.data(), size).ctypes.data)
    storage.codes.resize(0)  # std::vector keeps its capacity
    forget(start, start + size)


def storage_view(index: Any, shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    """A numpy view of an IndexHNSWFlat's stored float32 vectors (no copy)."""
    storage = faiss.downcast_index(faiss.downcast_index(index).storage)
    flat = faiss.rev_swig_ptr(storage.get_xb(), shape[0] * shape[1])
    return np.asarray(flat).reshape(shape)
