"""What the planner keeps of a filter, and the exact ways of answering it: a scan of the
allowed rows (a matrix of them where it fits, else each segment scanned whole with the
others masked), the same for a batch of tuning queries, and, while a metadata key's
column is still being read, the nearest rows by an exact scan tested in SQL."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.index import (
    SCORED_IN_PLACE,
    SealedSegment,
    exact_search,
    fill_rows,
    merge_hits,
    merge_to_width,
    rows_addressable,
    scores_of_rows,
    scores_to_distances,
    squared_norms,
)
from latentdb.query._selection import Selection
from latentdb.query._subset import SubsetGraph, SubsetMatrix, gather
from latentdb.space import Metric
from latentdb.store import SqlFilter, Store

__all__ = [
    "MATRIX_BYTES",
    "FilterPlan",
    "Measured",
    "exact_batch",
    "ranked_search",
    "scan",
    "with_growing",
    "with_segments",
]

FloatMatrix = npt.NDArray[np.float32]
KeyArray = npt.NDArray[np.int64]
Hits = tuple[FloatMatrix, KeyArray]

# Scan matrices kept, all filters together, and at most half of it for one filter.
MATRIX_BYTES = 64 << 20
# A batch of exact answers multiplies only the allowed rows of a segment, copied
# _GATHER_ROWS at a time, when they are at most this fraction of it: for a 50% filter of
# 100k rows the product over every row cost ~0.2 s per 32 queries, twice the needed work.
_GATHER_FRACTION = 0.6
_GATHER_ROWS = 16_384
# The nearest rows tested in SQL first when a column is missing, and the factor by which
# the depth grows when fewer than k of them pass.
_RANKED_DEPTH = 1024
_RANKED_GROWTH = 4


@dataclass(frozen=True)
class Measured:
    """A plan measured for one filter, and what it was measured on."""

    strategy: str  # "ann-filtered", "subset-hnsw", "subset-pq" or "exact-filtered"
    params: dict[str, int]
    recall: float  # mean recall@10 on the tuning queries (1.0 for the scan)
    lower: float  # its lower confidence bound
    queries: int  # tuning queries measured
    seconds: float  # per query
    pool: int  # tuning queries there were
    signature: tuple[tuple[int, int], ...]  # the sealed segments
    sealed: int  # the filter's allowed live rows in them
    unfiltered: float  # seconds of an unfiltered search, per query, timed alike


@dataclass
class FilterPlan:
    """What the planner keeps of one filter across writes."""

    uses: int = 0
    selection: Selection | None = None  # the latest evaluation
    measured: Measured | None = None
    queued: bool = False  # a measurement is waiting or running
    matrix: SubsetMatrix | None = None
    graph: SubsetGraph | None = None
    next_graph: SubsetGraph | None = None  # a graph of newer rows, building
    graph_measured: bool = False  # the graph was there when last measured
    scan_seconds: float | None = None  # a scan, per query (moving average)
    # Exact answers of tuning queries (their bytes -> keys), kept for the next
    # measurement while ``truth_key`` (the selection, its sealed rows, the index's write
    # sequence) stays the same.
    truths: dict[bytes, KeyArray] = field(default_factory=dict)
    truth_key: Any = None
    fraction: float = 1.0  # allowed / live rows, last seen


def exact_batch(
    plan: FilterPlan,
    selection: Selection,
    index: Any,
    queries: FloatMatrix,
    k: int,
    make_room: Callable[[int], None],
) -> Hits:
    """:func:`scan` for a batch of queries: one matrix product per segment."""
    segments = [segment for _, segment in index.sealed]
    matrix = plan.matrix
    if not segments or (matrix is not None and matrix.digest == selection.digest(segments)):
        return scan(plan, selection, index, queries, k, make_room)
    return _blocked(selection, index, segments, queries, k)


def _blocked(
    selection: Selection,
    index: Any,
    segments: list[SealedSegment],
    queries: FloatMatrix,
    k: int,
) -> Hits:
    """Exact top-k among the allowed rows of each segment, without a matrix kept: the
    allowed rows copied ``_GATHER_ROWS`` at a time where they are few enough (or where
    the segment's vectors are not aligned for BLAS: a mapped index's), else the
    segment's product over every row, masked."""
    parts = []
    for segment in segments:
        allowed = selection.rows_of(segment)
        rows = np.flatnonzero(allowed)
        if not rows.size:
            continue
        vectors: FloatMatrix = np.asarray(segment.vectors)
        if queries.shape[0] <= SCORED_IN_PLACE and rows_addressable(vectors):
            scores = scores_of_rows(queries, vectors, rows, index.metric)
            parts.append(_top(queries, scores, min(k, rows.size), segment.keys[rows], index.metric))
            continue
        blocks: list[tuple[npt.NDArray[np.intp] | None, FloatMatrix]]
        if rows.size > _GATHER_FRACTION * allowed.shape[0] and vectors.flags.aligned:
            blocks = [(None, vectors)]  # most rows allowed: the segment, masked
        else:  # the allowed rows only, copied a block at a time
            blocks = [
                (rows[start : start + _GATHER_ROWS], vectors[rows[start : start + _GATHER_ROWS]])
                for start in range(0, rows.size, _GATHER_ROWS)
            ]
        for block, rows_matrix in blocks:
            scores = queries @ rows_matrix.T
            if index.metric == "l2":
                norms = _norms(segment)
                scores = 2.0 * scores - (norms if block is None else norms[block])
            if block is None:
                scores[:, ~allowed] = -np.inf
            kept = min(k, rows.size if block is None else block.size)
            keys = segment.keys if block is None else segment.keys[block]
            parts.append(_top(queries, scores, kept, keys, index.metric))
    if len(index.growing):
        parts.append(index.growing.search_allowed(queries, k, selection.contains))
    distances, keys, _ = merge_to_width(parts, k, queries.shape[0], min(k, selection.count))
    return distances, keys


def _top(
    queries: FloatMatrix, scores: FloatMatrix, kept: int, keys: KeyArray, metric: Metric
) -> Hits:
    """The ``kept`` best-scored columns of ``scores`` (larger is closer) of each query, as
    distances and the ``keys`` of those columns (unsorted: the merge sorts)."""
    top = np.argpartition(-scores, kept - 1, axis=1)[:, :kept]
    top_scores = np.take_along_axis(scores, top, axis=1)
    return scores_to_distances(queries, top_scores, metric), keys[top]


def scan(
    plan: FilterPlan,
    selection: Selection,
    index: Any,
    queries: FloatMatrix,
    k: int,
    make_room: Callable[[int], None],
) -> Hits:
    """Exact top-k among the allowed rows: the sealed ones from the filter's matrix
    (made when it fits; ``make_room(bytes)`` drops older ones), else as
    :func:`_blocked` does."""
    segments = [segment for _, segment in index.sealed]
    if not segments:
        return index.search(queries, k, keys=selection.keys())  # type: ignore[no-any-return]
    matrix = plan.matrix
    digest = selection.digest(segments)
    if matrix is None or matrix.digest != digest:
        matrix = plan.matrix = None
        size = selection.sealed_count(segments) * index.dimension * 4
        if size <= MATRIX_BYTES // 2:
            make_room(size)
            keys, vectors = gather(segments, [selection.rows_of(s) for s in segments])
            matrix = plan.matrix = SubsetMatrix(keys, vectors, index.metric, digest)
    if matrix is not None:
        return with_growing(index, selection, queries, k, matrix.search(queries, k))
    # Too many rows to keep a matrix of: copied a block at a time. Scanning the segment
    # whole with the others masked took 0.65 s a query for a 10% filter of 1M rows,
    # where its 100k rows take a fifth of that.
    return _blocked(selection, index, segments, queries, k)


_NORMS: dict[int, tuple[Any, FloatMatrix]] = {}


def _norms(segment: SealedSegment) -> FloatMatrix:
    """||row||^2 of a segment's rows (l2 scans), kept while its vectors are."""
    vectors = segment.vectors
    cached = _NORMS.get(id(vectors))
    if cached is None or cached[0] is not vectors:
        if len(_NORMS) > 16:
            _NORMS.clear()
        cached = _NORMS[id(vectors)] = (vectors, squared_norms(vectors))
    return cached[1]


def with_segments(
    index: Any,
    selection: Selection,
    queries: FloatMatrix,
    k: int,
    hits: Hits,
    segments: list[SealedSegment],
) -> Hits:
    """Merge the allowed rows of ``segments`` (sealed since a filter's graph was built:
    few, so scanned exactly) into ``hits`` from the graph."""
    if not segments:
        return hits
    parts = [hits]
    metric = index.metric
    for segment in segments:
        keys, matrix, norms = selection.gathered(segment, norms=metric == "l2")
        if keys.size:
            distances, rows = exact_search(queries, matrix, k, metric, norms=norms)
            parts.append((distances, keys[rows]))
    return merge_hits(parts, k, queries.shape[0])


def with_growing(
    index: Any,
    selection: Selection,
    queries: FloatMatrix,
    k: int,
    hits: Hits,
) -> Hits:
    """Merge the allowed rows of the growing segment (scanned) into hits from the sealed
    rows; queries that come up short of k (when k rows are allowed) are scanned."""
    parts = [hits]
    if len(index.growing):
        parts.append(index.growing.search_allowed(queries, k, selection.contains))
    distances, keys, short = merge_to_width(parts, k, queries.shape[0], min(k, selection.count))
    if short.any():
        fill_rows(distances, keys, short, index.search(queries[short], k, keys=selection.keys()))
    return distances, keys


def ranked_search(
    store: Store,
    collection_id: int,
    index: Any,
    where: SqlFilter,
    queries: FloatMatrix,
    k: int,
) -> tuple[Hits, int | None]:
    """Exact top-k among the rows ``where`` allows, without the metadata columns: each
    query's nearest rows, by an exact scan of the index, are tested in SQL, deeper until
    k pass or every row was tested. Returns the hits and the allowed rows estimated
    from the deepest test."""
    live = int(index.live)
    rows_d, rows_k = [], []
    estimate: int | None = None
    for row in range(queries.shape[0]):
        query = queries[row : row + 1]
        depth = min(live, max(_RANKED_DEPTH, 8 * k))
        tested = 0
        passed = np.empty(0, dtype=np.int64)
        while True:
            distances, keys = index.search(query, depth, exact=True)
            found = keys[0] >= 0
            distances, keys = distances[0][found], keys[0][found]
            # The ranking is exact, so the nearer rows are the ones tested already.
            fresh = store.keys_matching(collection_id, keys[tested:].tolist(), where)
            passed = np.concatenate([passed, fresh])
            tested = keys.shape[0]
            chosen = np.isin(keys, passed)
            hits = int(chosen.sum())
            estimate = round(hits * live / max(tested, 1))
            if hits >= k or depth >= live:
                distances, keys = distances[chosen][:k], keys[chosen][:k]
                break
            # Deep enough for k at the rate seen so far, at least _RANKED_GROWTH times.
            rate = (hits + 1) / (tested + 2)
            depth = min(live, max(depth * _RANKED_GROWTH, math.ceil(2 * k / rate)))
        rows_d.append(distances)
        rows_k.append(keys)
    width = min(len(row) for row in rows_k) if rows_k else 0
    out_d = np.stack([row[:width] for row in rows_d]).astype(np.float32, copy=False)
    out_k = np.stack([row[:width] for row in rows_k]).astype(np.int64, copy=False)
    return (out_d.reshape(len(rows_d), width), out_k.reshape(len(rows_k), width)), estimate
