"""Compaction: bringing every live row into one ANN segment (optimize), extending a
segment in place when few of its rows are dead, rebuilding it otherwise; and folding
the growing rows into a new segment.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from latentdb.index._flat import FlatIndex
from latentdb.index._kinds import EXACT_KIND, index_kind
from latentdb.index._manifest import SavedState
from latentdb.index._sealed import SealedSegment, min_build_rows
from latentdb.index._search import FloatMatrix, KeyArray
from latentdb.index._tuning import Tuning, built_rows, holdout
from latentdb.index._view import SearchView

__all__ = ["UNSAVED", "Compaction"]

# optimize() extends a segment in place unless more than this share of it is dead.
_MAX_DEAD_FRACTION = 0.1
# The name of a segment not written yet: the next save writes it. A build is written
# once, after the tuning sample is folded into it: at 1M rows writing it before as well
# cost a 1.4 GB vector pack (fsynced, hashed, then dropped).
UNSAVED = ""


class Compaction(Tuning):
    """optimize() and the builds it shares with sealing; publishing snapshots."""

    # The snapshot queries search without the lock (None: take the lock, see publish).
    view: SearchView | None
    # One entry per query searching a view now (deque appends and pops are atomic).
    readers: deque[None]

    def publish(self) -> SearchView:
        """Freeze the index as it is now for queries that take no lock (call under the
        lock, at the end of every change)."""
        view = self.view = SearchView(self)
        return view

    def _unpublish(self) -> None:
        """Withdraw the published view and wait for the queries searching any view to
        end (call under the lock): before a change that no copy protects. Queries that
        start meanwhile find no view and wait for the lock."""
        self.view = None
        while self.readers:
            time.sleep(0.0005)
        self.growing.unshare()

    def optimize(self) -> None:
        """Bring every row into one ANN segment (dropping dead rows), tune and save, now.

        One segment with few dead rows is extended with the newer rows; anything else
        is rebuilt whole. A background build still running is overtaken: its result is
        dropped.
        """
        with self.build_lock, self.lock:
            self.sealing.cancel()
            self._generation += 1
            self._builder, self._touched = None, None
            self._merger, self._merge_touched = None, None
            kind = self._kind_to_build()
            if index_kind(kind).exact:
                return
            retune = self._needs_tuning()
            if self._extendable(kind):
                self._extend(hold_out=retune)
            else:
                self._rebuild(kind)
                retune = True  # a new graph or new lists: measure again
            self._finish_build(retune=retune)
            self.publish()

    def _kind_to_build(self) -> str:
        """The kind the next build makes. An ``auto`` collection that has an ANN
        segment keeps its kind when deletes take it back under the threshold: its
        tombstones still get compacted, and it does not flip between kinds."""
        kind = self.spec.built_kind(self.live)
        if index_kind(kind).exact and self.sealed:
            kind = self.sealed[0][1].kind
        if not index_kind(kind).exact and built_rows(self.live) < min_build_rows(kind, self.reduce):
            return EXACT_KIND  # too few rows to train on: they stay exact for now
        return kind

    def _finish_build(self, *, retune: bool) -> None:
        """Tune (if asked), fold the growing rows into the one segment, save."""
        if retune:
            self.tune()
        folded = self._fold(self.sealed[0][1])
        if folded is not None:
            self.sealed = [(UNSAVED, folded)]
        self._save()

    def build_from_parts(
        self, count: int, parts: Iterator[tuple[KeyArray, FloatMatrix, KeyArray]]
    ) -> bool:
        """optimize() of an index with nothing loaded, from all ``count`` rows of the
        collection arriving in key order (read from the store) as (keys, vectors, write
        sequences); the caller reconciles with the store afterwards. The rows are never
        all in memory beside the index. Only for kinds that need no training sample;
        False (nothing done) for others, or if anything is loaded."""
        with self.build_lock, self.lock:
            kind = self.spec.built_kind(count)
            descriptor = index_kind(kind)
            # Exact kinds build nothing; training kinds need a sample first.
            if (
                descriptor.exact
                or descriptor.trains_with(self.reduce)
                or self.sealed
                or len(self.growing)
            ):
                return False
            self._generation += 1
            held_out = holdout(count)
            held: list[tuple[KeyArray, FloatMatrix, KeyArray]] = []

            def built() -> Iterator[tuple[KeyArray, FloatMatrix, KeyArray]]:
                start = 0
                for keys, vectors, sequences in parts:
                    mask = held_out[start : start + keys.shape[0]]
                    start += keys.shape[0]
                    if mask.any():
                        held.append((keys[mask], vectors[mask], sequences[mask]))
                        keys, sequences = keys[~mask], sequences[~mask]
                        vectors = np.ascontiguousarray(vectors[~mask])
                    yield keys, vectors, sequences

            spare = int(np.count_nonzero(held_out))
            segment = SealedSegment.build_from_parts(
                kind=kind, spec=self.spec, metric=self.metric, parts=built(),
                count=count - spare, dimension=self.dimension, spare=spare,
            )  # fmt: skip
            self.sealed = [(UNSAVED, segment)]  # written once folded: _finish_build
            for keys, vectors, sequences in held:
                self.growing.upsert(keys, vectors, sequences=sequences)
            self._finish_build(retune=True)
            self.publish()
            return True

    def _fold(self, segment: SealedSegment) -> SealedSegment | None:
        """Move the growing rows that ``segment`` does not hold yet into it (the tuning
        sample, rows written meanwhile), so queries search the graph alone. Returns the
        segment that holds them (a copy if readers may be searching ``segment``), or
        None when nothing moved."""
        keys, vectors = self.growing.live_rows()
        absent = ~segment.holds(keys)  # a replaced row's key stays growing
        if not absent.any():
            return None
        moved = keys[absent]
        if segment.shared:
            segment = segment.detached()
        segment.extend(moved, vectors[absent], sequences=self.growing.sequences_of(moved))
        self.growing.remove(moved)
        self.growing.compact()
        return segment

    def _extendable(self, kind: str) -> bool:
        if len(self.sealed) != 1:
            return False
        segment = self.sealed[0][1]
        return segment.kind == kind and segment.dead <= _MAX_DEAD_FRACTION * segment.keys.size

    def _extend(self, *, hold_out: bool) -> None:
        """Add the growing rows the segment lacks to it (in place), less a tuning sample
        when ``hold_out``."""
        segment = self.sealed[0][1]
        keys, vectors = self.growing.live_rows()
        added = ~segment.holds(keys)  # a replaced row's key stays growing
        if hold_out:
            added &= ~holdout(keys.shape[0])
        if not added.any():
            return
        moved = keys[added]
        if segment.shared:  # readers may be searching it: extend a copy of it
            segment = segment.detached()
        segment.extend(moved, vectors[added], sequences=self.growing.sequences_of(moved))
        self.growing.remove(moved)
        self.growing.compact()
        self.sealed = [(UNSAVED, segment)]  # written once folded: _finish_build

    def _rebuild(self, kind: str) -> None:
        """Build one segment from all live rows, holding a tuning sample out of it."""
        # No copy of the matrix beyond the index itself: rows are picked in key order
        # (and without the tuning sample) as the build copies them out in chunks.
        keys, vectors = self._live_rows(copy=False)
        order = np.argsort(keys, kind="stable")
        held_out = holdout(keys.shape[0])
        built, held = order[~held_out], order[held_out]
        held_keys, held_vectors = keys[held], vectors[held]  # copies, before growing goes
        sequences = self._sequences_of(keys)
        held_sequences = sequences[held]
        keys, sequences = keys[built], sequences[built]
        growing = self.growing
        # Everything is in the growing segment, in key order (a bulk load): hand its
        # pages back as the build copies them, so the data is not held twice.
        in_place = not self.sealed and vectors.base is not None and _ascending(built)
        if in_place:  # readers wait for this build: it hands their rows' memory back
            self._unpublish()
        consumed = growing.forget_pages if in_place else None
        try:
            segment = SealedSegment.build(
                kind=kind, spec=self.spec, metric=self.metric, keys=keys, vectors=vectors,
                sequences=sequences, rows=built, spare=held.size, consumed=consumed,
                reduce=self.reduce,
            )  # fmt: skip
        except BaseException:
            if consumed is not None:
                self.damaged = True  # the growing rows are gone: reload from the store
            raise
        self.sealed = [(UNSAVED, segment)]  # written once folded: _finish_build
        self.growing = FlatIndex(self.dimension, self.metric)
        self.growing.upsert(held_keys, held_vectors, sequences=held_sequences)

    def _write_segment(self, segment: SealedSegment) -> str:
        """Save a segment under a new name (no manifest names it yet); return the name."""
        return self.files.write_segment(segment)

    def _save(self, *, adopt: bool = True) -> None:
        """Write the segments not written yet, then the manifest atomically (under the
        build lock); drop the segment folders it no longer names. ``adopt``: the store
        takes their packs over now (else the caller has it do so)."""
        self.sealed = [
            (self._write_segment(segment) if name == UNSAVED else name, segment)
            for name, segment in self.sealed
        ]
        state = SavedState(self.params, self.tuned_rows, self.tuned_recall, self.saved_curve())
        self.sealed = self.files.save(
            self.sealed, spec=self.spec, reduce=self.reduce, state=state, adopt=adopt
        )


def _ascending(rows: npt.NDArray[np.intp]) -> bool:
    return bool(np.all(rows[1:] > rows[:-1]))
