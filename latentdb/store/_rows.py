"""What the store hands out: stored rows as frozen dataclasses, and vectors as
little-endian float32 bytes (never pickled)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float32]
KeyArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SqlFilter:
    """A condition on the ``metadata`` column: SQL text with ``?`` placeholders."""

    sql: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class CollectionRow:
    """A collection as stored: its space and embedder as the JSON the API layer wrote."""

    id: int
    name: str
    space: dict[str, Any]
    embedder: str | None
    config: dict[str, Any]


@dataclass(frozen=True)
class MigrationRow:
    """A re-embedding migration as stored.

    Attributes:
        alias: The name readers use; switched to the target when the copy is complete.
        retire_as: When ``alias`` was the source collection's own name, the name the
            source takes at the switch (so that the alias can take ``alias``).
        cursor: (seq, key) of the last source row copied; rows after it are to do.
        copied: Rows copied so far (a progress count; rows rewritten count again).
        state: "running" or "done".
    """

    id: int
    alias: str
    source_id: int
    target_id: int
    embedder: str
    retire_as: str | None
    cursor: tuple[int, int]
    copied: int
    state: str


@dataclass(frozen=True)
class StoredRecord:
    """One record's stored fields; those not asked for are None."""

    key: int
    id: str
    vector: FloatMatrix | None
    document: str | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class Changes:
    """What changed in one collection after a given sequence number.

    Attributes:
        keys: Row keys written (inserted or replaced), shape (n,), ascending.
        ids: Their user ids.
        vectors: Their vectors, float32 (n, d).
        sequences: The write sequence number of each row, int64 (n,).
        deleted: Row keys deleted, shape (m,).
        sequence: The database's sequence number the changes run up to.
        fresh: ``vectors`` is a new array nobody else holds: an index may keep it
            rather than copy it.
    """

    keys: KeyArray
    ids: list[str]
    vectors: FloatMatrix
    sequences: KeyArray
    deleted: KeyArray
    sequence: int
    fresh: bool = False


def vectors_to_blobs(vectors: FloatMatrix) -> list[bytes]:
    """Encode each row as little-endian float32 bytes."""
    little = np.ascontiguousarray(vectors, dtype="<f4")
    return [row.tobytes() for row in little]


def blobs_to_vectors(blobs: Sequence[bytes], dimension: int) -> FloatMatrix:
    """Decode little-endian float32 rows into a read-only (n, dimension) array."""
    if not blobs:
        return np.empty((0, dimension), dtype=np.float32)
    flat = np.frombuffer(b"".join(blobs), dtype="<f4")
    # No copy on little-endian machines: the result is read-only, and every caller
    # copies it (into an index, or into the array it returns).
    return flat.astype(np.float32, copy=False).reshape(len(blobs), dimension)


def json_list(values: Sequence[Any]) -> str:
    """One JSON array parameter, read back with ``json_each``: no variable-count limits."""
    return json.dumps(list(values))
