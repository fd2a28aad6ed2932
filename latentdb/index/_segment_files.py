"""The files of one saved sealed segment: the faiss index, its keys and write sequences,
the float32 vectors kept beside a quantized or reduced index, the PCA axes of a reduced
one, and a small JSON of what it is. Each file is checksummed for the manifest.
"""

from __future__ import annotations

import json
import mmap
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt
import xxhash

from latentdb.index._buffers import mapping_works, read_mapped, storage_view
from latentdb.index._kinds import index_kind
from latentdb.space import Metric

__all__ = ["VECTORS_FILE", "Checksums", "file_checksum", "read_segment", "write_segment"]

# faiss's SWIG type stubs lack read_index/write_index.
faiss: Any = _faiss

INDEX_FILE = "index.faiss"
KEYS_FILE = "keys.npy"
VECTORS_FILE = "vectors.npy"
PROJECTION_FILE = "projection.npy"
SEQUENCES_FILE = "sequences.npy"
META_FILE = "segment.json"
XXH3, CRC32 = "xxh3", "crc32"
# Files are checksummed with xxh3 (64 bits): every open reads every byte of them, and at
# 1M rows x 384 the index is 1.7 GB. xxh3 ran 3.9 GB/s here where CRC-32 (zlib, what
# manifests written before named) ran 1.4 GB/s on the same loaded machine; both guard
# against damage, not forgery. A manifest names the hash of each file: older ones are
# still checked with CRC-32.

Checksums = dict[str, dict[str, int]]


def write_segment(
    folder: Path,
    *,
    index: Any,
    keys: npt.NDArray[np.int64],
    sequences: npt.NDArray[np.int64],
    vectors: npt.NDArray[np.float32] | None,
    projection: npt.NDArray[np.float32] | None,
    meta: Mapping[str, Any],
) -> Checksums:
    """Write a segment's files into a new ``folder``, durably.

    Args:
        vectors: The float32 rows to keep beside the index (None: the index holds them).
        meta: What the segment is ("kind", "metric"); rows and reduce are added.

    Returns:
        Each file's size and xxh3 hash, for the manifest.
    """
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(folder / INDEX_FILE))
    np.save(folder / KEYS_FILE, keys)
    np.save(folder / SEQUENCES_FILE, sequences)
    if vectors is not None:
        np.save(folder / VECTORS_FILE, vectors)
    if projection is not None:
        np.save(folder / PROJECTION_FILE, projection)
    described = {**meta, "rows": int(keys.shape[0])}
    described["reduce"] = None if projection is None else int(projection.shape[0])
    (folder / META_FILE).write_text(json.dumps(described))
    checksums = {}
    for file in sorted(folder.iterdir()):  # durable before the manifest names the folder
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
        checksums[file.name] = file_checksum(file)
    return checksums


def read_segment(
    folder: Path,
    *,
    metric: Metric,
    dimension: int,
    checksums: Checksums,
    reduce: int | None,
) -> dict[str, Any]:
    """The parts of a saved segment whose files match ``checksums``, as keyword
    arguments of :class:`SealedSegment`.

    Raises:
        ValueError, OSError, RuntimeError: a file is missing, damaged, foreign (its
            checksum differs) or the segment was built for another space (or another
            ``reduce``).
    """
    present = {file.name for file in folder.iterdir()}
    if present != set(checksums):
        raise ValueError(
            f"segment {folder.name} holds files {sorted(present)}, "
            f"its manifest names {sorted(checksums)}"
        )
    for name, expected in checksums.items():
        algorithm = CRC32 if CRC32 in expected else XXH3
        if file_checksum(folder / name, algorithm) != expected:
            raise ValueError(f"segment {folder.name}: {name} fails its checksum")
    meta = json.loads((folder / META_FILE).read_text())
    keys = np.load(folder / KEYS_FILE)
    sequences = np.load(folder / SEQUENCES_FILE)
    # A graph's codes are mapped, not read (see read_mapped); lists are read.
    mapped = index_kind(str(meta["kind"])).graph and mapping_works()
    index = (
        read_mapped(folder / INDEX_FILE) if mapped else faiss.read_index(str(folder / INDEX_FILE))
    )
    rows = int(meta["rows"])
    if meta["metric"] != metric or meta.get("reduce") != reduce:
        raise ValueError(f"segment {folder.name} is of another space")
    projection = None
    if reduce is not None:
        projection = np.load(folder / PROJECTION_FILE)
        if projection.shape != (reduce, dimension) or projection.dtype != np.float32:
            raise ValueError(f"segment {folder.name} projection has shape {projection.shape}")
    if index.d != (dimension if reduce is None else reduce):
        raise ValueError(f"segment {folder.name} is of another space")
    if index.ntotal != rows or keys.shape != (rows,) or keys.dtype != np.int64:
        raise ValueError(f"segment {folder.name} has {index.ntotal} vectors for {rows} rows")
    if _repeats(keys):
        raise ValueError(f"segment {folder.name} has repeated keys")
    if sequences.shape != (rows,) or sequences.dtype != np.int64:
        raise ValueError(f"segment {folder.name} has {sequences.shape} sequences")
    kind = str(meta["kind"])
    if index_kind(kind).stores_vectors and projection is None:
        vectors = storage_view(index, (rows, dimension))
    else:
        # Memory-mapped: re-ranking touches only the candidates' rows.
        vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
        if vectors.shape != (rows, dimension) or vectors.dtype != np.float32:
            raise ValueError(f"segment {folder.name} vectors have shape {vectors.shape}")
    return {
        "kind": kind,
        "metric": metric,
        "keys": keys,
        "index": index,
        "vectors": vectors,
        "sequences": sequences,
        "projection": projection,
        "mapped": mapped,
    }


def _repeats(keys: npt.NDArray[np.int64]) -> bool:
    """Whether a key occurs twice: ascending keys (a segment's, but for rows added by a
    later seal) are checked in one pass; np.unique took 0.17 s at 1M keys."""
    steps = np.diff(keys)
    if (steps > 0).all():
        return False
    return bool((np.diff(np.sort(keys)) == 0).any())


def file_checksum(path: Path, algorithm: str = XXH3) -> dict[str, int]:
    """A file's size and hash (``XXH3`` or ``CRC32``), read through a memory map (no copy
    of the bytes)."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return {"bytes": 0, algorithm: 0}
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if algorithm == CRC32:
                return {"bytes": size, CRC32: zlib.crc32(mapped)}
            return {"bytes": size, XXH3: xxhash.xxh3_64_intdigest(mapped)}
