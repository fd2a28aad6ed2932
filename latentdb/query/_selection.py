"""The rows a filter allows, in the forms the planner and the index need: keys, a mask
over each sealed segment's rows, a faiss selector, and a digest that says whether the
allowed rows of the sealed segments have changed.

Per-segment answers are cached by the segment's keys array, which every snapshot of a
segment shares, and its tombstone count: a delete changes which rows are live.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.index import SealedSegment, squared_norms
from latentdb.query._columns import MetadataColumns

__all__ = ["KeySelection", "MaskSelection", "Selection", "segments_signature"]

KeyArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatMatrix = npt.NDArray[np.float32]


def segments_signature(segments: list[SealedSegment]) -> tuple[tuple[int, int], ...]:
    """Which sealed segments these are, row layout included (not their tombstones)."""
    return tuple((id(segment.keys), segment.keys.shape[0]) for segment in segments)


class Selection:
    """Allowed rows (a base: :class:`MaskSelection` and :class:`KeySelection` say which)."""

    count: int

    def __init__(self) -> None:
        # id(segment.keys) -> (that array, rows, tombstones, allowed live rows mask,
        # their selector or None, digest part or None, their rows gathered or None)
        self._segments: dict[int, list[Any]] = {}

    def keys(self) -> KeyArray:
        """Every allowed key, ascending."""
        raise NotImplementedError

    def contains(self, keys: KeyArray) -> BoolArray:
        """Which of ``keys`` are allowed."""
        raise NotImplementedError

    def _allowed(self, segment: SealedSegment) -> BoolArray:
        """A mask over ``segment``'s rows: those allowed, live or not."""
        raise NotImplementedError

    def _entry(self, segment: SealedSegment) -> list[Any]:
        keys = segment.keys
        entry = self._segments.get(id(keys))
        if (
            entry is None
            or entry[0]() is not keys
            or entry[1] != keys.shape[0]
            or entry[2] != segment.dead
        ):
            entry = [weakref.ref(keys), keys.shape[0], segment.dead, None, None, None, None]
            entry[3] = self._allowed(segment) & segment.alive
            self._segments[id(keys)] = entry
        return entry

    def rows_of(self, segment: SealedSegment) -> BoolArray:
        """A mask over ``segment``'s rows: the live ones allowed."""
        mask: BoolArray = self._entry(segment)[3]
        return mask

    def gathered(
        self, segment: SealedSegment, *, norms: bool
    ) -> tuple[KeyArray, FloatMatrix, FloatMatrix | None]:
        """The keys of ``segment``'s allowed live rows, a copy of their vectors and, with
        ``norms``, their squared norms, kept while the segment is unchanged: the scan of
        a segment sealed since a filter's graph was built reads these rows alone, not
        the whole segment masked (under steady writes, a sixth of a 10% filter's time
        went to scanning whole deltas for the tenth of their rows it allows)."""
        entry = self._entry(segment)
        if entry[6] is None:
            rows = np.flatnonzero(entry[3])
            matrix = np.ascontiguousarray(segment.vectors[rows], dtype=np.float32)
            entry[6] = (segment.keys[rows], matrix, None)
        keys, matrix, squared = entry[6]
        if norms and squared is None:
            squared = squared_norms(matrix)
            entry[6] = (keys, matrix, squared)
        return keys, matrix, squared if norms else None

    def selected_in(self, segment: SealedSegment) -> tuple[Any, int]:
        """``segment.selector_for(rows_of(segment))``, kept while the segment is
        unchanged."""
        entry = self._entry(segment)
        if entry[4] is None:
            entry[4] = segment.selector_for(entry[3])
        selected: tuple[Any, int] = entry[4]
        return selected

    def digest(self, segments: list[SealedSegment]) -> tuple[tuple[int, int, int, int], ...]:
        """Which rows of ``segments`` are allowed and live, in short (equal digests: the
        same rows)."""
        parts = []
        for segment in segments:
            entry = self._entry(segment)
            if entry[5] is None:
                mask = entry[3]
                count = int(np.count_nonzero(mask))
                entry[5] = (id(segment.keys), entry[1], count, hash(np.packbits(mask).tobytes()))
            parts.append(entry[5])
        return tuple(parts)

    def sealed_count(self, segments: list[SealedSegment]) -> int:
        """Allowed live rows in ``segments``."""
        return sum(part[2] for part in self.digest(segments))


class MaskSelection(Selection):
    """The rows a filter allows, as a mask over the metadata columns' slots."""

    def __init__(self, columns: MetadataColumns, mask: BoolArray) -> None:
        super().__init__()
        self._columns = columns
        self._mask = mask
        self.count = int(np.count_nonzero(mask))
        self._keys: KeyArray | None = None

    def keys(self) -> KeyArray:
        if self._keys is None:
            self._keys = np.sort(self._columns.keys[: self._mask.shape[0]][self._mask])
        return self._keys

    def contains(self, keys: KeyArray) -> BoolArray:
        slots = self._columns.slots_of(keys)
        out = np.zeros(keys.shape[0], dtype=bool)
        known = (slots >= 0) & (slots < self._mask.shape[0])
        out[known] = self._mask[slots[known]]
        return out

    def _allowed(self, segment: SealedSegment) -> BoolArray:
        slots = self._columns.segment_slots(segment)
        out = np.zeros(slots.shape[0], dtype=bool)
        known = (slots >= 0) & (slots < self._mask.shape[0])
        out[known] = self._mask[slots[known]]
        return out


class KeySelection(Selection):
    """Allowed rows given as keys (from SQL)."""

    def __init__(self, keys: KeyArray) -> None:
        super().__init__()
        self._sorted = np.unique(keys)
        self.count = int(self._sorted.shape[0])

    def keys(self) -> KeyArray:
        return self._sorted

    def contains(self, keys: KeyArray) -> BoolArray:
        return np.isin(keys, self._sorted, assume_unique=False)

    def _allowed(self, segment: SealedSegment) -> BoolArray:
        return np.isin(segment.keys, self._sorted)
