"""The shortcuts into faiss's C++ buffers: a canary for the layout they rely on, and
the safe paths taken where it differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from latentdb.index import IndexSpec, _buffers, _segment_files, index_kind
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
    assert _buffers.mapping_works(), (
        f"faiss {faiss.__version__}: an HNSW index read with IO_FLAG_MMAP_IFC no longer "
        "answers the same, or its owned copy cannot grow; saved graphs are read whole"
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


def _vma_flags(address: int) -> list[str]:
    """The VmFlags of the mapping that holds ``address`` in /proc/self/smaps."""
    mapping = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and not head.endswith(":"):
            low, high = (int(part, 16) for part in head.split("-"))
            mapping = low <= address < high
        elif mapping and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(
    not Path("/sys/kernel/mm/transparent_hugepage/enabled").exists(),
    reason="madvise(MADV_HUGEPAGE) needs Linux with transparent huge pages",
)
def test_reserved_codes_and_neighbour_lists_are_asked_for_in_huge_pages() -> None:
    """A graph build reads both buffers at random; the room reserved for them is advised
    for 2 MiB pages (a mapping's ``hg`` flag), in place as rows arrive."""
    index = index_kind("hnsw").new_index(
        IndexSpec(kind="hnsw"), rows=20_000, dimension=128, metric=faiss.METRIC_L2,
        capacity=20_000,
    )  # fmt: skip
    graph = faiss.downcast_index(index)
    storage = faiss.downcast_index(graph.storage)
    index.add(clustered(100, dimension=128))
    for vector, rows_room in (
        (storage.codes, 20_000 * 128 * 4),
        (graph.hnsw.neighbors, 20_000 * 64 * 4),
    ):
        start = int(faiss.rev_swig_ptr(vector.data(), 1).ctypes.data)
        middle = start + rows_room // 2  # inside the 2 MiB-aligned part of the room
        assert "hg" in _vma_flags(middle)
    assert graph.hnsw.neighbors.size() < 100 * 80  # the room is capacity, not entries


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


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq8"])
def test_a_loaded_graph_is_mapped_and_grows_into_its_own_memory(tmp_path: Path, kind: str) -> None:
    """A saved graph is read mapped from its file; adding rows to it (a seal after a
    reopen) or to a detached copy of it takes an owned copy first (faiss aborts the
    process when a mapped index grows), and leaves the file as it was."""
    vectors = clustered(600)
    keys = np.arange(600, dtype=np.int64)
    segment = SealedSegment.build(
        kind=kind, spec=IndexSpec(kind=kind, m=8), metric="l2", keys=keys, vectors=vectors,
        sequences=keys,
    )  # fmt: skip
    checksums = segment.save(tmp_path / "seg")
    before = (tmp_path / "seg" / "index.faiss").read_bytes()

    def loaded() -> SealedSegment:
        return SealedSegment.load(tmp_path / "seg", metric="l2", dimension=16, checksums=checksums)

    new = clustered(20, seed=5)
    new_keys = np.arange(1000, 1020, dtype=np.int64)
    for how in ("in place", "detached"):
        segment = loaded()
        assert segment.mapped
        _, found = segment.search(vectors[:50], 1, {"ef": 64})
        assert (found[:, 0] == np.arange(50)).mean() >= 0.9
        grown = segment.detached() if how == "detached" else segment
        assert not grown.mapped or how == "in place"
        grown.extend(new_keys, new, sequences=new_keys)
        assert not grown.mapped and grown.keys.shape[0] == 620
        _, found = grown.search(new, 1, {"ef": 64})
        assert (found[:, 0] == new_keys).mean() >= 0.9, how
        assert np.allclose(grown.vectors[-20:], new, atol=0.02)  # sq8: quantized codes
    assert (tmp_path / "seg" / "index.faiss").read_bytes() == before


def test_without_mapping_a_saved_graph_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = clustered(300)
    keys = np.arange(300, dtype=np.int64)
    segment = build(vectors)
    checksums = segment.save(tmp_path / "seg")
    monkeypatch.setattr(_segment_files, "mapping_works", lambda: False)
    loaded = SealedSegment.load(tmp_path / "seg", metric="l2", dimension=16, checksums=checksums)
    assert not loaded.mapped
    loaded.extend(keys[:1] + 500, clustered(1, seed=3), sequences=keys[:1])
    assert loaded.keys.shape[0] == 301


def test_segments_saved_with_crc32_checksums_still_load_and_damage_is_caught(
    tmp_path: Path,
) -> None:
    """Manifests written before xxh3 name CRC-32 checksums: those files are still
    checked with CRC-32; a flipped byte fails either hash."""
    segment = build(clustered(300))
    checksums = segment.save(tmp_path / "seg")
    assert all(set(c) == {"bytes", "xxh3"} for c in checksums.values())
    old = {
        name: _segment_files.file_checksum(tmp_path / "seg" / name, "crc32") for name in checksums
    }
    for saved in (checksums, old):
        loaded = SealedSegment.load(tmp_path / "seg", metric="l2", dimension=16, checksums=saved)
        assert loaded.keys.shape[0] == 300
    index_file = tmp_path / "seg" / "index.faiss"
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    index_file.write_bytes(bytes(data))
    for saved in (checksums, old):
        with pytest.raises(ValueError, match="fails its checksum"):
            SealedSegment.load(tmp_path / "seg", metric="l2", dimension=16, checksums=saved)


def test_a_loaded_segments_vectors_are_mapped_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment read from its files has its vectors' pages mapped in by a background
    thread (a first scan then pays no fault per page), over exactly their range."""
    from latentdb.index import _memory, _sealed

    calls: list[tuple[int, int]] = []
    real = _memory.populate

    def recorded(start: int, stop: int) -> bool:
        calls.append((start, stop))
        return real(start, stop)

    monkeypatch.setattr(_sealed, "populate", recorded)
    for kind in ("hnsw", "hnsw-sq8"):
        calls.clear()
        vectors = clustered(400)
        keys = np.arange(400, dtype=np.int64)
        segment = SealedSegment.build(
            kind=kind, spec=IndexSpec(kind=kind, m=8), metric="l2", keys=keys,
            vectors=vectors, sequences=keys,
        )  # fmt: skip
        checksums = segment.save(tmp_path / kind)
        loaded = SealedSegment.load(tmp_path / kind, metric="l2", dimension=16, checksums=checksums)
        assert loaded.prefault()  # the kernel takes it (Linux)
        start = loaded.vectors.ctypes.data
        assert (start, start + loaded.vectors.nbytes) in calls
        assert np.array_equal(np.asarray(loaded.vectors), vectors)
