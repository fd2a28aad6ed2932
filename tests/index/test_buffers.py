"""The shortcuts into faiss's C++ buffers: a canary for the layout they rely on, and
the safe paths taken where it differs."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import pytest

from latentdb.index import IndexSpec, _buffers, index_kind
from latentdb.index._sealed import SealedSegment
from tests._segments import clustered


def test_canary_faiss_keeps_the_layout_the_shortcuts_rely_on() -> None:
    """If this fails after a faiss upgrade, the index still works (the safe paths
    below), but builds take more memory and HNSW vectors are copied: look at
    index/_buffers.py before shipping the upgrade."""
    assert _buffers.codes_keep_capacity(), (
        f"faiss {faiss.__version__}: HNSW storage codes no longer keep their capacity in "
        "place; reserve_codes() skips its madvise"
    )
    assert _buffers.storage_is_float_rows(), (
        f"faiss {faiss.__version__}: IndexFlat's get_xb() is no longer float32 rows; "
        "storage_view() copies the vectors"
    )


def hnsw_index(rows: int) -> Any:
    return index_kind("hnsw").new_index(
        IndexSpec(kind="hnsw", m=8), rows=rows, dimension=16, metric=faiss.METRIC_L2,
        capacity=rows,
    )  # fmt: skip


def test_reserved_codes_take_room_without_rows_and_fill_in_place() -> None:
    index = hnsw_index(500)
    storage = faiss.downcast_index(faiss.downcast_index(index).storage)
    assert storage.codes.size() == 0
    index.add(clustered(100))
    start = int(faiss.rev_swig_ptr(storage.codes.data(), 1).ctypes.data)
    index.add(clustered(400, seed=1))  # within the reserved capacity: no reallocation
    assert int(faiss.rev_swig_ptr(storage.codes.data(), 1).ctypes.data) == start
    view = _buffers.storage_view(index, (500, 16))
    assert np.array_equal(view[:100], clustered(100))


def build(vectors: np.ndarray) -> SealedSegment:
    keys = np.arange(vectors.shape[0], dtype=np.int64)
    return SealedSegment.build(
        kind="hnsw", spec=IndexSpec(kind="hnsw"), metric="l2", keys=keys, vectors=vectors,
        sequences=keys, spare=50,
    )  # fmt: skip


def test_without_the_layout_nothing_is_reserved_or_viewed_and_results_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vectors = clustered(400)
    shortcut = build(vectors)
    monkeypatch.setattr(_buffers, "codes_keep_capacity", lambda: False)
    monkeypatch.setattr(_buffers, "storage_is_float_rows", lambda: False)
    safe = build(vectors)
    assert safe.vectors.base is None or not np.shares_memory(safe.vectors, shortcut.vectors)
    assert np.array_equal(safe.vectors, shortcut.vectors)
    _, found = safe.search(vectors[:50], 1, {"ef": 64})
    assert (found[:, 0] == np.arange(50)).mean() >= 0.95
    safe.extend(np.array([1000], np.int64), clustered(1, seed=9), sequences=np.array([1]))
    assert np.array_equal(safe.vectors[-1], clustered(1, seed=9)[0])


def test_a_probe_that_raises_takes_the_safe_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*arguments: Any) -> Any:
        raise AttributeError("no such layout")

    monkeypatch.setattr(_buffers.faiss, "rev_swig_ptr", broken)
    _buffers.codes_keep_capacity.cache_clear()
    _buffers.storage_is_float_rows.cache_clear()
    try:
        assert _buffers.codes_keep_capacity() is False
        assert _buffers.storage_is_float_rows() is False
    finally:
        monkeypatch.undo()
        _buffers.codes_keep_capacity.cache_clear()
        _buffers.storage_is_float_rows.cache_clear()
    assert _buffers.codes_keep_capacity() is True
