"""A collection's index: a growing exact segment plus sealed ANN segments.

New rows land in the growing segment (exact search). When it holds ``seal_rows`` rows a
background thread builds an ANN segment from a snapshot of them; queries and writes go
on meanwhile, and rows changed during the build are masked in the new segment. A
replaced or deleted row is masked (tombstoned) in the sealed segment that holds it.
Searches run on every segment and merge the top-k by distance.

Sealed segments are saved under the collection's index folder, each row with the write
sequence of the version it indexed; a manifest names the live segments and the checksum
of each of their files. On open they are loaded, not rebuilt, and reconciled with the
store (:meth:`SegmentedIndex.reconcile`): a row is live only while the store holds its
key at that very sequence, and every stored row that no segment holds live is read back
into the growing segment. So the store is the truth by construction, whatever order of
seals, optimizes, deletes, updates and crashes came before (issue 15). The index is a
cache of the store: a missing, damaged or foreign file is dropped with a warning and its
rows are rebuilt from the store.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
import uuid
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from latentdb.errors import (
    DiskFullError,
    InvalidArgumentError,
    LatentDBWarning,
    ReadOnlyError,
    StorageError,
)
from latentdb.index._flat import FlatIndex, exact_search
from latentdb.index._kinds import EXACT_KIND, FILTERED_EF_MAX, filtered_ef, index_kind
from latentdb.index._lock import BuildLock
from latentdb.index._sealed import Checksums, SealedSegment, merge_hits, min_build_rows
from latentdb.index._spec import IndexSpec
from latentdb.space import Metric

__all__ = ["FILTERED_EF_MAX", "IndexStatus", "SegmentedIndex", "Selection", "filtered_ef"]

FloatMatrix = npt.NDArray[np.float32]
KeyArray = npt.NDArray[np.int64]
Hits = tuple[FloatMatrix, KeyArray]


class Selection(Protocol):
    """The rows a filter allows, in the forms the index needs."""

    count: int  # allowed live rows

    def keys(self) -> KeyArray:
        """Every allowed key, ascending."""
        ...

    def contains(self, keys: KeyArray) -> npt.NDArray[np.bool_]:
        """Which of ``keys`` are allowed."""
        ...

    def rows_of(self, segment: SealedSegment) -> npt.NDArray[np.bool_]:
        """A mask over ``segment``'s rows: those allowed."""
        ...

    def selected_in(self, segment: SealedSegment) -> tuple[Any, int]:
        """``segment.selector_for(rows_of(segment))``, kept while the segment is
        unchanged."""
        ...


MANIFEST = "manifest.json"
# Version 2: per-row write sequences and file checksums. Older manifests are rebuilt.
_MANIFEST_VERSION = 2
# Tuning queries: rows held out of the ANN build, kept in the growing segment until the
# parameters are tuned, so they stand for new queries; then they join the segment (a
# growing segment scanned beside the graph cost ~50 us a query, bench/ann.py).
# Queries that are rows of the graph find themselves and their graph neighbours too
# easily: tuned on them, ef=10 measured recall@10 0.97 but gave 0.87 on the data set's
# held-out test queries (30k pypi rows, hnsw). So parameters are only ever tuned on
# held-out rows, except for a first tuning with none to hand.
_TUNE_SAMPLE = 300
_TUNE_MIN_QUERIES = 50
# Tuned on the collection's own rows, recall runs a little higher than on new queries
# (bench/ann.py: held-out test queries); tune for the target plus this margin.
_TUNE_MARGIN = 0.01
# Writes must pause this long before the growing segment is sealed in the background.
_SEAL_QUIET_SECONDS = 1.0
# Under writes that never pause, seal anyway once the growing segment holds this many
# times the seal size (its exact scan costs every query).
_SEAL_OVERDUE = 2
# optimize() extends a segment in place unless more than this share of it is dead.
_MAX_DEAD_FRACTION = 0.1
# Re-tune once the collection has grown by this factor since the last tuning.
_RETUNE_GROWTH = 2.0


@dataclass(frozen=True)
class IndexStatus:
    """Where a collection's index stands.

    Attributes:
        kind: The kind of the sealed segments ("flat" while everything is exact).
        spec: The collection's index kind as configured ("auto", "hnsw", ...).
        indexed: Live rows in sealed (ANN) segments.
        pending: Rows in the growing (exact) segment, not yet in an ANN index.
        deleted: Dead rows still taking space in sealed segments (until compaction).
        segments: Number of sealed segments.
        building: Whether a segment is being built in the background now.
        params: Search parameters queries use by default (tuned).
        recall_target: The recall@10 the parameters were tuned for.
        tuned_recall: The recall measured when they were tuned (None before).
    """

    kind: str
    spec: str
    indexed: int
    pending: int
    deleted: int
    segments: int
    building: bool
    params: dict[str, int]
    recall_target: float
    tuned_recall: float | None


class SegmentedIndex:
    """Growing + sealed segments of one collection, persisted in ``folder``."""

    def __init__(
        self,
        *,
        dimension: int,
        metric: Metric,
        spec: IndexSpec,
        folder: Path | None,
        lock: threading.RLock,
        build_lock: BuildLock | None = None,
        recall_target: float = 0.95,
        reduce: int | None = None,
    ) -> None:
        """
        Args:
            lock: The store's lock, held by every caller of a write or a search.
            build_lock: Serializes builds of ``folder`` across threads and processes
                (shared by every index object of the folder in this process).
            reduce: Sealed segments index PCA projections of the rows to this many
                dimensions and re-score candidates with the rows themselves (the
                growing segment is always exact). None: the full dimension.
        """
        self.dimension = dimension
        self.reduce = reduce
        self.metric = metric
        self.spec = spec
        self.folder = folder
        self.lock = lock
        self.build_lock = build_lock or BuildLock(folder)
        self.recall_target = recall_target
        self.growing = FlatIndex(dimension, metric)
        self.sealed: list[tuple[str, SealedSegment]] = []
        self.params: dict[str, int] = {}
        # Defaults of the segments' kind + tuned params, one object; and that kind.
        self._settings: dict[str, int] | None = None
        self._settings_kind = ""
        self._overrides: dict[tuple[Any, ...], dict[str, int]] = {}  # ... + a query's knobs
        self.tuned_rows = 0
        self.tuned_recall: float | None = None
        self.applied = 0
        self._builder: threading.Thread | None = None
        self._touched: set[int] | None = None  # keys written while a build runs
        self._generation = 0  # bumped by optimize(): a build started before is dropped
        self._timer: threading.Timer | None = None
        self._last_write = 0.0
        self._closed = False
        # Set when a failed build left the growing segment unusable: drop this index
        # and load it again from the store.
        self.damaged = False
        # The manifest on disk as this index last read or wrote it (see saved_elsewhere).
        self._manifest_seen: tuple[int, int, int] | None = None
        # Each saved segment's file checksums, by segment name, for the manifest.
        self._checksums: dict[str, Checksums] = {}

    # -- opening and closing -------------------------------------------------------

    def load(self) -> None:
        """Load the saved segments, every row alive until :meth:`reconcile` says.

        A segment that is missing, damaged or foreign is dropped with a
        :class:`LatentDBWarning` (its rows come back from the store); so is everything
        when the manifest itself is, or when it was saved for another spec or by an
        older latentdb (then silently). Temporary files that a killed build left, and
        segments no manifest names, are swept when no build runs.
        """
        if self.folder is None or not self.folder.is_dir():
            return
        path = self.folder / MANIFEST
        manifest: dict[str, Any] | None = None
        damage = None
        if path.exists():
            try:
                manifest = _read_manifest(path)
            except (OSError, ValueError) as error:
                damage = error
        if self.build_lock.acquire(blocking=False):  # else a build may be writing now
            try:
                self._sweep(_segment_names(manifest))
            except OSError:
                pass  # a read-only folder: nothing to sweep, nothing can be built there
            finally:
                self.build_lock.release()
        if damage is not None:
            self._warn_damaged(f"its manifest is unreadable ({damage})")
        if manifest is None:
            return
        self._manifest_seen = _file_token(path)
        if (
            manifest.get("version") != _MANIFEST_VERSION
            or manifest.get("spec") != self.spec.to_dict()
            or manifest.get("reduce") != self.reduce
        ):
            return  # an older format, or built for another spec: rebuild
        sealed = []
        for entry in manifest["segments"]:
            name = str(entry["name"])
            try:
                segment = SealedSegment.load(
                    self.folder / name,
                    metric=self.metric,
                    dimension=self.dimension,
                    checksums=entry["files"],
                    reduce=self.reduce,
                )
            except Exception as error:  # any damage: the store has the truth
                self._warn_damaged(f"segment {name} is damaged ({type(error).__name__}: {error})")
                continue
            sealed.append((name, segment))
            self._checksums[name] = entry["files"]
        self.sealed = sealed
        if sealed:
            self._set_params({str(k): int(v) for k, v in manifest.get("params", {}).items()})
            self.tuned_rows = int(manifest.get("tuned_rows", 0))
            self.tuned_recall = manifest.get("tuned_recall")

    def _warn_damaged(self, what: str) -> None:
        warnings.warn(
            f"the index of {self.folder}: {what}; rebuilding it from the store",
            LatentDBWarning,
            stacklevel=3,
        )

    def _sweep(self, named: set[str]) -> None:
        """Remove what killed, failed or replaced builds left: temporary files and
        folders, and segments not ``named`` by the manifest. Only under the build lock:
        a build elsewhere may be writing its segment right now."""
        assert self.folder is not None and self.build_lock.held()
        for child in self.folder.iterdir():
            leftover = child.name.endswith(".partial")
            orphan = child.is_dir() and child.name.startswith("seg-") and child.name not in named
            if leftover or orphan:
                _remove(child)

    def reconcile(self, stored_keys: KeyArray, stored_sequences: KeyArray) -> KeyArray:
        """Keep alive only the segment rows whose version the store holds, once each.

        Args:
            stored_keys: int64 (n,), ascending: every key of the collection in the store.
            stored_sequences: int64 (n,): the write sequence of each key's version.

        Returns:
            The stored keys no segment holds live: the caller reads them into the
            growing segment.
        """
        live = np.zeros(stored_keys.shape[0], dtype=bool)
        for _, segment in self.sealed:
            segment.reconcile(stored_keys, stored_sequences)
            segment.remove(stored_keys[live])  # a key live in two segments counts once
            _, held = segment.rows_of(stored_keys)
            live |= held
        missing: KeyArray = stored_keys[~live]
        return missing

    def saved_elsewhere(self) -> bool:
        """Whether another index object (here or in another process) has saved a
        manifest since this one last read or wrote it."""
        if self.folder is None:
            return False
        return _file_token(self.folder / MANIFEST) != self._manifest_seen

    def close(self, *, wait: bool) -> None:
        """Stop taking builds; a running one finishes but is not installed.

        Args:
            wait: Wait for it (never while holding the lock: it takes the lock to end).
        """
        with self.lock:  # a seal may be starting its builder thread under the lock
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            builder = self._builder
        if wait and builder is not None and builder is not threading.current_thread():
            builder.join()

    # -- writes (under the lock) ---------------------------------------------------

    def apply(
        self,
        keys: KeyArray,
        vectors: FloatMatrix,
        sequences: npt.NDArray[np.int64] | None,
        deleted: KeyArray,
        sequence: int,
        *,
        adopt: bool = False,
    ) -> None:
        """Mirror committed writes: rows written (with their sequence numbers if known)
        and keys deleted, up to write sequence ``sequence``. ``adopt``: the caller hands
        ``vectors`` over (see :meth:`FlatIndex.upsert`)."""
        if keys.size and self.sealed:
            keep = np.ones(keys.shape[0], dtype=bool)
            for _, segment in self.sealed:
                rows, held = segment.rows_of(keys)
                if sequences is not None:
                    # This very version is in the segment already: nothing changed.
                    current = held.copy()
                    current[held] = segment.sequences[rows[held]] == sequences[held]
                    keep &= ~current
                    held &= ~current
                segment.remove(keys[held])
            if not keep.all():  # a copy of the vectors: only when some rows drop out
                keys, vectors = keys[keep], vectors[keep]
                sequences = None if sequences is None else sequences[keep]
        if keys.size:
            self.growing.upsert(keys, vectors, sequences=sequences, adopt=adopt)
        if deleted.size:
            self.growing.remove(deleted)
            for _, segment in self.sealed:
                segment.remove(deleted)
        if self._touched is not None:
            self._touched.update(keys.tolist())
            self._touched.update(deleted.tolist())
        self.applied = max(self.applied, sequence)
        if len(self.growing) >= self.spec.seal_rows:
            self._schedule_seal()

    # -- sealing, tuning, compaction ------------------------------------------------

    @property
    def live(self) -> int:
        """Live rows in all segments."""
        return len(self.growing) + sum(segment.live for _, segment in self.sealed)

    def _schedule_seal(self) -> None:
        """Seal once writes pause: a bulk load then builds one index, not one per batch."""
        self._last_write = time.monotonic()
        if self._timer is None and not self._closed and self.folder is not None:
            self._arm_timer(_SEAL_QUIET_SECONDS)

    def _arm_timer(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _on_timer(self) -> None:
        with self.lock:
            self._timer = None
            if self._closed:
                return
            remaining = self._last_write + _SEAL_QUIET_SECONDS - time.monotonic()
            overdue = len(self.growing) >= _SEAL_OVERDUE * self.spec.seal_rows
            if remaining > 0 and not overdue:
                self._arm_timer(remaining)
            else:  # quiet, or writes never pause and the exact scan keeps growing
                self._maybe_seal()
                if remaining > 0:
                    self._arm_timer(remaining)

    def _maybe_seal(self) -> None:
        if self._builder is not None or self._closed or self.folder is None:
            return
        if len(self.growing) < self.spec.seal_rows:
            return
        kind = self._kind_to_build()
        if index_kind(kind).exact:
            return
        if _built_rows(len(self.growing)) < min_build_rows(kind, self.reduce):
            return  # a seal too small to train (seal_rows under ivf-pq's 256, say)
        keys, vectors = self.growing.live_rows()  # a snapshot: writes go on meanwhile
        sequences = self.growing.sequences_of(keys)
        built = np.flatnonzero(~_holdout(keys.shape[0]))  # the rest stay growing
        self._touched = set()
        self._builder = threading.Thread(
            target=self._build_in_background,
            args=(kind, keys[built], vectors, sequences[built], built, self._generation),
            name="latentdb-seal",
            daemon=True,
        )
        self._builder.start()

    def _build_in_background(
        self,
        kind: str,
        keys: KeyArray,
        vectors: FloatMatrix,
        sequences: KeyArray,
        rows: npt.NDArray[np.intp],
        generation: int,
    ) -> None:
        try:
            # Spare room for the tuning rows and some written meanwhile, folded in next.
            spare = vectors.shape[0] - rows.shape[0] + rows.shape[0] // 100
            segment = SealedSegment.build(
                kind=kind, spec=self.spec, metric=self.metric, keys=keys, vectors=vectors,
                sequences=sequences, rows=rows, spare=spare, reduce=self.reduce,
            )  # fmt: skip
            if self._closed or generation != self._generation:
                return  # closed, or optimize() rebuilt everything meanwhile
            with self.build_lock:  # before the store's lock, as everywhere
                name = self._write_segment(segment)  # outside the lock: queries go on
                with self.lock:
                    if not self._closed and generation == self._generation:
                        self._install(name, segment, keys)
        except Exception as error:  # a failed build leaves the rows in the growing segment
            warnings.warn(
                f"building an index segment failed ({error}); rows stay searchable exactly",
                LatentDBWarning,
                stacklevel=1,
            )
        finally:
            with self.lock:
                if generation == self._generation:
                    self._builder = None
                    self._touched = None

    def _install(self, name: str, segment: SealedSegment, keys: KeyArray) -> None:
        """Swap a built segment in for the growing rows it was built from (under lock)."""
        touched = np.fromiter(self._touched or (), dtype=np.int64)
        segment.remove(touched)  # changed during the build: the growing copy is newer
        self.growing.remove(keys[~np.isin(keys, touched)])
        self.growing.compact()
        self.sealed.append((name, segment))
        if self._needs_tuning():
            self.tune()
        if self._fold(segment):
            self.sealed[-1] = (self._write_segment(segment), segment)
        self._save()

    def wait(self) -> None:
        """Wait for a background build to finish."""
        builder = self._builder
        if builder is not None:
            builder.join()

    def optimize(self) -> None:
        """Bring every row into one ANN segment (dropping dead rows), tune and save, now.

        One segment with few dead rows is extended with the newer rows; anything else
        is rebuilt whole. A background build still running is overtaken: its result is
        dropped.
        """
        with self.build_lock, self.lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._generation += 1
            self._builder, self._touched = None, None
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

    def _kind_to_build(self) -> str:
        """The kind the next build makes. An ``auto`` collection that has an ANN
        segment keeps its kind when deletes take it back under the threshold: its
        tombstones still get compacted, and it does not flip between kinds."""
        kind = self.spec.built_kind(self.live)
        if index_kind(kind).exact and self.sealed:
            kind = self.sealed[0][1].kind
        if not index_kind(kind).exact and _built_rows(self.live) < min_build_rows(
            kind, self.reduce
        ):
            return EXACT_KIND  # too few rows to train on: they stay exact for now
        return kind

    def _finish_build(self, *, retune: bool) -> None:
        """Tune (if asked), fold the growing rows into the one segment, save."""
        if retune:
            self.tune()
        segment = self.sealed[0][1]
        if self._fold(segment):
            self.sealed = [(self._write_segment(segment), segment)]
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
            if descriptor.exact or descriptor.trains_with(self.reduce) or self.sealed or len(self.growing):
                return False
            self._generation += 1
            held_out = _holdout(count)
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
            self.sealed = [(self._write_segment(segment), segment)]
            for keys, vectors, sequences in held:
                self.growing.upsert(keys, vectors, sequences=sequences)
            self._finish_build(retune=True)
            return True

    def _needs_tuning(self) -> bool:
        return not self.params or self.live >= _RETUNE_GROWTH * max(self.tuned_rows, 1)

    def _fold(self, segment: SealedSegment) -> bool:
        """Move the growing rows that ``segment`` does not hold yet into it (the tuning
        sample, rows written meanwhile), so queries search the graph alone. False when
        nothing moved."""
        keys, vectors = self.growing.live_rows()
        absent = ~segment.holds(keys)  # a replaced row's key stays growing
        if not absent.any():
            return False
        moved = keys[absent]
        segment.extend(moved, vectors[absent], sequences=self.growing.sequences_of(moved))
        self.growing.remove(moved)
        self.growing.compact()
        return True

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
            added &= ~_holdout(keys.shape[0])
        if not added.any():
            return
        moved = keys[added]
        segment.extend(moved, vectors[added], sequences=self.growing.sequences_of(moved))
        self.growing.remove(moved)
        self.growing.compact()
        self.sealed = [(self._write_segment(segment), segment)]

    def _rebuild(self, kind: str) -> None:
        """Build one segment from all live rows, holding a tuning sample out of it."""
        # No copy of the matrix beyond the index itself: rows are picked in key order
        # (and without the tuning sample) as the build copies them out in chunks.
        keys, vectors = self._live_rows(copy=False)
        order = np.argsort(keys, kind="stable")
        held_out = _holdout(keys.shape[0])
        built, held = order[~held_out], order[held_out]
        held_keys, held_vectors = keys[held], vectors[held]  # copies, before growing goes
        sequences = self._sequences_of(keys)
        held_sequences = sequences[held]
        keys, sequences = keys[built], sequences[built]
        growing = self.growing
        # Everything is in the growing segment, in key order (a bulk load): hand its
        # pages back as the build copies them, so the data is not held twice.
        in_place = not self.sealed and vectors.base is not None and _ascending(built)
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
        self.sealed = [(self._write_segment(segment), segment)]
        self.growing = FlatIndex(self.dimension, self.metric)
        self.growing.upsert(held_keys, held_vectors, sequences=held_sequences)

    def set_recall_target(self, target: float) -> None:
        """Change the target and re-tune the search parameters for it."""
        with self.build_lock, self.lock:
            self.recall_target = target
            if self.sealed:
                self.tune()
                self._save()

    def kind(self) -> str:
        """The kind of ANN segment in use, or "flat"."""
        return self.sealed[0][1].kind if self.sealed else EXACT_KIND

    def tune(self, *, k: int = 10) -> None:
        """Pick the cheapest search parameters whose recall@k meets the target.

        Samples rows of the collection as queries (leave-one-out: each query's own row
        is not counted) and compares with exact search over the same rows.
        """
        kind = self.kind()
        if index_kind(kind).exact:
            return
        queries, query_keys, _ = self._tuning_queries(_TUNE_SAMPLE)
        if not query_keys.size:
            return
        truth = _without_self(self.search(queries, k + 1, exact=True)[1], query_keys, k)
        goal = min(self.recall_target + _TUNE_MARGIN, 1.0)
        winners: list[tuple[float, dict[str, int], float]] = []
        widest: tuple[dict[str, int], float] | None = None
        for ladder in index_kind(kind).ladders(reduced=self.reduce is not None):
            for params in ladder:  # cheapest first: the first to meet the goal wins
                found = self.search(queries, k + 1, params=params)[1]
                recall = _recall(_without_self(found, query_keys, k), truth)
                widest = (params, recall)
                if recall >= goal:
                    winners.append((self._seconds_per_query(queries, k, params), params, recall))
                    break
        if winners:
            _, params, recall = min(winners, key=lambda winner: winner[0])
        elif widest is not None:  # nothing meets the goal: search as wide as we know
            params, recall = widest
        self._set_params(dict(params))
        self.tuned_recall, self.tuned_rows = recall, self.live

    def evaluate(
        self, queries: FloatMatrix | None, *, k: int, sample: int
    ) -> tuple[float, float, float, int, str, float | None]:
        """Recall@k of the default search against exact search over the same rows.

        Args:
            queries: float32 (nq, d), or None to sample ``sample`` stored rows
                (leave-one-out: a row's own key does not count).

        Returns:
            (recall, ANN queries per second, exact queries per second, queries used,
            where the queries came from: "given queries", "held-out rows" (rows outside
            the ANN segments, a fair test) or "indexed rows" (rows inside them, which
            find themselves and their graph neighbours easily: recall reads high),
            recall with no candidates beyond the k re-scored (reduced indexes: what the
            reduction alone costs; else None)), speeds timed one query at a time.
        """
        query_keys: KeyArray | None = None
        if queries is None:
            queries, query_keys, held_out = self._tuning_queries(sample)
            source = "held-out rows" if held_out else "indexed rows"
        else:
            source = "given queries"
        reduced = self.reduce is not None and bool(self.sealed)
        if queries.shape[0] == 0:
            return 1.0, 0.0, 0.0, 0, source, 1.0 if reduced else None
        width = k if query_keys is None else k + 1
        truth = self.search(queries, width, exact=True)[1]
        found = self.search(queries, width)[1]
        plain = self.search(queries, width, params={"rerank": 1})[1] if reduced else None
        if query_keys is not None:
            truth = _without_self(truth, query_keys, k)
            found = _without_self(found, query_keys, k)
            if plain is not None:
                plain = _without_self(plain, query_keys, k)
        ann = self._seconds_per_query(queries, k, {}, count=queries.shape[0])
        exact = self._seconds_per_query(queries, k, {}, count=min(50, queries.shape[0]), exact=True)
        unranked = None if plain is None else _recall(plain, truth)
        count = int(queries.shape[0])
        return _recall(found, truth), 1.0 / ann, 1.0 / exact, count, source, unranked

    def _seconds_per_query(
        self,
        queries: FloatMatrix,
        k: int,
        params: dict[str, int],
        *,
        count: int = 50,
        exact: bool = False,
    ) -> float:
        """Time of one-at-a-time queries with ``params`` (how users mostly query)."""
        count = int(min(count, queries.shape[0]))
        started = time.perf_counter()
        for row in range(count):
            self.search(queries[row : row + 1], k, params=params, exact=exact)
        elapsed: float = time.perf_counter() - started
        return elapsed / count

    def _tuning_queries(self, count: int) -> tuple[FloatMatrix, KeyArray, bool]:
        """Rows to use as queries, and whether they are outside the ANN segments: those
        outside (held out of the build) when there are enough, else a sample of all."""
        keys, vectors = self.growing.live_rows()
        if keys.size >= min(_TUNE_MIN_QUERIES, count):
            return np.ascontiguousarray(vectors[:count]), keys[:count], True
        # Too few rows outside the graph: sample indexed rows, an easier test (a row
        # finds itself and its graph neighbours), so recall here reads high.
        return *self._sample_rows(count), False

    def _sample_rows(self, count: int) -> tuple[FloatMatrix, KeyArray]:
        keys, vectors = self._live_rows()
        if keys.size == 0:
            return vectors, keys
        rng = np.random.default_rng(len(keys))
        picked = np.sort(rng.choice(keys.size, size=min(count, keys.size), replace=False))
        return np.ascontiguousarray(vectors[picked], dtype=np.float32), keys[picked]

    def _live_rows(self, *, copy: bool = True) -> tuple[KeyArray, FloatMatrix]:
        """Keys and float32 vectors of every live row, segment by segment.

        Args:
            copy: False may return the growing segment's own arrays (see
                :meth:`FlatIndex.live_rows`).
        """
        growing_keys, growing_vectors = self.growing.live_rows(copy=copy)
        if not self.sealed:
            return growing_keys, growing_vectors
        parts = [(s.keys, s.vectors, np.flatnonzero(s.alive)) for _, s in self.sealed]
        total = sum(rows.shape[0] for _, _, rows in parts) + growing_keys.shape[0]
        keys = np.empty(total, dtype=np.int64)
        vectors = np.empty((total, self.dimension), dtype=np.float32)
        start = 0
        for segment_keys, segment_vectors, rows in parts:  # one copy, no temporaries
            stop = start + rows.shape[0]
            keys[start:stop] = segment_keys[rows]
            np.take(segment_vectors, rows, axis=0, out=vectors[start:stop])
            start = stop
        keys[start:], vectors[start:] = growing_keys, growing_vectors
        return keys, vectors

    def _write_segment(self, segment: SealedSegment) -> str:
        """Save a segment under a new name (no manifest names it yet); return the name."""
        name = f"seg-{uuid.uuid4().hex[:12]}"
        if self.folder is not None:
            partial = self.folder / f"{name}.partial"
            try:
                self._checksums[name] = segment.save(partial)
                os.replace(partial, self.folder / name)
            except (OSError, RuntimeError) as error:  # faiss's writer raises RuntimeError
                shutil.rmtree(partial, ignore_errors=True)
                raise _file_error(error, "writing an index segment") from error
        return name

    def _save(self) -> None:
        """Write the manifest atomically (under the build lock); drop the segment
        folders it no longer names."""
        if self.folder is None:
            return
        sealed = []
        for name, segment in self.sealed:
            if name not in self._checksums or not (self.folder / name).is_dir():
                # Loaded, then swept by another process's build: write it again.
                name = self._write_segment(segment)
            sealed.append((name, segment))
        self.sealed = sealed
        manifest = {
            "version": _MANIFEST_VERSION,
            "spec": self.spec.to_dict(),
            "reduce": self.reduce,
            "segments": [{"name": n, "files": self._checksums[n]} for n, _ in self.sealed],
            "params": self.params,
            "tuned_rows": self.tuned_rows,
            "tuned_recall": self.tuned_recall,
        }
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_manifest(self.folder / MANIFEST, manifest)
        except OSError as error:
            raise _file_error(error, "writing the index manifest") from error
        self._manifest_seen = _file_token(self.folder / MANIFEST)
        names = {name for name, _ in self.sealed}
        self._checksums = {name: self._checksums[name] for name in names}
        if self.build_lock.held():  # else another build may be writing a segment now
            self._sweep(names)

    # -- reads (under the lock) ----------------------------------------------------

    def check_params(self, params: Mapping[str, Any]) -> dict[str, int]:
        """Validate query-time knobs against the index kind in use."""
        allowed = index_kind(self.kind()).search_knobs
        if self.reduce is not None and self.sealed:
            allowed = allowed | {"rerank"}
        out = {}
        for name, value in params.items():
            if name not in allowed:
                raise InvalidArgumentError(
                    f"search parameter {name!r} does not apply to a {self.kind()} index; "
                    f"it takes {sorted(allowed) or 'none'}"
                )
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"search parameter {name!r} must be an int >= 1")
            out[name] = value
        return out

    def search(
        self,
        queries: FloatMatrix,
        k: int,
        *,
        params: Mapping[str, int] | None = None,
        keys: KeyArray | None = None,
        exact: bool = False,
    ) -> Hits:
        """Top-k of each query over all live rows (or only ``keys``), nearest first.

        Returns:
            (distances float32 (nq, k'), keys int64 (nq, k')), k' = min(k, eligible rows).
        """
        nq = queries.shape[0]
        if keys is not None:
            return self._search_subset(queries, k, keys)
        settings = self._settings_for(params)
        if nq == 1 and not exact and self.sealed:
            hits = self._search_one(queries, k, settings)
            if hits is not None:
                return hits
        parts = [self.growing.search(queries, k)]
        for _, segment in self.sealed:
            if exact:
                parts.append(segment.exact(queries, k))
            else:
                parts.append(segment.search(queries, k, settings))
        distances, found = merge_hits(parts, k, nq)
        wanted = min(k, self.live)
        if found.shape[1] < wanted:
            pad = wanted - found.shape[1]
            distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
            found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
        distances, found = distances[:, :wanted], found[:, :wanted]
        short = (found < 0).any(axis=1)
        if short.any() and not exact:
            # The graph found fewer than k live rows (many tombstones): scan those queries.
            distances[short], found[short] = self.search(queries[short], k, exact=True)
        return distances, found

    def search_selected(
        self,
        queries: FloatMatrix,
        k: int,
        selection: Selection,
        *,
        params: Mapping[str, int] | None = None,
    ) -> tuple[Hits, dict[str, int]]:
        """Top-k of each query among the rows a filter allows, by graph (or list) search
        with the disallowed rows masked out; queries that find fewer than k allowed
        rows (when k exist) are answered by an exact scan of the allowed rows instead.

        Returns:
            (hits, the search settings used, with "exact_fallbacks": queries re-scanned).
        """
        nq = queries.shape[0]
        settings = dict(self._settings_for(params))
        if "ef" in settings and not (params and "ef" in params):
            settings["ef"] = filtered_ef(settings["ef"], selection.count / max(self.live, 1))
        if nq == 1 and len(self.sealed) == 1 and not len(self.growing):
            segment = self.sealed[0][1]
            distances, found = segment.search_one(
                queries, k, settings, segment_selection := selection.selected_in(segment)
            )
            if found.shape[1] >= min(k, segment_selection[1]):
                settings["exact_fallbacks"] = 0
                return (distances, found), settings
        parts = []
        if len(self.growing):
            growing_keys, _ = self.growing.live_rows(copy=False)
            chosen = growing_keys[selection.contains(growing_keys)]
            parts.append(self.growing.search(queries, k, keys=chosen))
        for _, segment in self.sealed:
            parts.append(
                segment.search(queries, k, settings, selected=selection.selected_in(segment))
            )
        distances, found = merge_hits(parts, k, nq)
        wanted = min(k, selection.count)
        if found.shape[1] < wanted:
            pad = wanted - found.shape[1]
            distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
            found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
        distances, found = distances[:, :wanted], found[:, :wanted]
        short = (found < 0).any(axis=1)
        settings["exact_fallbacks"] = int(short.sum())
        if short.any():
            distances[short], found[short] = self._search_subset(
                queries[short], k, selection.keys()
            )
        return (distances, found), settings

    def search_settings(self, params: Mapping[str, int] | None = None) -> dict[str, int]:
        """The settings a search with ``params`` uses (checked; tuned values underneath)."""
        return self._settings_for(params)

    def _set_params(self, params: dict[str, int]) -> None:
        """Install tuned parameters (the settings are derived again on next use)."""
        self.params, self._settings = params, None

    def _settings_for(self, params: Mapping[str, Any] | None) -> dict[str, int]:
        """The settings of a search with ``params`` (checked) over the defaults: the same
        dict object for the same knobs, so segments reuse their faiss parameters."""
        kind = self.kind()
        settings = self._settings
        if settings is None or kind != self._settings_kind:
            defaults = dict(index_kind(kind).search_defaults)
            if self.sealed and self.sealed[0][1].projection is not None:
                defaults["rerank"] = self.sealed[0][1].default_rerank
            settings = self._settings = {**defaults, **self.params}
            self._settings_kind = kind
            self._overrides.clear()
        if not params:
            return settings
        key = tuple(params.items())
        merged = self._overrides.get(key)
        if merged is None:
            if len(self._overrides) >= 64:
                self._overrides.clear()
            merged = self._overrides[key] = {**settings, **self.check_params(params)}
        return merged

    def _search_one(self, query: FloatMatrix, k: int, settings: dict[str, int]) -> Hits | None:
        """One query (1, d): the path of most user queries, kept to few numpy calls.

        The growing segment's rows are merged in only where they beat the sealed
        segments' k-th distance. None when fewer than k live rows were found (the
        caller falls back to the general path, which scans such queries).
        """
        if len(self.sealed) == 1:
            distances, keys = self.sealed[0][1].search_one(query, k, settings)
            if not len(self.growing):  # after optimize(): the graph's answer as it is
                if distances.shape[1] < k and distances.shape[1] < self.live:
                    return None
                return distances, keys
            flat_distances, flat_keys, ordered = distances[0], keys[0], True
        else:
            parts = [segment.search_one(query, k, settings) for _, segment in self.sealed]
            flat_distances = np.concatenate([part[0][0] for part in parts])
            flat_keys = np.concatenate([part[1][0] for part in parts])
            ordered = False
        if len(self.growing):
            bound = np.inf
            if flat_distances.size >= k:
                kth = (
                    flat_distances[k - 1] if ordered else np.partition(flat_distances, k - 1)[k - 1]
                )
                bound = float(kth)
            near, near_keys = self.growing.nearer_than(query[0], bound, k)
            if near.size:
                flat_distances = np.concatenate((flat_distances, near))
                flat_keys = np.concatenate((flat_keys, near_keys))
                ordered = False
        if flat_distances.size < k and flat_distances.size < self.live:
            return None
        if not ordered:
            order = np.argsort(flat_distances, kind="stable")[:k]
            flat_distances, flat_keys = flat_distances[order], flat_keys[order]
        return flat_distances[None, :], flat_keys[None, :]

    def _search_subset(self, queries: FloatMatrix, k: int, keys: KeyArray) -> Hits:
        """Exact search over the given keys (a pre-filtered candidate set)."""
        keys = np.unique(np.asarray(keys, dtype=np.int64))
        parts = [self.growing.search(queries, k, keys=keys)]
        for _, segment in self.sealed:
            rows, held = segment.rows_of(keys)
            rows = rows[held]
            if rows.size:
                matrix = np.ascontiguousarray(segment.vectors[rows], dtype=np.float32)
                distances, positions = exact_search(queries, matrix, k, self.metric)
                parts.append((distances, segment.keys[rows][positions]))
        return merge_hits(parts, k, queries.shape[0])

    def vectors_of(self, keys: KeyArray) -> FloatMatrix:
        """Stored vectors of live ``keys`` (all must be live)."""
        out = np.empty((keys.shape[0], self.dimension), dtype=np.float32)
        in_growing = self.growing.holds(keys)
        if in_growing.any():
            out[in_growing] = self.growing.vectors_of(keys[in_growing])
        for _, segment in self.sealed:
            rows, held = segment.rows_of(keys)
            if held.any():
                out[held] = segment.vectors[rows[held]]
        return out

    def _sequences_of(self, keys: KeyArray) -> KeyArray:
        """The write sequences of live ``keys`` (all must be live)."""
        out = np.zeros(keys.shape[0], dtype=np.int64)
        in_growing = self.growing.holds(keys)
        if in_growing.any():
            out[in_growing] = self.growing.sequences_of(keys[in_growing])
        for _, segment in self.sealed:
            rows, held = segment.rows_of(keys)
            if held.any():
                out[held] = segment.sequences[rows[held]]
        return out

    def status(self) -> IndexStatus:
        """Counts and settings for :meth:`Collection.index_status`."""
        kind = self.kind()
        return IndexStatus(
            kind=kind,
            spec=self.spec.kind,
            indexed=sum(segment.live for _, segment in self.sealed),
            pending=len(self.growing),
            deleted=sum(segment.dead for _, segment in self.sealed),
            segments=len(self.sealed),
            building=self._builder is not None,
            params=dict(self._settings_for(None)),
            recall_target=self.recall_target,
            tuned_recall=self.tuned_recall,
        )


def _file_error(error: OSError | RuntimeError, doing: str) -> StorageError:
    """The named error for an index file that could not be written."""
    if not isinstance(error, OSError):
        return StorageError(f"{doing} failed: {error}")
    said = f"{doing} failed: {error.strerror or error}"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ReadOnlyError(f"{said}; the index folder is read-only, only reads are possible")
    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return DiskFullError(f"{said}; the disk is full (the store is untouched)")
    return StorageError(said)


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest, whose own checksum (over the rest of it) must match."""
    manifest = json.loads(path.read_text())
    if not isinstance(manifest, dict):
        raise ValueError("the manifest is not a JSON object")
    expected = manifest.pop("checksum", None)
    if manifest.get("version") == _MANIFEST_VERSION and expected != _manifest_checksum(manifest):
        raise ValueError("the manifest fails its checksum")
    return manifest


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` with its checksum through a temporary file of a unique name."""
    text = json.dumps({**manifest, "checksum": _manifest_checksum(manifest)})
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        with temporary.open("w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _manifest_checksum(manifest: dict[str, Any]) -> int:
    return zlib.crc32(json.dumps(manifest, sort_keys=True).encode())


def _segment_names(manifest: dict[str, Any] | None) -> set[str]:
    """The segment folders a manifest names (none when there is none, or it is odd)."""
    try:
        return {str(entry["name"]) for entry in (manifest or {}).get("segments", [])}
    except (KeyError, TypeError):
        return set()


def _file_token(path: Path) -> tuple[int, int, int] | None:
    """Identifies one version of a file (replaced files get a new inode)."""
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_ino, status.st_mtime_ns, status.st_size)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _ascending(rows: npt.NDArray[np.intp]) -> bool:
    return bool(np.all(rows[1:] > rows[:-1]))


def _held_out_count(rows: int) -> int:
    """How many of ``rows`` rows :func:`_holdout` keeps out of a build."""
    count = min(_TUNE_SAMPLE, rows // 10)
    return count if count >= _TUNE_MIN_QUERIES else 0


def _built_rows(rows: int) -> int:
    """How many of ``rows`` rows a build indexes (the rest are tuning queries)."""
    return rows - _held_out_count(rows)


def _holdout(rows: int) -> npt.NDArray[np.bool_]:
    """Which of ``rows`` rows to keep out of an ANN build as tuning queries (fixed seed):
    a tenth of them, at most ``_TUNE_SAMPLE``; none if that is under ``_TUNE_MIN_QUERIES``.
    """
    mask = np.zeros(rows, dtype=bool)
    count = _held_out_count(rows)
    if count:
        mask[np.random.default_rng(rows).choice(rows, count, replace=False)] = True
    return mask


def _without_self(found: KeyArray, query_keys: KeyArray, k: int) -> KeyArray:
    """Each row's hits minus the query's own key, first k (padded with -1)."""
    out = np.full((found.shape[0], k), -1, dtype=np.int64)
    for row, (hits, own) in enumerate(zip(found, query_keys, strict=True)):
        others = hits[(hits != own) & (hits >= 0)][:k]
        out[row, : others.size] = others
    return out


def _recall(found: KeyArray, truth: KeyArray) -> float:
    """Mean fraction of each row's true (non-missing) neighbours that were found."""
    hits = total = 0
    for got, want in zip(found, truth, strict=True):
        want = want[want >= 0]
        hits += np.intersect1d(got, want).size
        total += want.size
    return hits / total if total else 1.0
