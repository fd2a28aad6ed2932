"""The query planner: how a filtered query is answered, and the record of it
(``query(..., explain=True)``).

The filter is evaluated over in-memory metadata columns (``_columns``) into the set of
allowed rows, and the planner answers with a plan whose recall was measured, never
guessed:

- few allowed rows (``EXACT_ROWS``) are scanned exactly: the scan costs in proportion
  to them, and nothing is faster and surer;
- more are scanned exactly too until the planner has measured, on the queries users
  asked, a setting of the collection's graph (the others masked out) or of a graph of
  the filter's own rows that reaches the recall target (``_tuning``). The measuring runs
  in a background thread; a setting that cannot beat the scan's speed, or the target, is
  not taken, and the scan stays. A measurement holds while the sealed segments and the
  filter's rows in them stay about the same; else it is taken again.

A filter on a metadata key no earlier filter named first needs that key's column. On a
small collection it is built in the query; on a large one in a background thread, and
meanwhile the filter is answered exactly without it: the rows nearest the query, by an
exact scan, are tested in SQL until k pass (``_plans.ranked_search``). Whatever the plan, k
results come back whenever k rows match. Built columns are saved beside the index
(``columns.npz``; ``optimize()`` builds and saves every metadata key's), so that a process
that opens the collection later takes them from there and applies only the writes since.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.errors import LatentDBWarning
from latentdb.index import (
    SealedSegment,
    SegmentSearch,
    index_kind,
)
from latentdb.query._columns import COLUMNS_FILE, MetadataColumns, Unsupported, write_columns
from latentdb.query._plans import (
    MATRIX_BYTES,
    FilterPlan,
    Measured,
    exact_batch,
    ranked_search,
    scan,
    with_growing,
    with_segments,
)
from latentdb.query._selection import (
    KeySelection,
    MaskSelection,
    Selection,
    segments_signature,
)
from latentdb.query._subset import SUBSET_STRATEGIES, gather, subset_index
from latentdb.query._tuning import (
    MIN_QUERIES,
    TUNE_K,
    Measurement,
    Truth,
    knob_ladder,
    measure,
    tune_knob,
)
from latentdb.query._where import Condition, json_path, to_sql
from latentdb.store import SqlFilter, Store

__all__ = ["EXACT_ROWS", "FilterCache", "QueryPlan", "and_filters", "filtered_search"]

FloatMatrix = npt.NDArray[np.float32]
KeyArray = npt.NDArray[np.int64]
Hits = tuple[FloatMatrix, KeyArray]

# Up to this many allowed rows a filter is always scanned: ~0.15 ms at 384 dimensions,
# under an unfiltered graph search, and exact.
EXACT_ROWS = 2048
# Below this allowed fraction a filter used again gets a graph of its own rows (a copy
# of them: more would cost the memory of the collection again).
GRAPH_FRACTION = 0.3
# Graph knobs are measured up to this value (a beam of 1,024 costs ~20 unfiltered
# searches: the scan wins before it, except on millions of rows).
FILTERED_KNOB_MAX = 1024
_CACHED_FILTERS = 16  # evaluated selections kept (until the next write)
_PLANS = 64  # filters whose plans are kept
_GRAPHS = 4  # filters with a graph of their own (a 10% subset of 100k x 384: ~20 MB)
_POOL = 256  # recent queries kept as tuning queries
_QUICK_BUILD_WAIT_S = 2.0  # a measurement waits this long for a filter's codes
_NOTED_ROWS = 4  # rows of an unfiltered batch kept as tuning queries
_TRUTH_CHUNK = 32  # tuning queries answered exactly per hold of the store's lock
# A broad filter (GRAPH_FRACTION or more of the rows: no graph of its own) allowing up
# to this many rows is measured in its first query, on MIN_QUERIES tuning queries
# (FilterCache.measure_now): the exact answers cost in proportion to its rows (a 50%
# filter of 100k PyPI rows: ~0.1 s, within the 200 ms a first query may take), where
# measured in the background its first ~60 queries were each scanned (10 ms apiece).
_MEASURE_AT_ONCE_ROWS = 60_000
# A narrower filter allowing up to this many rows is measured in its first query too: its
# own codes (SubsetCodes) are built in it, 0.1 s for 10k x 384 PyPI rows, and measured
# on MIN_QUERIES tuning queries. Measured in the background instead, a 10% filter's
# first ~400 queries were scanned (1.4 ms apiece) before its codes answered.
_CODES_AT_ONCE_ROWS = 12_000
# In that first query, codes are measured up to this re-rank depth, and the masked graph
# not at all: on the mixture data of bench/filtered.py a filter along one direction
# climbed to a depth of 822 and took 212 ms (572 beside a writer). A filter that needs
# more is measured again in the background, on every tuning query.
_IN_QUERY_KNOB_MAX = 256
# A filter gets a graph of its own rows when its best measured plan is this many times
# slower than an unfiltered search: issue 18 asks filtered qps1 >= 0.5x unfiltered, and
# timings on a shared machine scatter (a 4k-row scan, 4% of 100k, timed at 1.8-2.5x).
_GRAPH_WHEN_SLOWER = 1.5
# A measured plan is measured again when the tuning queries have doubled since (a
# sharper bound, so a cheaper setting may pass); it holds while the sealed segments and
# the filter's rows in them moved by at most this fraction (_staleness), and is
# measured again in the background from half of it on. (At 4x growth a 50% filter on the
# PyPI set kept ef 120, measured on its first 32 queries, up to its 128th: 0.56x of an
# unfiltered search where ef 53 gives 0.68x.)
_RETUNE_GROWTH = 2
_RETUNE_DRIFT = 0.1
# Records up to which a new key's column is built inside the query (~3 us a record:
# 60 ms); past it, in the background while queries are answered without it.
_SYNC_ROWS = 20_000
_LOAD_CHUNK = 65_536  # records a background column build reads per statement (~3 MB of JSON)
# Metadata keys whose columns optimize() builds and saves: the most common ones.
_SAVED_KEYS = 64
# Queries that find a column being read wait for it this long, on collections of up to
# _WAIT_ROWS records (read in ~0.3 s of CPU per 100k).
_LOAD_WAIT_S = 1.0
_WAIT_ROWS = 200_000
_TIMING_BUDGET_S = 0.03  # seconds a plan's timing may take (after 3 queries)


@dataclass(frozen=True)
class QueryPlan:
    """How a query was answered.

    Attributes:
        strategy: "ann" (the index), "exact" (a full scan), "exact-filtered" (a scan of
            the rows the filter allows), "ann-filtered" (the index with the others
            masked out), "subset-hnsw" (a graph of the allowed rows alone, kept for a
            filter used again), "subset-pq" (product-quantized codes of the allowed
            rows alone, scanned and re-ranked exactly: a narrower filter's own index),
            "exact-ranked" (the nearest rows, by an exact scan, tested
            in SQL: the filter's metadata key is being read into memory) or "empty" (the
            filter allows nothing).
        rows: Live records in the collection.
        estimated: Rows the filter allows, estimated from a sample (None unfiltered).
        allowed: Rows the filter allows, counted (None unfiltered, or not counted).
        params: The search settings used (e.g. the measured ``ef``).
        exact_fallbacks: Queries the index answered with fewer than k allowed rows,
            scanned exactly instead.
        filter_source: "columns" (in memory) or "sql" (a filter the columns cannot
            evaluate exactly, or not yet).
        timings_ms: Milliseconds per step ("filter", "search", "fetch").
        recall: The recall@10 the plan is known to reach: 1.0 for an exact plan, else
            the lower confidence bound measured on recent queries (None unfiltered).
    """

    strategy: str
    rows: int
    estimated: int | None = None
    allowed: int | None = None
    params: dict[str, int] = field(default_factory=dict)
    exact_fallbacks: int = 0
    filter_source: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    recall: float | None = None


class _QueryPool:
    """The most recent distinct queries of the collection: the tuning queries. Filtered
    queries (any filter) are added by :func:`filtered_search`, unfiltered ones noted by
    the caller (:meth:`note`: a filter used for the first time on a collection that was
    queried before is measured on those at once). A ring of rows: the oldest goes when it is
    full; a query asked again is not added twice (a repeated query would count as
    several in the bound). ~2 us a query, where an ordered dict of copies took ~14."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        # Unfiltered queries as they were asked, taken into the ring when it is read:
        # appending costs the query path ~0.1 us, the ring's own add ~2.
        self._recent: deque[FloatMatrix] = deque(maxlen=capacity)
        self._rows: FloatMatrix | None = None  # (capacity, d), allocated on first use
        self._slots: dict[bytes, int] = {}  # row bytes -> its slot
        self._held: list[bytes | None] = [None] * capacity  # slot -> its row bytes
        self._next = 0  # the slot written next (the oldest once full)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._take_recent()
            return len(self._slots)

    def note(self, queries: FloatMatrix) -> None:
        """Keep ``queries`` (an unfiltered query's, float32 (nq, d)) for the ring, cheaply:
        they join it when it is next read. Of a batch, its last rows (copied: a large
        batch is not held)."""
        kept = queries if queries.shape[0] <= _NOTED_ROWS else queries[-_NOTED_ROWS:].copy()
        self._recent.append(kept)

    def add(self, queries: FloatMatrix) -> None:
        with self._lock:
            self._take_recent()
            self._add(queries)

    def _take_recent(self) -> None:
        while self._recent:
            self._add(self._recent.popleft())

    def _add(self, queries: FloatMatrix) -> None:
        for row in queries[-self._capacity :]:
            key = row.tobytes()
            if key in self._slots:
                continue
            rows = self._rows
            if rows is None or rows.shape[1] != row.shape[0]:
                rows = self._rows = np.empty((self._capacity, row.shape[0]), np.float32)
                self._slots.clear()
                self._held = [None] * self._capacity
                self._next = 0
            slot = self._next
            old = self._held[slot]
            if old is not None:
                del self._slots[old]
            rows[slot] = row
            self._held[slot] = key
            self._slots[key] = slot
            self._next = (slot + 1) % self._capacity

    def snapshot(self, seed: int) -> FloatMatrix:
        """The queries in a random order: a measurement that stops early must have seen
        a random sample of them. Newest first, a 25% filter on the PyPI slice passed
        ef 48 on the last 32 of 100 queries, which were easier: all 100 measured 0.947."""
        with self._lock:
            self._take_recent()
            if self._rows is None or not self._slots:
                return np.empty((0, 0), dtype=np.float32)
            rows = self._rows[np.fromiter(self._slots.values(), dtype=np.intp)]
        return np.ascontiguousarray(rows[np.random.default_rng(seed).permutation(len(rows))])


class FilterCache:
    """A collection's metadata columns, its recently used filters' selections and the
    plans measured for them (safe to share between threads)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.columns = MetadataColumns()
        # Where the columns are saved (the collection's index folder; None: not saved).
        self.folder = folder
        self._not_saved: set[str] = set()  # keys the file was asked for and lacked
        self.lock = threading.RLock()
        self._selections: OrderedDict[str, tuple[int, Selection, int, str]] = OrderedDict()
        self._plans: OrderedDict[str, FilterPlan] = OrderedDict()
        self.pool = _QueryPool(_POOL)
        self._loading: set[str] = set()  # keys whose columns a background thread builds
        self._failed: set[str] = set()  # ... and those it failed to (read in the query)
        self._loaded: dict[str, threading.Event] = {}  # set when a key's read ends
        self._jobs: deque[tuple[FilterPlan, Any, Selection]] = deque()  # (plan, index, rows)
        self._worker: threading.Thread | None = None
        self._hints: dict[int, int] = {}  # selectivity bucket -> knob value that passed
        # ... and the beam (or re-rank depth) of a filter's own index, per kind
        self._graph_hints: dict[tuple[int, str], int] = {}
        self.measurements = 0  # measurements made (for tests and benchmarks)

    def note_queries(self, queries: FloatMatrix) -> None:
        """Keep ``queries`` (float32 (nq, d), unfiltered ones) among the tuning queries:
        a filter used for the first time can then be measured at once, on the queries
        the collection was asked, instead of being scanned until 32 filtered queries
        have come (a 50% filter's scan of 100k rows costs ~37 ms a query)."""
        self.pool.add(queries)

    # -- metadata columns ------------------------------------------------------------

    def catch_up(self, store: Store, collection_id: int, applied: int) -> MetadataColumns:
        """Bring the columns up to the store's write ``applied``, reading through the
        calling thread's own connection: a filtered query on a snapshot does not wait
        for a writer's lock (the store's lock is not taken)."""
        if self.columns.applied >= applied:
            return self.columns
        with self.lock:
            columns = self.columns
            if columns.applied >= applied:
                return columns
            if not columns.started:  # nothing to bring: note the write (a cache key)
                columns.applied, columns.version = applied, columns.version + 1
                return columns
            self._catch_up(store, collection_id, unlocked=True)
            return columns

    def _catch_up(self, store: Store, collection_id: int, *, unlocked: bool = False) -> int:
        """Apply every write since the columns' sequence (inside a store snapshot when
        the caller reads more in it); the sequence now."""
        columns = self.columns
        now, rows, deleted = store.metadata_since(collection_id, columns.applied, unlocked=unlocked)
        if columns.started and (rows or deleted):
            columns.upsert(rows)
            columns.delete(deleted)
        columns.applied = max(columns.applied, now)
        return now

    def ready(self, store: Store, collection_id: int, condition: Condition, live: int) -> bool:
        """Whether every key ``condition`` reads has its column: built now when the
        collection is small, else read in the background. The query that starts the
        read goes on without it (False); one that finds it under way waits for it, up to
        ``_LOAD_WAIT_S``, where the collection is small enough to be read by then: an
        exact answer without the column costs up to ~0.1 s of CPU, and taken side by side
        with the read on a busy machine both took longer."""
        if not self.columns.missing(condition):  # built: no lock needed to see it
            return True
        with store.lock, self.lock:
            missing = self.columns.missing(condition)
            if missing and self._restore(store, collection_id, missing):
                missing = self.columns.missing(condition)
            if not missing:
                return True
            if live <= _SYNC_ROWS or missing & self._failed:
                self._failed -= missing
                with store.read():  # the new columns and the catch-up at one sequence
                    now = self._catch_up(store, collection_id)
                    for name in sorted(missing):
                        at, keys, values = store.metadata_field(collection_id, json_path(name))
                        assert at == now  # one snapshot
                        self.columns.add_column(name, keys, values)
                return True
            waiting = missing - self._loading
            if waiting:
                done = threading.Event()
                for name in waiting:
                    self._loaded[name] = done
                self._loading |= waiting
                threading.Thread(
                    target=self._load,
                    args=(store, collection_id, sorted(waiting), done),
                    name="latentdb-columns",
                    daemon=True,
                ).start()
                return False
            events = {self._loaded[name] for name in missing if name in self._loaded}
        if live > _WAIT_ROWS:
            return False
        deadline = time.monotonic() + _LOAD_WAIT_S
        for event in events:  # outside our lock: the read takes it to finish
            event.wait(max(0.0, deadline - time.monotonic()))
        with self.lock:
            return not self.columns.missing(condition)

    def _load(
        self, store: Store, collection_id: int, names: list[str], done: threading.Event
    ) -> None:
        """Build columns a chunk of records at a time, through this thread's own
        connection (queries and writes go on, on the other core: SQLite parses the JSON
        without holding the GIL), then bring them up to date in one snapshot under the
        store's lock: the writes since the first chunk are applied over what was read."""
        try:
            loaded: dict[str, tuple[list[KeyArray], list[Any]]] = {}
            since: int | None = None
            for name in names:
                parts: tuple[list[KeyArray], list[Any]] = ([], [])
                after = 0
                while True:
                    at, keys, values = store.metadata_field(
                        collection_id, json_path(name), after=after, limit=_LOAD_CHUNK,
                        unlocked=True,
                    )  # fmt: skip
                    since = at if since is None else min(since, at)
                    parts[0].append(keys)
                    parts[1].extend(values)
                    if keys.shape[0] < _LOAD_CHUNK:
                        break
                    after = int(keys[-1])
                loaded[name] = parts
            with self.lock:  # not the store's: a query holding it may be waiting for us
                self._catch_up(store, collection_id, unlocked=True)
                _, changed, deleted = store.metadata_since(collection_id, since or 0, unlocked=True)
                for name, (key_parts, values) in loaded.items():
                    keys, values = _updated(
                        np.concatenate(key_parts), values, name, changed, deleted
                    )
                    self.columns.add_column(name, keys, values)
                saved = self.columns.snapshot()
            self._save(saved)  # the next process takes them from the file
        except Exception:  # the next query reads them itself (and raises what fails)
            with self.lock:
                self._failed |= set(names)
        finally:
            with self.lock:
                self._loading -= set(names)
                for name in names:
                    self._loaded.pop(name, None)
            done.set()

    def _restore(self, store: Store, collection_id: int, names: set[str]) -> bool:
        """Take the saved columns of ``names`` (and the slots) when none is built yet,
        and apply the writes since they were saved (under the store's lock and ours);
        whether any was taken."""
        if self.folder is None or self.columns.started or names <= self._not_saved:
            return False
        self._not_saved |= names  # asked once: the file is only written with them built
        columns = MetadataColumns()
        if not columns.restore(self.folder / COLUMNS_FILE, names):
            return False
        with store.read():
            now = store.sequence()
            if columns.applied > now:  # saved by a newer state of this folder: unusable
                return False
            _, rows, deleted = store.metadata_since(collection_id, columns.applied)
        columns.upsert(rows)
        columns.delete(deleted)
        columns.applied = now
        columns.version = self.columns.version + 1  # a cache key no older one reuses
        self.columns = columns
        return True

    def _save(self, arrays: dict[str, Any] | None) -> None:
        if self.folder is not None and arrays is not None:
            write_columns(self.folder / COLUMNS_FILE, arrays)

    def save_all(self, store: Store, collection_id: int) -> int:
        """Build the column of every common metadata key (up to ``_SAVED_KEYS``) from
        one pass over the records, and save them for the processes that open the
        collection later (``optimize()`` calls this, after its build). Reads through
        this thread's own connection, in chunks: writes and queries go on.

        Returns:
            How many columns were saved.
        """
        if self.folder is None:
            return 0
        key_parts: list[KeyArray] = []
        metadatas: list[Any] = []
        since: int | None = None
        after = 0
        while True:
            at, keys, chunk = store.metadata_rows(
                collection_id, after=after, limit=_LOAD_CHUNK, unlocked=True
            )
            since = at if since is None else min(since, at)
            key_parts.append(keys)
            metadatas.extend(chunk)
            if keys.shape[0] < _LOAD_CHUNK:
                break
            after = int(keys[-1])
        counts = Counter(name for metadata in metadatas if metadata for name in metadata)
        names = [name for name, _ in counts.most_common(_SAVED_KEYS)]
        columns = MetadataColumns()
        keys = np.concatenate(key_parts)
        for name in names:
            values = [None if not metadata else metadata.get(name) for metadata in metadatas]
            columns.add_column(name, keys, values)
        del metadatas
        if not names:  # nothing to filter on
            return 0
        columns.applied = since or 0
        now, rows, deleted = store.metadata_since(collection_id, columns.applied, unlocked=True)
        columns.upsert(rows)
        columns.delete(deleted)
        columns.applied = max(columns.applied, now)
        self._save(columns.snapshot())
        with self.lock:
            if not self.columns.started:  # this process's first filter starts from them
                columns.version = self.columns.version + 1
                self.columns = columns
        return len(names)

    # -- selections ------------------------------------------------------------------

    def selection(
        self,
        condition: Condition | None,
        document: SqlFilter | None,
        store: Store,
        collection_id: int,
        key: str | None = None,
    ) -> tuple[Selection, int, str]:
        """The rows the filters allow, the estimate from a sample, and where the
        answer came from ("columns", or "sql" for document filters and what the columns
        cannot evaluate exactly); cached until the next write. The columns of the keys
        ``condition`` reads must be built (:meth:`ready`); ``key``: its
        :func:`filter_key`, if the caller has it."""
        if key is None:
            key = filter_key(condition, document)
        with self.lock:  # the columns need no store: its lock only for SQL, below
            columns = self.columns
            cached = self._selections.get(key)
            if cached is not None and cached[0] == columns.version:
                self._selections.move_to_end(key)
                return cached[1], cached[2], cached[3]
            if document is None and condition is not None:
                try:
                    estimated = columns.estimate(condition)
                    selection = MaskSelection(columns, columns.mask(condition))
                    return self._keep(key, columns.version, selection, estimated, "columns")
                except Unsupported:
                    pass
        with store.lock, self.lock:
            version = self.columns.version
            sql = [f for f in (None if condition is None else to_sql(condition), document) if f]
            allowed = store.select(collection_id, where=and_filters(*sql))
            keys = np.fromiter((k for k, _ in allowed), dtype=np.int64, count=len(allowed))
            return self._keep(key, version, KeySelection(keys), len(allowed), "sql")

    def _keep(
        self, key: str, version: int, selection: Selection, estimated: int, source: str
    ) -> tuple[Selection, int, str]:
        """Cache a filter's selection at a columns version (under the cache's lock)."""
        self._selections[key] = (version, selection, estimated, source)
        if len(self._selections) > _CACHED_FILTERS:
            self._selections.popitem(last=False)
        return selection, estimated, source

    def plan(self, key: str) -> FilterPlan:
        """The plan kept for the filter ``key`` (made on first use)."""
        with self.lock:
            plan = self._plans.get(key)
            if plan is None:
                plan = self._plans[key] = FilterPlan()
                if len(self._plans) > _PLANS:
                    self._plans.popitem(last=False)
            else:
                self._plans.move_to_end(key)
            return plan

    # -- measuring ---------------------------------------------------------------------

    def want_measurement(self, plan: FilterPlan, index: Any) -> None:
        """Queue ``plan`` for measuring (once; a background thread works the queue) on
        ``index`` as it is now, with the selection made for it: a later query's index,
        or a selection of rows written since, can disagree on which rows are live (the
        lifecycle machine caught a masked search short of rows that the selection
        counted, and its exact fallback finding none of them)."""
        with self.lock:
            if plan.queued or len(self.pool) < MIN_QUERIES or plan.selection is None:
                return
            plan.queued = True
            view = getattr(index, "view", None)  # the snapshot now, not the one then
            self._jobs.append((plan, index if view is None else view, plan.selection))
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="latentdb-filter-tuning", daemon=True
                )
                self._worker.start()

    def measure_now(self, plan: FilterPlan, index: Any) -> None:
        """Measure ``plan`` in the asking thread, on :data:`MIN_QUERIES` of the tuning
        queries, where no measurement was made or is under way: a filter's first query
        then leaves a measured plan to the second. Its bound is looser than the
        background's on more queries (which follows, and may settle on a cheaper
        setting). The scan's time is the one the query just took (``scan_seconds``)."""
        with self.lock:
            if plan.queued or plan.measured is not None or plan.selection is None:
                return
            plan.queued = True
            selection = plan.selection
            pool = self.pool.snapshot(seed=self.measurements)[:MIN_QUERIES]
        # The query just scanned: its time stands for the scan's (timing three more
        # scans of a 50% filter took ~30 ms of the first query's 200).
        self._measure_into(plan, index, selection, pool, scan_seconds=plan.scan_seconds)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until no column is being read and no measurement is queued or running
        (tests, benchmarks); whether that happened within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self._worker is None and not self._loading:
                    return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 60.0) -> None:
        """Drop the measurements not started, and wait (up to ``timeout`` seconds) for
        the columns being read: they read through their threads' own connections, which
        closing the store closes."""
        with self.lock:
            self._jobs.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self._loading:
                    return
            time.sleep(0.01)

    def _work(self) -> None:
        while True:
            with self.lock:
                if not self._jobs:
                    self._worker = None
                    return
                plan, index, selection = self._jobs.popleft()
                pool = self.pool.snapshot(seed=self.measurements)
            self._measure_into(plan, index, selection, pool)

    def _measure_into(
        self,
        plan: FilterPlan,
        index: Any,
        selection: Selection,
        pool: FloatMatrix,
        *,
        scan_seconds: float | None = None,
    ) -> None:
        """Measure ``plan`` (queued by the caller) on ``pool`` and keep the result, where
        there are enough tuning queries; a failure is warned of, never raised: the scan
        goes on answering."""
        try:
            if len(pool) >= MIN_QUERIES:
                measured = self._measure(plan, index, selection, pool, scan_seconds=scan_seconds)
                with self.lock:
                    plan.measured = measured
                    self.measurements += 1
        except Exception as error:  # the scan goes on answering
            warnings.warn(
                f"measuring a filtered plan failed ({error}); the filter is scanned",
                LatentDBWarning,
                stacklevel=1,
            )
        finally:
            with self.lock:
                plan.queued = False

    def _measure(
        self,
        plan: FilterPlan,
        index: Any,
        selection: Selection,
        pool: FloatMatrix,
        *,
        scan_seconds: float | None = None,
    ) -> Measured:
        """Measure the plans that may beat the scan of ``selection`` on the tuning
        queries, and keep the fastest that reaches the target (each timed here, one query
        per call, so that all are timed alike; ``scan_seconds``: the scan's time per
        query, where the caller has just timed it)."""
        in_query = scan_seconds is not None  # a filter's first query: measure_now
        index, lock = _searchable(index)
        with lock:
            segments = [segment for _, segment in index.sealed]
            signature = segments_signature(segments)
            sealed = selection.sealed_count(segments)
            knob = index_kind(index.kind()).knob if segments else None
            base = int(index.search_settings()[knob]) if knob else 0
            target = float(index.recall_target)
            live = max(int(index.live), 1)
        bucket = round(2 * math.log2(max(selection.count / live, 1e-9)))  # for the hints

        # Exact answers are kept for the next measurement of the same rows: at 50% of
        # 100k rows 32 of them took ~0.2 s (a matrix product over every row), and the
        # measurements at 32, 64, 128 and 256 tuning queries asked for 480 answers.
        truth_key = (id(selection), selection.digest(segments), getattr(index, "applied", None))
        if plan.truth_key != truth_key:
            plan.truths, plan.truth_key = {}, truth_key
        truths = plan.truths

        def exact(queries: FloatMatrix) -> KeyArray:
            rows = [query.tobytes() for query in queries]
            missing = [row for row, key in enumerate(rows) if key not in truths]
            if missing:
                with lock:
                    found = self._exact_now(plan, selection, index, queries[missing], TUNE_K)[1]
                for position, row in enumerate(missing):
                    truths[rows[row]] = found[position]
            return np.stack([truths[key] for key in rows])

        def scan(query: FloatMatrix) -> KeyArray:
            with lock:
                return self._scan_now(plan, selection, index, query, TUNE_K)[1]

        def unfiltered(query: FloatMatrix) -> KeyArray:
            with lock:
                found: KeyArray = index.search(query, TUNE_K)[1]
            return found

        truth = Truth(exact, pool)
        best = Measured(
            "exact-filtered", {}, 1.0, 1.0, 0,
            _scan_cost(plan, scan, pool, scan_seconds),
            len(pool), signature, sealed, _timed(unfiltered, pool),
        )  # fmt: skip
        if _wants_graph(plan, best):  # start it now: it builds while the graph is measured
            with lock:
                self._graph_for(plan, selection, index)
        # The filter's own graph first, where it is ready: when it is as fast as the
        # graph of a narrow filter is wanted to be, the collection's graph (masked) is
        # not measured too (its beam for a 10% filter took most of a measurement's time).
        graph = plan.graph
        if graph is not None and graph.building and graph.quick:
            # Codes are ready in a fraction of a second: measured first, they spare the
            # masked graph's measurement, which held a 10% filter of the PyPI set on its
            # scan for 500 queries (1 s) before the codes were measured.
            graph.wait(_QUICK_BUILD_WAIT_S)
        plan.graph_measured = graph is not None and graph.ready
        added = _graph_covers(plan, selection, segments)
        if graph is not None and added is not None:
            own_graph, beside = graph, added

            def own(value: int) -> Measurement:
                params = {own_graph.knob: value}

                def one(query: FloatMatrix) -> KeyArray:
                    with lock:
                        found = own_graph.search(query, TUNE_K, params)
                        found = with_segments(index, selection, query, TUNE_K, found, beside)
                        return with_growing(index, selection, query, TUNE_K, found)[1]

                return measure(one, pool, truth, target)

            # From the beam that passed for a filter of about this selectivity, else the
            # collection's own: climbing from 16, a 10% filter's graph on the PyPI set
            # measured six beams (7 s on the loaded box) before ef 122 passed.
            ladder = knob_ladder(graph.first, _IN_QUERY_KNOB_MAX if in_query else FILTERED_KNOB_MAX)
            hinted = (bucket, graph.strategy)
            first = max(base, graph.first) if graph.knob == knob else graph.first
            hint = self._graph_hints.get(hinted, first)  # may lie past a first query's cap
            start = min(int(np.searchsorted(ladder, hint)), len(ladder) - 1)
            winner, _ = tune_knob(own, ladder, start=start, target=target, slowest=best.seconds)
            if winner is not None:
                self._graph_hints[hinted] = winner.value
            if winner is not None and winner.measurement.seconds < best.seconds:
                best = _from(winner.measurement, graph.strategy, {graph.knob: winner.value}, best)
        narrow_in_query = in_query and plan.fraction < GRAPH_FRACTION
        if (
            knob
            and not narrow_in_query  # the masked graph's wide beams: in the background
            and not (
                best.strategy in SUBSET_STRATEGIES
                and best.seconds <= _GRAPH_WHEN_SLOWER * best.unfiltered
            )
        ):

            def masked(value: int) -> Measurement:
                params = {knob: value}

                def one(query: FloatMatrix) -> KeyArray:
                    with lock:
                        hits = index.search_selected(query, TUNE_K, selection, params=params)
                    found: KeyArray = hits[0][1]
                    return found

                return measure(one, pool, truth, target)

            ladder = knob_ladder(base, FILTERED_KNOB_MAX)
            start = int(np.searchsorted(ladder, self._hints.get(bucket, base)))
            winner, _ = tune_knob(masked, ladder, start=start, target=target, slowest=best.seconds)
            if winner is not None:
                self._hints[bucket] = winner.value
                if winner.measurement.seconds < best.seconds:
                    best = _from(winner.measurement, "ann-filtered", {knob: winner.value}, best)
        return best

    def _scan_now(
        self, plan: FilterPlan, selection: Selection, index: Any, queries: FloatMatrix, k: int
    ) -> Hits:
        return scan(plan, selection, index, queries, k, self._make_room)

    def _exact_now(
        self, plan: FilterPlan, selection: Selection, index: Any, queries: FloatMatrix, k: int
    ) -> Hits:
        return exact_batch(plan, selection, index, queries, k, self._make_room)

    def _make_room(self, size: int) -> None:
        with self.lock:
            self._fit_matrices(size)

    def _fit_matrices(self, size: int) -> None:
        """Drop the matrices of the least recent filters until ``size`` more fit."""
        held = [plan for plan in self._plans.values() if plan.matrix is not None]
        total = sum(plan.matrix.bytes for plan in held if plan.matrix is not None)
        for plan in held:  # least recent first
            if total + size <= MATRIX_BYTES:
                break
            if plan.matrix is not None:
                total -= plan.matrix.bytes
                plan.matrix = None

    def _graph_for(self, plan: FilterPlan, selection: Selection, index: Any) -> None:
        """Start a graph of the filter's own rows when it has none of these rows; at most
        _GRAPHS are kept, for the filters used most recently. A graph that still answers
        (the rows sealed since it was built are few: :func:`_graph_covers`) goes on
        answering while its successor builds (``plan.next_graph``)."""
        segments = [segment for _, segment in index.sealed]
        digest = selection.digest(segments)
        graph = plan.graph
        if graph is not None and (graph.digest == digest or not graph.may_rebuild()):
            return
        if plan.next_graph is not None and (
            plan.next_graph.building or plan.next_graph.digest == digest
        ):
            return
        with self.lock:
            held = [p for p in self._plans.values() if p.graph is not None and p is not plan]
            for stale in held[: max(0, len(held) - _GRAPHS + 1)]:
                stale.graph = stale.next_graph = None
        matrix = plan.matrix  # the scan's copy of these rows, where there is one
        if matrix is not None and matrix.digest == digest:
            kept = (matrix.keys, matrix.matrix)
            rows: Callable[[], tuple[KeyArray, FloatMatrix]] = lambda: kept  # noqa: E731
        else:  # copied out by the build's thread, not the query's
            masks = [selection.rows_of(s) for s in segments]
            rows = partial(gather, segments, masks)
        count = selection.sealed_count(segments)
        built = subset_index(rows, count, index.metric, digest)
        if _graph_covers(plan, selection, segments) is not None:
            plan.next_graph = built
        else:
            plan.graph, plan.next_graph = built, None
            plan.graph_measured = False


def _from(result: Measurement, strategy: str, params: dict[str, int], base: Measured) -> Measured:
    return Measured(
        strategy,
        params,
        result.recall,
        result.lower,
        result.queries,
        result.seconds,
        base.pool,
        base.signature,
        base.sealed,
        base.unfiltered,
    )


def _updated(
    keys: KeyArray,
    values: list[Any],
    name: str,
    changed: Sequence[tuple[int, Mapping[str, Any] | None]],
    deleted: Sequence[int],
) -> tuple[KeyArray, list[Any]]:
    """Values read a chunk at a time, with the writes since the first chunk applied:
    changed rows take their new value, deleted ones go."""
    by_key = dict(zip(keys.tolist(), values, strict=True))
    for key, metadata in changed:
        by_key[key] = None if metadata is None else metadata.get(name)
    for key in deleted:
        by_key.pop(key, None)
    order = sorted(by_key)
    return np.array(order, dtype=np.int64), [by_key[key] for key in order]


def _searchable(index: Any) -> tuple[Any, AbstractContextManager[Any]]:
    """What a background measurement searches, and the lock each search takes: the
    index's published snapshot where it has one (no lock: no write changes it), else the
    index itself under the store's lock (a write may change it)."""
    view = getattr(index, "view", None)
    if view is not None:
        return view, nullcontext()
    lock = getattr(index, "lock", None)
    return index, lock if lock is not None else nullcontext()


def _scan_cost(
    plan: FilterPlan,
    scan: Callable[[FloatMatrix], Any],
    pool: FloatMatrix,
    known: float | None = None,
) -> float:
    """Seconds of a scan of the filter's rows per query, timed on the measuring thread
    just before the graphs are, so that all see the same load (on a busy machine the
    queries' own timings, minutes apart, made plans flip); ``known`` where the caller
    has just timed one (a filter measured in its first query)."""
    return _timed(scan, pool) if known is None else known


def _timed(search: Callable[[FloatMatrix], Any], queries: FloatMatrix, count: int = 8) -> float:
    """Seconds per query of ``search``, one query per call (the median: the first call
    may build what the others reuse), over ``count`` queries or fewer (3 at least) once
    ``_TIMING_BUDGET_S`` is spent: a 50% filter's scan of 100k rows took 37 ms a query,
    and 8 of them delayed its measurement by 0.3 s."""
    times: list[float] = []
    spent = 0.0
    for row in range(min(count, queries.shape[0])):
        started = time.perf_counter()
        search(queries[row : row + 1])
        times.append(time.perf_counter() - started)
        spent += times[-1]
        if len(times) >= 3 and spent > _TIMING_BUDGET_S:
            break
    return float(np.median(times)) if times else 0.0


def filter_key(condition: Condition | None, document: SqlFilter | None) -> str:
    """A filter's identity for the caches: the repr of its parsed tree (True, 1 and 1.0
    stay apart, as the where language keeps them; a filter written in another order is
    a second entry, no more). 13 us, where the canonical JSON took 31."""
    key = "" if condition is None else repr(condition)
    if document is not None:
        key += f"|{document.sql}|{document.params!r}"
    return key


def and_filters(*filters: SqlFilter) -> SqlFilter:
    """Several SQL conditions that must all hold, as one."""
    if len(filters) == 1:
        return filters[0]
    return SqlFilter(
        " AND ".join(f"({f.sql})" for f in filters),
        tuple(param for f in filters for param in f.params),
    )


def filtered_search(
    store: Store,
    collection_id: int,
    applied: int,
    cache: FilterCache,
    index: SegmentSearch,
    condition: Condition | None,
    document: SqlFilter | None,
    queries: FloatMatrix,
    k: int,
    *,
    params: Mapping[str, int] | None,
    exact: bool,
) -> tuple[Hits, QueryPlan]:
    """Answer a filtered query (see the module docstring).

    The caller need not hold the store's lock: it is taken only to read the store
    (catching the columns up, reading a new key's column, SQL filters), so a caller may
    run this on the index's published snapshot. ``index`` may be either.
    """
    started = time.perf_counter()
    cache.catch_up(store, collection_id, applied)
    cache.pool.add(queries)
    live = index.live
    if (
        document is None
        and condition is not None
        and not cache.ready(store, collection_id, condition, live)
    ):
        if params:
            index.check_params(params)
        ranked, guess = ranked_search(store, collection_id, index, to_sql(condition), queries, k)
        searched = time.perf_counter()
        return ranked, QueryPlan(
            strategy="exact-ranked",
            rows=live,
            estimated=guess,
            filter_source="sql",
            timings_ms={"filter": 0.0, "search": (searched - started) * 1e3},
            recall=1.0,
        )
    key = filter_key(condition, document)
    selection, estimated, source = cache.selection(condition, document, store, collection_id, key)
    plan = cache.plan(key)
    filtered = time.perf_counter()
    nq = queries.shape[0]
    used: dict[str, Any] = {}
    plan.uses += 1
    plan.selection = selection
    segments = [segment for _, segment in index.sealed]
    count = selection.count
    plan.fraction = count / max(live, 1)
    recall: float | None = 1.0
    hits: Hits
    if count == 0:
        strategy = "empty"
        hits = (np.empty((nq, 0), dtype=np.float32), np.empty((nq, 0), dtype=np.int64))
    elif params and not exact:
        # The caller's own knobs: the graph, others masked out, as told.
        strategy, recall = "ann-filtered", None
        hits, used = index.search_selected(queries, k, selection, params=params)
    else:
        if params:
            index.check_params(params)  # a scan: no knob applies, but a bad one is refused
        measured = None if exact or count <= EXACT_ROWS or not segments else plan.measured
        signature = segments_signature(segments)
        if measured is not None and not _holds(measured, signature, segments, selection):
            measured = None
        if measured is None or measured.strategy == "exact-filtered":
            strategy = "exact-filtered"
            scan_started = time.perf_counter()
            hits = cache._scan_now(plan, selection, index, queries, k)
            per_query = (time.perf_counter() - scan_started) / max(nq, 1)
            plan.scan_seconds = (
                per_query
                if plan.scan_seconds is None
                else 0.8 * plan.scan_seconds + 0.2 * per_query
            )
        elif (
            plan.graph is not None
            and measured.strategy == plan.graph.strategy  # measured on this kind of index
            and (added := _graph_covers(plan, selection, segments)) is not None
        ):
            strategy, used, recall = measured.strategy, dict(measured.params), measured.lower
            found = plan.graph.search(queries, k, measured.params)
            hits = with_growing(
                index,
                selection,
                queries,
                k,
                with_segments(index, selection, queries, k, found, added),
            )
        elif measured.strategy == "ann-filtered":
            strategy, recall = "ann-filtered", measured.lower
            hits, used = index.search_selected(queries, k, selection, params=measured.params)
        else:  # the graph it was measured on is gone: scan until measured again
            strategy, measured = "exact-filtered", None
            hits = cache._scan_now(plan, selection, index, queries, k)
        if not exact and count > EXACT_ROWS and segments:
            if measured is None and (
                count <= _MEASURE_AT_ONCE_ROWS
                if plan.fraction >= GRAPH_FRACTION
                else count <= _CODES_AT_ONCE_ROWS
            ):  # answered exactly; the next query takes what this measures
                cache.measure_now(plan, index)
            _next_steps(cache, plan, selection, index, measured, signature, segments)
    searched = time.perf_counter()
    fallbacks = int(used.pop("exact_fallbacks", 0))
    return hits, QueryPlan(
        strategy=strategy,
        rows=live,
        estimated=estimated,
        allowed=selection.count,
        params={name: int(value) for name, value in used.items()},
        exact_fallbacks=fallbacks,
        filter_source=source,
        timings_ms={
            "filter": (filtered - started) * 1e3,
            "search": (searched - filtered) * 1e3,
        },
        recall=recall,
    )


def _wants_graph(plan: FilterPlan, measured: Measured) -> bool:
    """Whether a filter narrow enough for a copy of its rows has no plan as fast as half
    an unfiltered search."""
    return (
        plan.fraction < GRAPH_FRACTION
        and measured.seconds > _GRAPH_WHEN_SLOWER * measured.unfiltered
    )


def _holds(
    measured: Measured,
    signature: tuple[tuple[int, int], ...],
    segments: list[SealedSegment],
    selection: Selection,
) -> bool:
    """Whether a measurement still stands: :func:`_staleness` within ``_RETUNE_DRIFT``.
    Under the writer of bench/filtered.py a segment was sealed every few seconds, and
    voiding the measurement at each (as when the segments had to be the same) sent the
    filter back to scanning until measured again (a 50% filter ran 0.02x of an
    unfiltered search)."""
    return _staleness(measured, signature, segments, selection) <= _RETUNE_DRIFT


def _staleness(
    measured: Measured,
    signature: tuple[tuple[int, int], ...],
    segments: list[SealedSegment],
    selection: Selection,
) -> float:
    """How far the sealed segments moved from those a plan was measured on: the larger
    of the share of their rows no longer in the same segments (merged or rebuilt away)
    and the change in the filter's allowed rows, relative to those measured. Segments
    sealed or merged since, beside those measured, are searched the same way: smaller
    graphs, where a beam finds at least as much."""
    lost = 0.0
    if measured.signature != signature:
        present = set(signature)
        total = sum(rows for _, rows in measured.signature)
        gone = sum(rows for part in measured.signature if part not in present for rows in [part[1]])
        lost = gone / max(total, 1)
    drift = abs(selection.sealed_count(segments) - measured.sealed) / max(measured.sealed, 1)
    return max(lost, drift)


def _graph_covers(
    plan: FilterPlan, selection: Selection, segments: list[SealedSegment]
) -> list[SealedSegment] | None:
    """The sealed segments whose allowed rows the filter's graph lacks (scanned beside
    it), or None when it cannot answer: not built, rows it holds are no longer allowed
    or live (a segment of it changed or went), or the rows it lacks are more than
    ``_RETUNE_DRIFT`` of those it has."""
    graph = plan.graph
    if graph is None or not graph.ready:
        return None
    parts = selection.digest(segments)
    if parts == graph.digest:
        return []
    held = set(graph.digest)
    if not held <= set(parts):
        return None
    added = [
        (segment, part) for segment, part in zip(segments, parts, strict=True) if part not in held
    ]
    if sum(part[2] for _, part in added) > _RETUNE_DRIFT * max(graph.rows, 1):
        return None
    return [segment for segment, _ in added]


def _next_steps(
    cache: FilterCache,
    plan: FilterPlan,
    selection: Selection,
    index: Any,
    measured: Measured | None,
    signature: tuple[tuple[int, int], ...],
    segments: list[SealedSegment],
) -> None:
    """Start what makes the filter's later queries cheaper: a graph of its own rows
    (narrow enough, and no plan measured yet or none that reaches half the speed of an
    unfiltered search), and a measurement when there is none that holds, when the
    tuning queries have doubled since, when its graph became ready, or when the sealed
    segments moved past half of what a measurement survives (so that the next is
    there before this one lapses).

    The graph of a narrow filter starts on its first use, before any measurement: a
    walk of the collection's graph with a fraction f of the rows allowed expands about
    1/f times the nodes of an unfiltered search to find as many allowed ones, over 3x
    below GRAPH_FRACTION, past the ``_GRAPH_WHEN_SLOWER`` at which a graph is wanted
    (10% filters measured 0.23-0.33x of an unfiltered search on the masked graph, on
    the PyPI set and a Gaussian mixture). Waiting for the measurement to say so first
    left the graph ~1 s behind it: on the mixture a 10% filter's 2,000 queries ended
    before its graph was measured. Which plan answers is still decided by measurement.
    """
    successor = plan.next_graph
    if successor is not None and not successor.building:
        plan.graph, plan.next_graph = (successor, None) if successor.ready else (plan.graph, None)
        plan.graph_measured = False  # its beam measured again (rows within _RETUNE_DRIFT)
    if (measured is None and plan.fraction < GRAPH_FRACTION) or (
        measured is not None and _wants_graph(plan, measured)
    ):
        cache._graph_for(plan, selection, index)
    graph_ready = plan.graph is not None and plan.graph.ready
    if (
        measured is None
        or len(cache.pool) >= _RETUNE_GROWTH * measured.pool
        or (graph_ready and not plan.graph_measured)
        or (
            measured.signature != signature
            and _staleness(measured, signature, segments, selection) > _RETUNE_DRIFT / 2
        )
    ):
        cache.want_measurement(plan, index)
