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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt
import xxhash

from latentdb.index._buffers import mapping_works, read_mapped, storage_view
from latentdb.index._kinds import index_kind
from latentdb.space import Metric

__all__ = [
    "VECTORS_FILE",
    "Checksums",
    "PackFile",
    "file_checksum",
    "read_segment",
    "write_segment",
]

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


@dataclass(frozen=True)
class PackFile:
    """The file a graph's float32 rows were written to apart from the graph (a *pack*,
    which the store adopts as its own copy of those rows: store/_packs.py).

    Attributes:
        name: The file's name in the packs folder.
        offset: Byte offset of its first row (faiss's IndexFlat header comes first).
        rows: Row count; row ``i`` is the segment's row ``i``.
        size, xxh3: The file's byte size and hash.
    """

    name: str
    offset: int
    rows: int
    size: int
    xxh3: int


def write_segment(
    folder: Path,
    *,
    index: Any,
    keys: npt.NDArray[np.int64],
    sequences: npt.NDArray[np.int64],
    vectors: npt.NDArray[np.float32] | None,
    projection: npt.NDArray[np.float32] | None,
    meta: Mapping[str, Any],
    pack: Path | None = None,
) -> tuple[Checksums, PackFile | None]:
    """Write a segment's files into a new ``folder``, durably.

    Args:
        vectors: The float32 rows to keep beside the index (None: the index holds them).
        meta: What the segment is ("kind", "metric"); rows and reduce are added.
        pack: Where to write the float rows of a graph that holds them (None: in the
            index file), durably: the graph file then holds the graph alone.

    Returns:
        Each file's size and xxh3 hash, for the manifest; and the pack written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = None
    if pack is not None and vectors is None and _has_storage(index):
        written = _write_pack(faiss.downcast_index(index.storage), pack, int(keys.shape[0]))
        faiss.write_index(index, str(folder / INDEX_FILE), faiss.IO_FLAG_SKIP_STORAGE)
    else:
        faiss.write_index(index, str(folder / INDEX_FILE))
    np.save(folder / KEYS_FILE, keys)
    np.save(folder / SEQUENCES_FILE, sequences)
    if vectors is not None:
        np.save(folder / VECTORS_FILE, vectors)
    if projection is not None:
        np.save(folder / PROJECTION_FILE, projection)
    described = {**meta, "rows": int(keys.shape[0])}
    described["reduce"] = None if projection is None else int(projection.shape[0])
    if written is not None:
        described["pack"] = asdict(written)
    (folder / META_FILE).write_text(json.dumps(described))
    checksums = {}
    for file in sorted(folder.iterdir()):  # durable before the manifest names the folder
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
        checksums[file.name] = file_checksum(file)
    return checksums, written


def _has_storage(index: Any) -> bool:
    """Whether ``index`` is a graph over a flat storage of float32 rows (HNSW)."""
    storage = getattr(faiss.downcast_index(index), "storage", None)
    return storage is not None and isinstance(faiss.downcast_index(storage), faiss.IndexFlat)


def _write_pack(storage: Any, path: Path, rows: int) -> PackFile:
    """Write a graph's flat storage (faiss's IndexFlat file: a header, then the rows)
    to ``path`` durably: fsynced, renamed into place, its folder fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    faiss.write_index(storage, str(partial))
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    checksum = file_checksum(partial)
    os.replace(partial, path)
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    size = checksum["bytes"]
    offset = size - rows * storage.d * 4  # the rows are the file's last bytes
    return PackFile(path.name, offset, rows, size, checksum[XXH3])


def read_segment(
    folder: Path,
    *,
    metric: Metric,
    dimension: int,
    checksums: Checksums,
    reduce: int | None,
    packs: Path | None = None,
) -> dict[str, Any]:
    """The parts of a saved segment whose files match ``checksums``, as keyword
    arguments of :class:`SealedSegment`.

    Args:
        packs: The folder of the packs a segment's graph may keep its rows in.

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
    pack = storage = None
    if meta.get("pack") is not None:
        pack = PackFile(**meta["pack"])
        storage = _read_pack(pack, packs, rows, mapped=mapped)
        index.storage = storage  # the segment keeps ``storage`` alive
        index.own_fields = False
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
        "pack": pack,
        "storage": storage,
    }


def _read_pack(pack: PackFile, packs: Path | None, rows: int, *, mapped: bool) -> Any:
    """The flat storage a graph's rows were written to (:func:`_write_pack`), mapped
    where faiss allows, after checking the file against ``pack``.

    Raises:
        ValueError: the pack is missing, damaged or holds other rows.
    """
    if packs is None:
        raise ValueError(f"segment keeps its rows in pack {pack.name}, and no packs folder is set")
    path = packs / pack.name
    if pack.rows != rows:
        raise ValueError(f"pack {pack.name} holds {pack.rows} rows, the segment {rows}")
    if file_checksum(path) != {"bytes": pack.size, XXH3: pack.xxh3}:
        raise ValueError(f"pack {pack.name} fails its checksum")
    # read_index hands back the flat index already downcast and owning its C++ object
    # (a downcast_index of it would be a second wrapper, dangling once this one goes).
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mapped else 0)


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
