"""The query planner: how a filtered query is answered, and the record of it
(``query(..., explain=True)``).

The filter is evaluated over in-memory metadata columns (``_columns``) into the set of
allowed rows. Few allowed rows are scanned exactly: the scan costs in proportion to
them, and a graph search would walk past most of the graph to find them. Many allowed
rows go to the ANN index with the others masked out (a faiss IDSelector), with a beam
widened as the allowed fraction shrinks; a query that still finds fewer than k allowed
rows, when k exist, is scanned exactly. So k results always come back when k rows match.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.index import SealedSegment, SegmentedIndex, merge_to_width
from latentdb.query._columns import MetadataColumns, Unsupported
from latentdb.query._subset import SubsetIndex
from latentdb.query._where import Condition, canonical, to_sql
from latentdb.store import SqlFilter, Store

__all__ = ["EXACT_ROWS", "FilterCache", "QueryPlan", "and_filters", "filtered_search"]

FloatMatrix = npt.NDArray[np.float32]
KeyArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Up to this many allowed rows, a filter seen once scans them exactly; from this
# fraction of the rows up, the graph with the others masked out finds k of them about
# as fast as an unfiltered search (measured: see the filters issue's closing note).
EXACT_ROWS = 2048
GRAPH_FRACTION = 0.3
_CACHED_FILTERS = 16
_SUBSETS = 4  # filters with an index of their own (a 10% subset of 100k x 384: ~20 MB)


@dataclass(frozen=True)
class QueryPlan:
    """How a query was answered.

    Attributes:
        strategy: "ann" (the index), "exact" (a full scan), "exact-filtered" (a scan of
            the rows the filter allows), "ann-filtered" (the index with the others
            masked out), "subset-flat" / "subset-hnsw" (an index of the allowed rows
            alone, kept for a filter used again) or "empty" (the filter allows nothing).
        rows: Live records in the collection.
        estimated: Rows the filter allows, estimated from a sample (None unfiltered).
        allowed: Rows the filter allows, counted (None unfiltered).
        params: The search settings used (e.g. the widened ``ef``).
        exact_fallbacks: Queries the index answered with fewer than k allowed rows,
            scanned exactly instead.
        filter_source: "columns" (in memory) or "sql" (a filter the columns cannot
            evaluate exactly).
        timings_ms: Milliseconds per step ("filter", "search", "fetch").
    """

    strategy: str
    rows: int
    estimated: int | None = None
    allowed: int | None = None
    params: dict[str, int] = field(default_factory=dict)
    exact_fallbacks: int = 0
    filter_source: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


class ColumnSelection:
    """The rows a filter allows, as a mask over the metadata columns' slots."""

    def __init__(self, columns: MetadataColumns, mask: BoolArray) -> None:
        self._columns = columns
        self._mask = mask
        self.count = int(np.count_nonzero(mask))
        self._keys: KeyArray | None = None
        self._rows: weakref.WeakKeyDictionary[SealedSegment, tuple[int, BoolArray]] = (
            weakref.WeakKeyDictionary()
        )
        self._selected: weakref.WeakKeyDictionary[
            SealedSegment, tuple[tuple[int, int], tuple[Any, int]]
        ] = weakref.WeakKeyDictionary()
        self.uses = 0  # queries that used this selection
        self.subset: SubsetIndex | None = None

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

    def rows_of(self, segment: SealedSegment) -> BoolArray:
        rows = segment.keys.shape[0]
        cached = self._rows.get(segment)
        if cached is not None and cached[0] == rows:
            return cached[1]
        slots = self._columns.segment_slots(segment)
        out = np.zeros(rows, dtype=bool)
        known = (slots >= 0) & (slots < self._mask.shape[0])
        out[known] = self._mask[slots[known]]
        self._rows[segment] = (rows, out)
        return out

    def selected_in(self, segment: SealedSegment) -> tuple[Any, int]:
        state = (segment.keys.shape[0], segment.dead)
        cached = self._selected.get(segment)
        if cached is None or cached[0] != state:
            cached = self._selected[segment] = (state, segment.selector_for(self.rows_of(segment)))
        return cached[1]


class FilterCache:
    """A collection's metadata columns and its recently used filters' selections."""

    def __init__(self) -> None:
        self.columns = MetadataColumns()
        self._loaded = False
        self._selections: OrderedDict[str, tuple[int, ColumnSelection, int, str]] = OrderedDict()

    def subset_for(
        self, selection: ColumnSelection, segments: list[SealedSegment], index: SegmentedIndex
    ) -> SubsetIndex:
        """The selection's own index, (re)built when missing or out of date; at most
        _SUBSETS of them are kept, for the filters used most recently."""
        subset = selection.subset
        if subset is not None and (subset.matches(segments) or not subset.ready):
            return subset
        masks = [selection.rows_of(segment) for segment in segments]
        subset = selection.subset = SubsetIndex(segments, masks, index.metric, index.recall_target)
        holders = [entry[1] for entry in self._selections.values() if entry[1].subset]
        for stale in holders[: max(0, len(holders) - _SUBSETS)]:  # least recent first
            stale.subset = None
        return subset

    def catch_up(self, store: Store, collection_id: int, applied: int) -> MetadataColumns:
        """Bring the columns up to the store's write ``applied`` (call under its lock)."""
        columns = self.columns
        if self._loaded and columns.applied >= applied:
            return columns
        now, rows, deleted = store.metadata_since(collection_id, columns.applied)
        columns.upsert(rows)
        columns.delete(deleted)
        columns.applied = now
        self._loaded = True
        return columns

    def selection(
        self,
        condition: Condition | None,
        document: SqlFilter | None,
        store: Store,
        collection_id: int,
    ) -> tuple[ColumnSelection, int, str]:
        """The rows the filters allow, the estimate from a sample, and where the
        answer came from ("columns", or "sql" for document filters and what the columns
        cannot evaluate exactly); cached until the next write."""
        key = "" if condition is None else canonical(condition)
        if document is not None:
            key += f"|{document.sql}|{document.params!r}"
        columns = self.columns
        cached = self._selections.get(key)
        if cached is not None and cached[0] == columns.version:
            self._selections.move_to_end(key)
            return cached[1], cached[2], cached[3]
        try:
            if document is not None or condition is None:
                raise Unsupported("a document filter is answered by SQL")
            estimated = columns.estimate(condition)
            selection = ColumnSelection(columns, columns.mask(condition))
            source = "columns"
        except Unsupported:
            sql = [f for f in (None if condition is None else to_sql(condition), document) if f]
            allowed = store.select(collection_id, where=and_filters(*sql))
            keys = np.fromiter((k for k, _ in allowed), dtype=np.int64, count=len(allowed))
            selection, estimated, source = _KeySelection(columns, keys), len(allowed), "sql"
        self._selections[key] = (columns.version, selection, estimated, source)
        if len(self._selections) > _CACHED_FILTERS:
            self._selections.popitem(last=False)
        return selection, estimated, source


def and_filters(*filters: SqlFilter) -> SqlFilter:
    """Several SQL conditions that must all hold, as one."""
    if len(filters) == 1:
        return filters[0]
    return SqlFilter(
        " AND ".join(f"({f.sql})" for f in filters),
        tuple(param for f in filters for param in f.params),
    )


class _KeySelection(ColumnSelection):
    """Allowed rows given as keys (from SQL), mapped onto the columns' slots."""

    def __init__(self, columns: MetadataColumns, keys: KeyArray) -> None:
        mask = np.zeros(columns.size, dtype=bool)
        slots = columns.slots_of(keys)
        mask[slots[slots >= 0]] = True
        super().__init__(columns, mask)


def filtered_search(
    store: Store,
    collection_id: int,
    applied: int,
    cache: FilterCache,
    index: SegmentedIndex,
    condition: Condition | None,
    document: SqlFilter | None,
    queries: FloatMatrix,
    k: int,
    *,
    params: Mapping[str, int] | None,
    exact: bool,
) -> tuple[tuple[FloatMatrix, KeyArray], QueryPlan]:
    """Answer a filtered query (call under the store's lock)."""
    started = time.perf_counter()
    cache.catch_up(store, collection_id, applied)
    selection, estimated, source = cache.selection(condition, document, store, collection_id)
    filtered = time.perf_counter()
    nq = queries.shape[0]
    used: dict[str, Any] = {}
    selection.uses += 1
    segments = [segment for _, segment in index.sealed]
    count, fraction = selection.count, selection.count / max(index.live, 1)
    if count == 0:
        strategy = "empty"
        hits = (np.empty((nq, 0), dtype=np.float32), np.empty((nq, 0), dtype=np.int64))
    elif exact or not segments or (count <= EXACT_ROWS and selection.uses < 2):
        strategy = "exact-filtered"
        if params:
            index.check_params(params)  # a scan: no knob applies, but a bad one is refused
        hits = index.search(queries, k, keys=selection.keys())
    elif fraction >= GRAPH_FRACTION or params or selection.uses < 2:
        # A filter seen once, or allowing many rows: the graph, others masked out.
        strategy = "ann-filtered"
        hits, used = index.search_selected(queries, k, selection, params=params)
    else:  # a filter used again: an index over its rows alone, once it is built
        subset = cache.subset_for(selection, segments, index)
        if subset.ready:
            strategy = f"subset-{subset.kind}"
            used = subset.params
            hits = _with_growing(index, selection, queries, k, subset.search(queries, k))
        else:  # building in the background
            strategy = "ann-filtered"
            hits, used = index.search_selected(queries, k, selection, params=params)
    searched = time.perf_counter()
    fallbacks = int(used.pop("exact_fallbacks", 0))
    return hits, QueryPlan(
        strategy=strategy,
        rows=index.live,
        estimated=estimated,
        allowed=selection.count,
        params={name: int(value) for name, value in used.items()},
        exact_fallbacks=fallbacks,
        filter_source=source,
        timings_ms={
            "filter": (filtered - started) * 1e3,
            "search": (searched - filtered) * 1e3,
        },
    )


def _with_growing(
    index: SegmentedIndex,
    selection: ColumnSelection,
    queries: FloatMatrix,
    k: int,
    hits: tuple[FloatMatrix, KeyArray],
) -> tuple[FloatMatrix, KeyArray]:
    """Merge the allowed rows of the growing segment (scanned) into a subset's hits."""
    parts = [hits]
    if len(index.growing):
        growing_keys, _ = index.growing.live_rows(copy=False)
        chosen = growing_keys[selection.contains(growing_keys)]
        if chosen.size:
            parts.append(index.growing.search(queries, k, keys=chosen))
    distances, keys, short = merge_to_width(parts, k, queries.shape[0], min(k, selection.count))
    if short.any():  # the probed lists held fewer than k allowed rows: scan
        distances[short], keys[short] = index.search(queries[short], k, keys=selection.keys())
    return distances, keys
