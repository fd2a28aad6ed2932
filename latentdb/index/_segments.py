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

import math
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import faiss
import numpy as np
import numpy.typing as npt

from latentdb.errors import LatentDBWarning
from latentdb.index._compaction import UNSAVED, Compaction
from latentdb.index._flat import FlatIndex
from latentdb.index._kinds import FILTERED_EF_MAX, filtered_ef, index_kind
from latentdb.index._live import UNKNOWN, QuerySampler
from latentdb.index._lock import BuildLock, claim, release_claim
from latentdb.index._manifest import PackOwner, SegmentFiles
from latentdb.index._sealed import BuildCancelled, SealedSegment, min_build_rows
from latentdb.index._sealing import SEAL_OVERDUE, SEAL_QUIET_SECONDS, Clock, SealingPolicy
from latentdb.index._search import FloatMatrix, IndexStatus, KeyArray, Selection
from latentdb.index._spec import IndexSpec
from latentdb.index._tuning import (
    Trial,
    built_rows,
    exact_keys,
    holdout,
    live_recall,
    tune_on_queries,
)
from latentdb.space import Metric

__all__ = [
    "FILTERED_EF_MAX",
    "WRITE_BACKLOG_ROWS",
    "WRITE_STALL_SECONDS",
    "IndexStatus",
    "SegmentedIndex",
    "Selection",
    "filtered_ef",
    "live_retune_due",
    "merge_tier",
]

# How long writes must pause before a seal (read when an index is made: tests and the
# lifecycle worker set it here to seal sooner).
_SEAL_QUIET_SECONDS = SEAL_QUIET_SECONDS
# Kept for tests that count the rows a build indexes.
_built_rows = built_rows
# OpenMP threads of a background build: all cores but one.
_BACKGROUND_BUILD_THREADS = max(
    1,
    (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) - 1,
)
# Rows the growing segment seals at once a graph holds rows (see _seal_size).
DELTA_SEAL_ROWS = 2_500
# Sealed segments merged into one once this many are within MERGE_SPREAD x in size.
MERGE_SEGMENTS = 4
MERGE_SPREAD = 3
# The build beam of a background build beside a graph (a delta, or a merge) of at most
# SMALL_BUILD_ROWS rows: on 2,500 and 10,000 PyPI rows (M 32, one thread),
# efConstruction 64 builds 2.7x and 3.5x faster than 200 (90 and 166 us a row), and the
# graph finds 0.986 and 0.974 of the top 10 at ef 48 (0.992 and 0.990 at 200). Under
# steady writes the builds are what the CPU does most: with merges of 40k rows at 200,
# bench/server.py's mixed phase ended with 14 segments (merges trailing the writes) and
# query p99 188 ms; at 64, 8 segments and 118 ms, recall unchanged (0.920 against
# 0.911). optimize() and larger merges build with the spec's beam.
SMALL_BUILD_EF_CONSTRUCTION = 64
# A write waits (up to WRITE_STALL_SECONDS) while more rows than this wait for a graph:
# under writes faster than the builds, the exact scan of the growing segment grew to
# 23k rows in bench/server.py's mixed phase and took most of the queries' time.
WRITE_BACKLOG_ROWS = 2 * DELTA_SEAL_ROWS
WRITE_STALL_SECONDS = 10.0
SMALL_BUILD_ROWS = 50_000
# Live recall (see _live): measured once this many queries are recorded, again after
# each LIVE_MEASURE_EVERY more; re-tuned on them when it is below the target, or above
# target + LIVE_WINDOW by more than its confidence bound (the window issue 18 asks of
# tuning): see live_retune_due.
LIVE_MIN_QUERIES = 100
LIVE_MEASURE_EVERY = 50
LIVE_K = 10
# ... and at most once in this many seconds (each measurement searches every recorded
# query; an exact scan only for those recorded since, while the rows stay the same).
LIVE_EVERY_SECONDS = 60.0
LIVE_WINDOW = 0.015
_LIVE_Z = 2.0
LIVE_SOURCE = "recorded queries"


class _Sized(Protocol):
    @property
    def live(self) -> int: ...


_Segment = TypeVar("_Segment", bound=_Sized)


def merge_tier(segments: Sequence[_Segment]) -> list[_Segment]:
    """The segments to merge next: the smallest size tier holding at least
    :data:`MERGE_SEGMENTS` (at most twice that), a tier being the segments from one up
    to :data:`MERGE_SPREAD` times its live rows; empty when no tier is full. Every
    tier counts, not only the smallest segment's: with a new delta always beside them,
    merged segments would otherwise never merge again."""
    by_size = sorted(segments, key=lambda segment: segment.live)
    for start, first in enumerate(by_size):
        bound = MERGE_SPREAD * max(first.live, 1)
        tier = [segment for segment in by_size[start:] if segment.live < bound]
        if len(tier) >= MERGE_SEGMENTS:
            return tier[: 2 * MERGE_SEGMENTS]
    return []


class SegmentedIndex(Compaction):
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
        clock: Clock | None = None,
        packs: PackOwner | None = None,
    ) -> None:
        """
        Args:
            lock: The store's lock, held by every caller of a write or a search.
            build_lock: Serializes builds of ``folder`` across threads and processes
                (shared by every index object of the folder in this process).
            reduce: Sealed segments index PCA projections of the rows to this many
                dimensions and re-score candidates with the rows themselves (the
                growing segment is always exact). None: the full dimension.
            clock: Time for the sealing policy (the system's monotonic clock if None;
                tests pass a fake one).
            packs: Who adopts the graphs' float rows as its copy of them (the store),
                so that they are kept once (None: in the graph files).
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
        self._builder: threading.Thread | None = None  # a seal of growing rows
        self._touched: set[int] | None = None  # keys written while it runs
        # A merge of sealed segments runs beside seals: a long merge that held the one
        # builder let the growing segment reach 23k rows (bench/server.py, mixed).
        self._merger: threading.Thread | None = None
        self._merge_touched: set[int] | None = None
        # The folder's build claim, held while either runs (see _claim).
        self._claimed: int | None = None
        self._claims = 0
        self._generation = 0  # bumped by optimize(): a build started before is dropped
        self._closed = False
        self.sealing = SealingPolicy(
            lock=lock,
            seal=self._maybe_seal,
            overdue=self._overdue,
            clock=clock,
            quiet_seconds=_SEAL_QUIET_SECONDS,
        )
        # Set when a failed build left the growing segment unusable: drop this index
        # and load it again from the store.
        self.damaged = False
        self.files = SegmentFiles(folder, self.build_lock, packs)
        self.readers = deque()
        self.sampler = QuerySampler(
            dimension, rate=spec.sample_rate, per_minute=spec.sample_per_minute,
            capacity=spec.sample_capacity, folder=folder,
        )  # fmt: skip
        if self.sampler.measured is not None:  # the last measurement, saved with them
            self.live_recall, self.live_error, self.live_queries = self.sampler.measured
        self._live: threading.Thread | None = None
        self._live_start = threading.Lock()
        self._live_at = -math.inf  # when the last measurement started
        self.publish()

    # -- opening and closing -------------------------------------------------------

    def load(self, reuse: Mapping[str, SealedSegment] | None = None) -> None:
        """Load the saved segments, every row alive until :meth:`reconcile` says (those
        named in ``reuse``, another index's of this folder, are taken from it).

        A segment that is missing, damaged or foreign is dropped with a
        :class:`LatentDBWarning` (its rows come back from the store); so is everything
        when the manifest itself is, or when it was saved for another spec or by an
        older latentdb (then silently). Temporary files that a killed build left, and
        segments no manifest names, are swept when no build runs.
        """
        self.sealed, saved = self.files.load(
            spec=self.spec, reduce=self.reduce, metric=self.metric, dimension=self.dimension,
            reuse=reuse,
        )  # fmt: skip
        if self.sealed:
            self._set_params(saved.params)
            self.tuned_rows, self.tuned_recall = saved.tuned_rows, saved.tuned_recall
            self.restore_curve(saved.curve)
        self.publish()

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
        self.publish()
        return missing

    def live_versions(self) -> tuple[KeyArray, KeyArray]:
        """(keys ascending, the write sequence of each) of every live row, growing or
        sealed: once caught up with the store, what :meth:`reconcile` would read there
        (an index of another process's segments is reconciled against these)."""
        keys, _ = self.growing.live_rows(copy=False)
        key_parts, sequence_parts = [keys], [self.growing.sequences_of(keys)]
        for _, segment in self.sealed:
            alive = np.flatnonzero(segment.alive)
            key_parts.append(segment.keys[alive])
            sequence_parts.append(segment.sequences[alive])
        all_keys = np.concatenate(key_parts)
        order = np.argsort(all_keys, kind="stable")
        return all_keys[order], np.concatenate(sequence_parts)[order]

    def adopt_packs(self) -> None:
        """Have the store adopt the saved segments' packs it has not yet (see
        :class:`PackOwner`): after a bulk build, whose save ran inside the store's read
        of every row."""
        with self.build_lock, self.lock:
            self.files.adopt_packs(self.sealed)

    def saved_elsewhere(self) -> bool:
        """Whether another index object (here or in another process) has saved a
        manifest since this one last read or wrote it."""
        return self.files.saved_elsewhere()

    def close(self, *, wait: bool) -> None:
        """Stop taking builds; a running one finishes but is not installed.

        Args:
            wait: Wait for it (never while holding the lock: it takes the lock to end).
        """
        with self.lock:  # a seal may be starting its builder thread under the lock
            self._closed = True
            self.sealing.stop()
            builders = (self._builder, self._merger, self._live)
        for builder in builders:
            if wait and builder is not None and builder is not threading.current_thread():
                builder.join()
        if self.sampler.fresh:
            self.sampler.save()  # recorded since the last measurement

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
        if len(self.sealed) > 1 and any(not segment.live for _, segment in self.sealed):
            # A segment whose every row was deleted or replaced (a delta of rows written,
            # then deleted) costs each query a search for nothing: no longer searched,
            # and swept when the next manifest leaves it out.
            self.sealed = [entry for entry in self.sealed if entry[1].live] or self.sealed[:1]
        for touched in (self._touched, self._merge_touched):
            if touched is not None:
                touched.update(keys.tolist())
                touched.update(deleted.tolist())
        self.applied = max(self.applied, sequence)
        if self.folder is not None and (
            len(self.growing) >= self._seal_size() or len(self.sealed) > 2
        ):
            self.sealing.wrote()
        self.publish()

    # -- sealing ----------------------------------------------------------------------

    def _seal_size(self) -> int:
        """Rows the growing segment collects before it is sealed: ``spec.seal_rows`` for
        the first segment; once a graph holds rows, a delta of :data:`DELTA_SEAL_ROWS`
        (or what the kind needs to train), so that under steady writes the exact scan
        that every query pays stays short. Deltas are merged by size tier."""
        if not self.sealed:
            return self.spec.seal_rows
        trains = 2 * min_build_rows(self.sealed[0][1].kind, self.reduce)
        return min(self.spec.seal_rows, max(DELTA_SEAL_ROWS, trains))

    def _overdue(self) -> bool:
        """Whether the growing segment is too big to wait for writes to pause: a delta
        (see :meth:`_seal_size`) is sealed as soon as it is full."""
        times = SEAL_OVERDUE if not self.sealed else 1
        return len(self.growing) >= times * self._seal_size()

    def _maybe_seal(self) -> None:
        """Start a background seal of the growing segment if one is due, and a merge of
        sealed segments if one is (under the lock)."""
        if self._closed or self.folder is None:
            return
        if self.saved_elsewhere():  # another process's segments: the engine loads them
            self.sealing.retry()  # (on its next catch-up) before this index builds
            return
        self._maybe_merge()
        if self._builder is not None or len(self.growing) < self._seal_size():
            return
        kind = self._kind_to_build()
        if index_kind(kind).exact:
            return
        if built_rows(len(self.growing)) < min_build_rows(kind, self.reduce):
            return  # a seal too small to train (seal_rows under ivf-pq's 256, say)
        if not self._claim():  # another process is building one: its segment will be
            self.sealing.retry()  # loaded, or this index builds once it is done
            return
        keys, vectors = self.growing.live_rows()  # a snapshot: writes go on meanwhile
        sequences = self.growing.sequences_of(keys)
        if not self.sealed or self._needs_tuning():  # tuning rows stay growing
            built = np.flatnonzero(~holdout(keys.shape[0]))
        else:  # a delta beside a tuned graph: every row
            built = np.arange(keys.shape[0])
        self._touched = set()
        self._builder = threading.Thread(
            target=self._build_in_background,
            args=(kind, keys[built], vectors, sequences[built], built, self._generation),
            name="latentdb-seal",
            daemon=True,
        )
        self._builder.start()
        self.publish()

    def _maybe_merge(self) -> None:
        """Start a background merge of the smallest size tier of sealed segments that
        holds :data:`MERGE_SEGMENTS` of them (under the lock): a tier is the segments
        from one up to :data:`MERGE_SPREAD` times its live rows, so each row is rebuilt
        about log(rows / delta) times, and a query searches a few segments. Once writes
        pause, every segment but the largest is merged into one, full tier or not."""
        if len(self.sealed) < 3 or self._merger is not None or self._closed:
            return
        tier = merge_tier([segment for _, segment in self.sealed])
        if not tier and self.sealing.quiet():  # (three segments or more, as above)
            # Writes paused with deltas beside the graph (a burst that ended short of a
            # full tier): each costs every query a search until optimize(). After 80
            # adds of 100 rows to 100k PyPI rows, 100k + 3.4k + 3.5k rows in segments
            # took a query 1.78 ms against 0.54 ms before the writes.
            tier = sorted((segment for _, segment in self.sealed), key=lambda s: s.live)[:-1]
        if not tier:
            return
        kind = self.sealed[0][1].kind
        parts = [segment.live_rows() for segment in tier]
        keys = np.concatenate([part[0] for part in parts])
        if built_rows(keys.shape[0]) < min_build_rows(kind, self.reduce):
            return
        if not self._claim():
            return  # another process is building one: its segment will be loaded
        vectors = np.concatenate([part[1] for part in parts])
        sequences = np.concatenate([s.sequences[np.flatnonzero(s.alive)] for s in tier])
        order = np.argsort(keys, kind="stable")
        self._merge_touched = set()
        self._merger = threading.Thread(
            target=self._build_in_background,
            args=(kind, keys[order], vectors[order], sequences[order], None, self._generation),
            kwargs={"replaces": tuple(tier)},
            name="latentdb-merge",
            daemon=True,
        )
        self._merger.start()
        self.publish()

    def _claim(self) -> bool:
        """Take the folder's build claim for one more build of this index (under the
        lock): the seal and the merge of one index share it, another process's builds
        wait for it (its flock is taken once, without waiting)."""
        if self._claims == 0:
            assert self.folder is not None
            self._claimed = claim(self.folder)
            if self._claimed is None:
                return False
        self._claims += 1
        return True

    def _unclaim(self) -> None:
        """Give back one build's share of the claim (under the lock)."""
        self._claims -= 1
        if self._claims == 0 and self._claimed is not None:
            release_claim(self._claimed)
            self._claimed = None

    def _build_in_background(
        self,
        kind: str,
        keys: KeyArray,
        vectors: FloatMatrix,
        sequences: KeyArray,
        rows: npt.NDArray[np.intp] | None,
        generation: int,
        *,
        replaces: tuple[SealedSegment, ...] = (),
    ) -> None:
        """Build a segment of ``rows`` of ``vectors`` (all if None) and install it in
        place of the growing rows it holds, or of the segments it ``replaces``."""
        # OpenMP's thread count is this thread's own setting: background builds leave a
        # core to queries (a query is one thread; a build would take every core).
        faiss.omp_set_num_threads(_BACKGROUND_BUILD_THREADS)
        try:
            # Spare room for the tuning rows and some written meanwhile, folded in next.
            built = vectors.shape[0] if rows is None else rows.shape[0]
            spare = vectors.shape[0] - built + built // 100
            spec = self.spec
            if (replaces or len(self.sealed) > 0) and built <= SMALL_BUILD_ROWS:
                beam = min(spec.ef_construction, SMALL_BUILD_EF_CONSTRUCTION)
                spec = replace(spec, ef_construction=beam)

            def moot() -> bool:  # closed, or optimize() rebuilds everything meanwhile
                return self._closed or generation != self._generation

            segment = SealedSegment.build(
                kind=kind, spec=spec, metric=self.metric, keys=keys, vectors=vectors,
                sequences=sequences, rows=rows, spare=spare, reduce=self.reduce,
                cancelled=moot,
            )  # fmt: skip
            if moot():
                return
            with self.build_lock:  # before the store's lock, as everywhere
                if self.saved_elsewhere():
                    return  # another process saved meanwhile: the engine loads its work
                name = self._write_segment(segment)  # outside the lock: queries go on
                with self.lock:
                    installed = not moot()
                    if installed:
                        if replaces:
                            self._install_merged(name, segment, replaces)
                        else:
                            self._install(name, segment, keys)
                        saved = self.sealed
                if installed:
                    # The store takes the new pack over outside the lock, a transaction
                    # per chunk of rows: writers (and other processes' catch-ups) go on
                    # between them, where they waited ~0.1 s per 20k rows adopted.
                    self.files.adopt_packs(saved)
        except BuildCancelled:
            # Closed, or optimize() rebuilds everything: the build stopped at its next
            # chunk instead of taking a core from optimize()'s own build for minutes
            # (at 1M rows, a seal started during the ingest ran beside it).
            return
        except Exception as error:  # a failed build leaves the rows in the growing segment
            warnings.warn(
                f"building an index segment failed ({error}); rows stay searchable exactly",
                LatentDBWarning,
                stacklevel=1,
            )
        finally:
            with self.lock:
                self._unclaim()
                if generation == self._generation:
                    if replaces:
                        self._merger, self._merge_touched = None, None
                    else:
                        self._builder, self._touched = None, None
                    self._maybe_seal()  # the next seal or merge, if one is due
                    self.publish()

    def _install_merged(
        self, name: str, segment: SealedSegment, replaces: tuple[SealedSegment, ...]
    ) -> None:
        """Swap a merged segment in for the segments it was built from (under lock)."""
        touched = np.fromiter(self._merge_touched or (), dtype=np.int64)
        segment.remove(touched)  # changed during the build: masked in the old ones too
        kept = [(n, s) for n, s in self.sealed if not any(s is old for old in replaces)]
        if len(kept) != len(self.sealed) - len(replaces):
            return  # a replaced segment is gone (optimize() ran): the merge is moot
        self.sealed = [*kept, (name, segment)]
        self.sealed.sort(key=lambda entry: -entry[1].live)  # the largest first
        self._save(adopt=False)  # adopted after the lock is let go
        self.publish()

    def _install(self, name: str, segment: SealedSegment, keys: KeyArray) -> None:
        """Swap a built segment in for the growing rows it was built from (under lock)."""
        touched = np.fromiter(self._touched or (), dtype=np.int64)
        segment.remove(touched)  # changed during the build: the growing copy is newer
        self.growing.remove(keys[~np.isin(keys, touched)])
        self.growing.compact()
        self.sealed.append((name, segment))
        if self._needs_tuning():
            self.tune()
        if len(self.sealed) == 1:
            # The first graph takes in the tuning rows and those written meanwhile, so
            # queries search it alone. A delta leaves them growing for the next delta:
            # adding them here, under the lock, stalled writers and other processes'
            # queries for seconds under steady writes.
            folded = self._fold(segment)
            if folded is not None:
                self.sealed[-1] = (UNSAVED, folded)  # written by the save below
        self._save(adopt=False)  # adopted after the lock is let go
        self.publish()

    def backlog(self) -> int:
        """Rows that queries scan exactly because no graph holds them yet, once a graph
        exists and a build that takes them in runs or is due (here, or in another
        process that holds the build claim); else 0. Writers wait while it is large
        (:data:`WRITE_BACKLOG_ROWS`)."""
        if not self.sealed or (self._builder is None and not self.sealing.pending):
            return 0
        return len(self.growing)

    def wait(self) -> None:
        """Wait for a background build to finish."""
        with self.lock:  # a builder is made and started under it: never seen unstarted
            builders = (self._builder, self._merger)
        for builder in builders:
            if builder is not None and builder is not threading.current_thread():
                builder.join()

    # -- live recall (see _live) --------------------------------------------------

    def sampled(self) -> None:
        """A query was recorded (:meth:`QuerySampler.offer` said so): measure the live
        recall in a background thread once enough are new. Called off the lock."""
        sampler = self.sampler
        if sampler.fresh < LIVE_MEASURE_EVERY or len(sampler) < LIVE_MIN_QUERIES:
            return
        if time.monotonic() - self._live_at < LIVE_EVERY_SECONDS:
            return
        self._start_live()

    def _start_live(self) -> None:
        if self._closed or not self._live_start.acquire(blocking=False):
            return
        try:
            if self._live is not None:
                return
            self._live = threading.Thread(
                target=self._measure_in_background, name="latentdb-live-recall", daemon=True
            )
            self._live.start()
        finally:
            self._live_start.release()

    def take_live(self, old: SegmentedIndex) -> None:
        """Go on with the queries ``old`` (the index this one replaces) recorded and
        its measurement on them: some may not be saved yet."""
        self.sampler = old.sampler
        self.live_recall, self.live_error = old.live_recall, old.live_error
        self.live_queries, self._live_at = old.live_queries, old._live_at

    def clear_recorded(self) -> int:
        """Forget the recorded queries and the live measurement on them; how many."""
        count = len(self.sampler)
        self.sampler.clear()
        self.live_recall, self.live_error, self.live_queries = None, 0.0, 0
        return count

    def _install_tuning(
        self, chosen: Trial, source: str, queries: int, reached: bool, trials: Iterable[Trial]
    ) -> None:
        super()._install_tuning(chosen, source, queries, reached, trials)
        if source != LIVE_SOURCE and len(self.sampler) >= LIVE_MIN_QUERIES:
            self._start_live()  # tuned on rows: check the choice on what users ask

    def _measure_in_background(self) -> None:
        try:
            self.measure_live()
        except Exception as error:  # the queries go on; the next sample tries again
            warnings.warn(f"measuring live recall failed: {error}", LatentDBWarning, stacklevel=1)
        finally:
            self._live = None

    def measure_live(self, *, retune: bool = True) -> None:
        """Measure recall@10 on the recorded queries against an exact scan, on the
        published snapshot (no lock held meanwhile); with ``retune``, when
        :func:`live_retune_due` says so, tune the knobs on them and install the choice
        (unless the segments changed meanwhile: the next measurement decides)."""
        sampler = self.sampler
        queries, truth, stamp = sampler.snapshot()
        sampler.taken()
        self._live_at = time.monotonic()
        view = self.view
        if self._closed or view is None or not len(queries):  # closed: maybe deleted
            return
        if not view.sealed:  # searched exactly: nothing to measure
            self._measured(1.0, 0.0, len(queries))
            return
        if truth is None or sampler.truth_applied != view.applied:  # the rows changed
            truth = exact_keys(view, queries, LIVE_K)
        else:  # only the queries recorded since the last measurement
            new = truth[:, 0] == UNKNOWN
            if new.any():
                truth[new] = exact_keys(view, queries[new], LIVE_K)
        sampler.keep_truth(truth, view.applied, stamp)
        truth, measured = live_recall(view, queries, LIVE_K, truth)
        self._measured(measured.recall, measured.error, len(queries))
        target = view.recall_target
        if not retune or not live_retune_due(measured.recall, measured.error, target, len(queries)):
            return
        tuned = tune_on_queries(view, queries, truth, LIVE_K, target)
        if tuned is None:
            return
        chosen, reached, trials = tuned
        with self.build_lock, self.lock:
            same = [name for name, _ in self.sealed] == [name for name, _ in view.sealed]
            if self._closed or not same or self.recall_target != target:
                return
            self._install_tuning(chosen, LIVE_SOURCE, len(queries), reached, trials)
            self._save()
            self.publish()
        self._measured(chosen.recall, chosen.error, len(queries))

    def _measured(self, recall: float, error: float, queries: int) -> None:
        """Report a live measurement, and save it with the recorded queries."""
        self.live_recall, self.live_error, self.live_queries = recall, error, queries
        self.sampler.measured = (recall, error, queries)
        if not self._closed:
            self.sampler.save()

    def set_recall_target(self, target: float) -> None:
        """Change the target and re-tune the search parameters for it."""
        with self.build_lock, self.lock:
            self.recall_target = target
            if self.sealed:
                self.tune()
                self._save()
            self.publish()


def live_retune_due(recall: float, error: float, target: float, queries: int) -> bool:
    """Whether a live measurement (mean recall and its standard error over ``queries``
    recorded queries) calls for tuning again on them: with enough queries, when the
    recall is below the target at all, or above target + LIVE_WINDOW by more than
    ``_LIVE_Z`` standard errors.

    Below the target, noise is no excuse: a re-tune picks the cheapest setting whose
    recall less two standard errors meets the target, so the next measurement of the
    same queries lands above it (at 1M rows the bench's first 500 real queries re-tuned
    to 0.962 and all 1,000 then measured 0.948: within two standard errors of 0.95, and
    left there by the rule before this one).
    """
    if queries < LIVE_MIN_QUERIES:
        return False
    return recall < target or recall - _LIVE_Z * error > target + LIVE_WINDOW
