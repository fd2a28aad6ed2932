"""Exact search: a dense float32 matrix of live vectors, keyed by int64 row keys.

The reference every approximate index is judged against. The matrix grows by doubling;
rows stay in ascending key order (new keys are always larger, see store/), so a set of
keys maps to rows with one ``searchsorted``. Deleted rows are masked until enough pile
up, then dropped in one pass.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from latentdb.index._distance import (
    distance_matrix,
    one_query_distances,
    pair_distances,
    squared_norms,
)
from latentdb.index._memory import forget
from latentdb.space import Metric

__all__ = [
    "SCORED_IN_PLACE",
    "FlatIndex",
    "SearchHits",
    "exact_search",
    "rescore",
    "rows_addressable",
    "scores_of_rows",
]

FloatMatrix = npt.NDArray[np.float32]
KeyArray = npt.NDArray[np.int64]
SearchHits = tuple[FloatMatrix, KeyArray]

# Up to this many queries, a scan of chosen rows scores each row where it lies
# (:func:`scores_of_rows`) rather than copying the rows out for one matrix product.
SCORED_IN_PLACE = 4

# Which scan serves a batch, measured on 100k x 384 on the 2-core dev machine (QPS):
#
#   queries                 1    2    4    8   16   64  256  1000
#   numpy sgemm+argpart    79   65  115  223  342  491  457   521
#   faiss sequential       53  124  122  127  127  116  117     -
#   faiss BLAS + heap      56   64  121  183  389  847 1146  1254
#
# faiss 1.15 takes its BLAS path only from queries x dimension >= 128,000
# (distance_compute_blas_threshold), so 2-333 queries at 384-d ran sequentially at
# ~120 QPS (bench/exact.py sweep); we lower the threshold for batches of 8 or more.
#
# Which of the two is faster for batches depends on the machine: on another 2-core box
# faiss's own OpenBLAS ran its Prescott (SSE3) kernels where numpy's ran SkylakeX ones,
# and 2,000 queries against 100k rows took faiss 9.3 s against numpy's 3.3 s (blocks of
# sgemm + argpartition). So batches take whichever :func:`numpy_batches_faster`
# measured to be faster, once per process.
_NUMPY_MAX_QUERIES = 1
_BLAS_MIN_QUERIES = 8
# Smaller batches always take numpy's (faster or within ~15% of faiss's on both boxes).
_CALIBRATED_QUERIES = 64
_FAISS_MARGIN = 0.7
# Rows copied at a time from a matrix numpy cannot hand to BLAS (not aligned).
_UNALIGNED_ROWS = 1 << 16
# Scores held at a time by numpy's batch scan (queries x rows floats: 64 MiB).
_BATCH_SCORES = 1 << 24
# Masked rows cost an over-fetch per query; past this many, compact once instead.
_MAX_MASKED_ROWS = 256


class FlatIndex:
    """Exact k-nearest-neighbour search over the rows it holds.

    Distances are smaller-is-closer: cosine → 1 - <q, x> (rows and queries must be unit
    length), l2 → squared Euclidean, ip → -<q, x>.
    """

    def __init__(self, dimension: int, metric: Metric) -> None:
        self.dimension = dimension
        self.metric = metric
        self._vectors: FloatMatrix = np.empty((0, dimension), dtype=np.float32)
        self._keys: KeyArray = np.empty(0, dtype=np.int64)
        # The write sequence of each row's version (see SealedSegment.sequences).
        self._sequences: KeyArray = np.empty(0, dtype=np.int64)
        self._alive = np.empty(0, dtype=bool)
        self._size = 0
        self._masked = 0
        # Squared row norms for the l2 single-query path, rebuilt after a write.
        self._norms: FloatMatrix | None = None
        # Arrays a frozen copy (a reader's snapshot) also holds: a write that would
        # change their first ``_size`` rows in place copies them first.
        self._shared: set[str] = set()
        self._frozen = False

    def __len__(self) -> int:
        """Number of live rows."""
        return self._size - self._masked

    # -- snapshots ----------------------------------------------------------------

    def frozen(self) -> FlatIndex:
        """A copy that no later write changes, sharing this index's arrays (cheap).

        The rows it sees are the first ``_size`` of arrays that writes here only ever
        append to; a write that would change them in place (a delete, an update, a
        compaction) first copies the array it changes.
        """
        view = FlatIndex.__new__(FlatIndex)
        view.__dict__.update(self.__dict__)
        view._shared, view._frozen = set(), True
        self._shared = {"_vectors", "_keys", "_sequences", "_alive"}
        return view

    def unshare(self) -> None:
        """Forget that frozen copies share the arrays (once none is searched any more)."""
        self._shared = set()

    def _own(self, *names: str) -> None:
        """Copy those of the named arrays that a frozen copy shares (before a write)."""
        if self._frozen:
            raise RuntimeError("a frozen FlatIndex is read-only")
        for name in names:
            if name in self._shared:
                setattr(self, name, getattr(self, name).copy())
                self._shared.discard(name)

    # -- writes -------------------------------------------------------------------

    def _reserve(self, rows: int) -> None:
        if rows <= self._vectors.shape[0]:
            return
        capacity = max(rows, 2 * self._vectors.shape[0], 1024)
        vectors = np.empty((capacity, self.dimension), dtype=np.float32)
        vectors[: self._size] = self._vectors[: self._size]
        keys = np.empty(capacity, dtype=np.int64)
        keys[: self._size] = self._keys[: self._size]
        sequences = np.zeros(capacity, dtype=np.int64)
        sequences[: self._size] = self._sequences[: self._size]
        alive = np.zeros(capacity, dtype=bool)
        alive[: self._size] = self._alive[: self._size]
        self._vectors, self._keys, self._alive = vectors, keys, alive
        self._sequences = sequences
        self._shared = set()

    def _rows_of(self, keys: KeyArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Row positions of ``keys`` and which of them are held (alive or masked)."""
        held = self._keys[: self._size]
        rows = np.searchsorted(held, keys)
        found = rows < self._size
        found[found] = held[rows[found]] == keys[found]
        return rows, found

    def upsert(
        self,
        keys: KeyArray,
        vectors: FloatMatrix,
        *,
        sequences: KeyArray | None = None,
        adopt: bool = False,
    ) -> None:
        """Add rows, or overwrite the vectors of keys already held.

        Args:
            keys: int64 (n,), unique.
            vectors: float32 (n, dimension), already normalized where the metric wants.
            sequences: int64 (n,): the write sequence of each row's version (0 if None).
            adopt: The caller hands ``vectors`` over (never uses it again): an empty
                index keeps that array rather than a copy (a collection read back whole
                would otherwise be held twice while it loads).
        """
        keys = np.asarray(keys, dtype=np.int64)
        if keys.size == 0:
            return
        if sequences is None:
            sequences = np.zeros(keys.shape[0], dtype=np.int64)
        self._own()  # a frozen copy is read-only
        if adopt and self._size == 0 and _adoptable(keys, vectors, self.dimension):
            self._shared = set()
            self._vectors, self._keys = vectors, keys.copy()
            self._sequences = np.array(sequences, dtype=np.int64)
            self._alive = np.ones(keys.shape[0], dtype=bool)
            self._size, self._masked, self._norms = keys.shape[0], 0, None
            return
        rows, found = self._rows_of(keys)
        if found.any():
            held_rows = rows[found]
            self._own("_vectors", "_sequences", "_alive")
            self._masked -= int(np.count_nonzero(~self._alive[held_rows]))
            self._vectors[held_rows] = vectors[found]
            self._sequences[held_rows] = sequences[found]
            self._alive[held_rows] = True
        new = ~found
        count = int(np.count_nonzero(new))
        if count:
            self._reserve(self._size + count)
            start, stop = self._size, self._size + count
            self._vectors[start:stop] = vectors[new]
            self._keys[start:stop] = keys[new]
            self._sequences[start:stop] = sequences[new]
            self._alive[start:stop] = True
            self._size = stop
            tail = self._keys[max(start - 1, 0) : stop]
            if not np.all(tail[1:] > tail[:-1]):  # only if keys came out of order
                self._own("_vectors", "_keys", "_sequences", "_alive")
                order = np.argsort(self._keys[:stop], kind="stable")
                self._vectors[:stop] = self._vectors[order]
                self._keys[:stop] = self._keys[order]
                self._sequences[:stop] = self._sequences[order]
                self._alive[:stop] = self._alive[order]
        self._norms = None

    def remove(self, keys: KeyArray) -> None:
        """Remove rows by key; keys not held are ignored."""
        keys = np.asarray(keys, dtype=np.int64)
        if keys.size == 0 or self._size == 0:
            return
        rows, found = self._rows_of(keys)
        rows = rows[found]
        rows = rows[self._alive[rows]]
        if not rows.size:
            return
        self._own("_alive")
        self._alive[rows] = False
        self._masked += int(np.unique(rows).size)
        self._norms = None

    def compact(self) -> None:
        """Drop masked rows now."""
        if not self._masked:
            return
        self._own("_vectors", "_keys", "_sequences", "_alive")
        keep = np.flatnonzero(self._alive[: self._size])
        count = keep.size
        self._vectors[:count] = self._vectors[keep]
        self._keys[:count] = self._keys[keep]
        self._sequences[:count] = self._sequences[keep]
        self._alive[:count] = True
        self._alive[count : self._size] = False
        self._size, self._masked = count, 0
        self._norms = None

    def forget_pages(self, rows: npt.NDArray[np.intp]) -> None:
        """Hand the memory of ``rows`` (a run of consecutive rows) back to the system.

        For a build that copies this index's rows into another and then drops this
        index: the whole pages inside those rows read as zeros afterwards, so the index
        must not be searched again. Linux only; elsewhere nothing happens.
        """
        if rows.size == 0 or "_vectors" in self._shared:  # a snapshot still reads them
            return
        row_bytes = self.dimension * 4
        base = self._vectors.ctypes.data
        forget(base + int(rows.min()) * row_bytes, base + (int(rows.max()) + 1) * row_bytes)

    def live_rows(self, *, copy: bool = True) -> tuple[KeyArray, FloatMatrix]:
        """Keys and vectors of the live rows, ascending by key.

        Args:
            copy: False may return views of the index's own arrays (when no row is
                masked): valid only until the next write, and never to be written to.
        """
        if not copy and not self._masked:
            return self._keys[: self._size], self._vectors[: self._size]
        rows = np.flatnonzero(self._alive[: self._size])
        return self._keys[rows], self._vectors[rows]

    def holds(self, keys: KeyArray) -> npt.NDArray[np.bool_]:
        """Which of ``keys`` are held alive."""
        rows, found = self._rows_of(np.asarray(keys, dtype=np.int64))
        found[found] = self._alive[rows[found]]
        return found

    def vectors_of(self, keys: KeyArray) -> FloatMatrix:
        """A copy of the held vectors of ``keys`` (all must be held)."""
        rows, _ = self._rows_of(np.asarray(keys, dtype=np.int64))
        return self._vectors[rows].copy()

    def sequences_of(self, keys: KeyArray) -> KeyArray:
        """The write sequences of the held rows of ``keys`` (all must be held)."""
        rows, _ = self._rows_of(np.asarray(keys, dtype=np.int64))
        return self._sequences[rows].copy()

    # -- search -------------------------------------------------------------------

    def search(self, queries: FloatMatrix, k: int, *, keys: KeyArray | None = None) -> SearchHits:
        """The ``k`` nearest held rows of each query, nearest first.

        Args:
            queries: float32 (nq, dimension), C-contiguous.
            k: Neighbours wanted; fewer come back when fewer rows are eligible.
            keys: When given, only these keys are eligible (a pre-filter).

        Returns:
            (distances float32 (nq, k'), keys int64 (nq, k')) with k' = min(k, eligible).
        """
        if keys is not None:
            rows, found = self._rows_of(np.asarray(keys, dtype=np.int64))
            rows = np.unique(rows[found])
            rows = rows[self._alive[rows]]
            matrix = self._vectors[rows]
            norms = squared_norms(matrix) if self.metric == "l2" else None
            distances, positions = exact_search(queries, matrix, k, self.metric, norms=norms)
            return distances, self._keys[rows][positions]
        if self._masked > _MAX_MASKED_ROWS and not self._frozen:
            self.compact()
        matrix = self._vectors[: self._size]
        alive = self._alive[: self._size] if self._masked else None
        if self.metric == "l2" and self._norms is None:
            self._norms = squared_norms(matrix)
        distances, positions = exact_search(
            queries, matrix, k, self.metric, alive=alive, norms=self._norms
        )
        return distances, self._keys[positions]

    def search_allowed(
        self,
        queries: FloatMatrix,
        k: int,
        allowed: Callable[[KeyArray], npt.NDArray[np.bool_]],
    ) -> SearchHits:
        """:meth:`search` over the held live rows whose keys ``allowed`` admits (a
        filter's test of keys, asked once over the held keys in place). For a few
        queries the rows are scored where they lie (:func:`scores_of_rows`); ``keys=``
        looked each allowed key up and copied its row out: 0.57 ms of a filtered query
        beside a writer (3.5k growing rows, half of them allowed)."""
        size = self._size
        mask = allowed(self._keys[:size])
        if self._masked:
            mask &= self._alive[:size]
        rows = np.flatnonzero(mask)
        nq = queries.shape[0]
        if not rows.size:
            return np.empty((nq, 0), dtype=np.float32), np.empty((nq, 0), dtype=np.int64)
        if nq > SCORED_IN_PLACE or not rows_addressable(self._vectors):
            return self.search(queries, k, keys=self._keys[rows])
        scores = scores_of_rows(queries, self._vectors, rows, self.metric)
        kept = min(k, rows.size)
        chosen = rows[np.argpartition(-scores, kept - 1, axis=1)[:, :kept]]
        distances = pair_distances(queries, self._vectors[chosen], self.metric)
        order = np.argsort(distances, axis=1, kind="stable")
        chosen = np.take_along_axis(chosen, order, axis=1)
        return np.take_along_axis(distances, order, axis=1), self._keys[chosen]

    def nearer_than(self, query: FloatMatrix, bound: float, k: int) -> SearchHits:
        """Held rows closer to one query than ``bound``, at most ``k`` of them (unsorted).

        The single-query path: the sealed segments' k-th distance is the bound, so only
        the few growing rows that beat it are merged in.

        Args:
            query: float32 (dimension,).

        Returns:
            (distances float32 (m,), keys int64 (m,)), m <= k.
        """
        if self._masked > _MAX_MASKED_ROWS and not self._frozen:
            self.compact()
        matrix = self._vectors[: self._size]
        if self.metric == "l2" and self._norms is None:
            self._norms = squared_norms(matrix)
        distances = distance_matrix(query[None, :], matrix, self.metric, row_norms=self._norms)[0]
        if self._masked:
            distances[~self._alive[: self._size]] = np.inf
        rows = np.flatnonzero(distances < bound)
        if rows.size > k:
            rows = rows[np.argpartition(distances[rows], k - 1)[:k]]
        found = distances[rows]
        if self.metric != "ip":  # rounding can dip a tiny bit below zero
            found = np.maximum(found, 0.0)
        return found.astype(np.float32, copy=False), self._keys[rows]


def _adoptable(keys: KeyArray, vectors: FloatMatrix, dimension: int) -> bool:
    """Whether an empty FlatIndex can take ``vectors`` as its own matrix."""
    return (
        vectors.dtype == np.float32
        and vectors.shape == (keys.shape[0], dimension)
        and vectors.flags.c_contiguous
        and vectors.flags.writeable
        and vectors.base is None  # owns its memory: not a view into someone's array
        and bool(np.all(keys[1:] > keys[:-1]))
    )


def exact_search(
    queries: FloatMatrix,
    matrix: FloatMatrix,
    k: int,
    metric: Metric,
    *,
    alive: npt.NDArray[np.bool_] | None = None,
    norms: FloatMatrix | None = None,
) -> tuple[FloatMatrix, npt.NDArray[np.intp]]:
    """Exact top-k of ``queries`` against the rows of ``matrix``, nearest first.

    Args:
        queries: float32 (nq, d).
        matrix: float32 (n, d), C-contiguous.
        k: Neighbours wanted.
        metric: Decides the distance (smaller is closer).
        alive: bool (n,): rows to consider, or None for all.
        norms: ||row||^2 (n,) for l2, to save a pass over ``matrix`` (computed if None).

    Returns:
        (distances float32 (nq, k'), row positions (nq, k')), k' = min(k, rows alive).
    """
    masked = 0 if alive is None else int(matrix.shape[0] - np.count_nonzero(alive))
    kept = min(k, matrix.shape[0] - masked)
    nq = queries.shape[0]
    if kept <= 0:
        return np.empty((nq, 0), dtype=np.float32), np.empty((nq, 0), dtype=np.intp)
    if nq <= _NUMPY_MAX_QUERIES:
        if metric == "l2" and norms is None:
            norms = squared_norms(matrix)
        _, positions = _scan_numpy(queries, matrix, kept, alive, norms if metric == "l2" else None)
    elif nq < _CALIBRATED_QUERIES or numpy_batches_faster():
        if metric == "l2" and norms is None:
            norms = squared_norms(matrix)
        positions = _scan_numpy_batch(
            queries, matrix, kept, alive, norms if metric == "l2" else None
        )
    else:
        _, positions = _scan_faiss(queries, matrix, kept, masked, alive, metric)
    # The scan's scores depend on the shape of the matrix multiply (BLAS blocks and sums
    # in a different order for another row count or thread count, ~1e-7 apart): the
    # distances returned are computed again pair by pair, so a row's distance to a query
    # is the same bits whichever segment, shard or batch it was found in.
    return rescore(queries, matrix, positions, metric)


# Query x candidate x dimension floats gathered at a time by rescore (16 MiB).
_RESCORE_FLOATS = 1 << 22


def _rescore_one(
    query: FloatMatrix,
    matrix: FloatMatrix,
    positions: npt.NDArray[np.intp],
    metric: Metric,
    missing: npt.NDArray[np.bool_] | None,
) -> tuple[FloatMatrix, npt.NDArray[np.intp]]:
    """:func:`rescore` of one query (d,) and its positions (c,): the same einsum sums,
    bit for bit, as :func:`pair_distances` makes for it in a batch."""
    rows = np.asarray(matrix[positions], dtype=np.float32)
    distances = one_query_distances(query, rows, metric)
    if missing is not None:
        distances[missing[0]] = np.inf
    order = np.argsort(distances, kind="stable")
    return distances[order][None, :], positions[order][None, :]


def rescore(
    queries: FloatMatrix,
    matrix: FloatMatrix,
    positions: npt.NDArray[np.intp],
    metric: Metric,
    *,
    missing: npt.NDArray[np.bool_] | None = None,
) -> tuple[FloatMatrix, npt.NDArray[np.intp]]:
    """Exact distances of each query to the rows at its ``positions`` (nq, c) of
    ``matrix``, nearest first (:func:`pair_distances`; ties keep the given order).

    Args:
        missing: (nq, c) positions that stand for no row (any valid index): their
            distance is inf, so they come last.
    """
    nq, width = positions.shape
    if width == 0:
        return np.empty((nq, 0), dtype=np.float32), positions
    if nq == 1:  # one query, in 1-d numpy calls (~20 us; the general path costs 5x that)
        return _rescore_one(queries[0], matrix, positions[0], metric, missing)
    step = max(1, _RESCORE_FLOATS // (width * matrix.shape[1]))
    distances = np.empty((nq, width), dtype=np.float32)
    for start in range(0, nq, step):
        stop = start + step
        rows = np.asarray(matrix[positions[start:stop]], dtype=np.float32)
        distances[start:stop] = pair_distances(queries[start:stop], rows, metric)
    if missing is not None:
        distances[missing] = np.inf
    if width == 1:
        return distances, positions
    order = np.argsort(distances, axis=1, kind="stable")
    ordered = np.take_along_axis(positions, order, axis=1)
    return np.take_along_axis(distances, order, axis=1), ordered


def rows_addressable(vectors: FloatMatrix) -> bool:
    """Whether faiss can read ``vectors``' rows by index in place: float32, rows packed
    one after another (alignment does not matter to it, as it does to BLAS)."""
    return bool(vectors.dtype == np.float32 and vectors.ndim == 2 and vectors.flags.c_contiguous)


def scores_of_rows(
    queries: FloatMatrix, vectors: FloatMatrix, rows: npt.NDArray[np.intp], metric: str
) -> FloatMatrix:
    """Scores (as :func:`scores_to_distances` takes them) of ``queries`` (a few) against
    ``vectors[rows]``, computed by faiss on the rows where they lie: no copy of them. A
    50% filter of 100k PyPI rows scanned this way took 7.2 ms a query on one core, where
    copying the rows out a block at a time for BLAS took 18.9 (and 45 in the planner's
    scan beside the rest). Scores rank rows; distances returned are computed again."""
    ids = np.ascontiguousarray(rows, dtype=np.int64)
    count, dimension = ids.shape[0], vectors.shape[1]
    scores = np.empty((queries.shape[0], count), dtype=np.float32)
    # faiss's SWIG type stubs lack the by-index distance functions.
    functions: Any = faiss
    by_rows = (
        functions.fvec_L2sqr_by_idx if metric == "l2" else functions.fvec_inner_products_by_idx
    )
    for row in range(queries.shape[0]):
        query = np.ascontiguousarray(queries[row], dtype=np.float32)
        by_rows(
            faiss.swig_ptr(scores[row]), faiss.swig_ptr(query), faiss.swig_ptr(vectors),
            faiss.swig_ptr(ids), dimension, 1, count,
        )  # fmt: skip
    if metric == "l2":  # ||q||^2 - ||q - x||^2, as the BLAS path scores rows
        scores = squared_norms(queries)[:, None] - scores
    return scores


def _scan_numpy(
    queries: FloatMatrix,
    matrix: FloatMatrix,
    k: int,
    alive: npt.NDArray[np.bool_] | None,
    norms: FloatMatrix | None,
) -> tuple[FloatMatrix, npt.NDArray[np.intp]]:
    """Top-k by score (larger is closer) for one query: sgemv + argpartition.

    Written on 1-d arrays: take_along_axis and friends cost ~20 us a call, as much as
    the scan of a few hundred rows.
    """
    if matrix.flags.aligned:
        scores = matrix @ queries[0]  # (n,)
    else:  # not BLAS's: a copy of a block of rows at a time is
        scores = np.empty(matrix.shape[0], dtype=np.float32)
        for start, block in _aligned_rows(matrix, _UNALIGNED_ROWS):
            scores[start : start + block.shape[0]] = block @ queries[0]
    _ranked(scores, norms, alive)
    n = scores.shape[0]
    top = np.argpartition(scores, n - k)[n - k :] if k < n else np.arange(n)
    top = top[np.argsort(-scores[top], kind="stable")]
    return scores[top][None, :], top[None, :]


def _ranked(
    scores: FloatMatrix, norms: FloatMatrix | None, alive: npt.NDArray[np.bool_] | None
) -> FloatMatrix:
    """Inner products (..., n) turned in place into scores that rank like the metric:
    with ``norms`` (l2), 2<q, x> - ||x||^2, which ranks like -||q - x||^2
    (scores_to_distances adds ||q||^2); rows not ``alive`` at -inf."""
    if norms is not None:
        scores *= 2.0
        scores -= norms
    if alive is not None:
        scores[..., ~alive] = -np.inf
    return scores


def _scan_numpy_batch(
    queries: FloatMatrix,
    matrix: FloatMatrix,
    k: int,
    alive: npt.NDArray[np.bool_] | None,
    norms: FloatMatrix | None,
) -> npt.NDArray[np.intp]:
    """The positions of the top-k by score of each query (unordered: :func:`rescore`
    orders them): numpy's sgemm over blocks of queries, then argpartition."""
    n = matrix.shape[0]
    if not matrix.flags.aligned:
        return _scan_unaligned(queries, matrix, k, alive, norms)
    step = max(1, _BATCH_SCORES // max(n, 1))
    positions = np.empty((queries.shape[0], k), dtype=np.intp)
    for start in range(0, queries.shape[0], step):
        scores = _ranked(queries[start : start + step] @ matrix.T, norms, alive)  # (b, n)
        if k < n:
            positions[start : start + step] = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        else:
            positions[start : start + step] = np.arange(n)
    return positions


def _aligned_rows(matrix: FloatMatrix, rows: int) -> Iterator[tuple[int, FloatMatrix]]:
    """(first row, an aligned copy of ``rows`` rows of ``matrix``) block by block."""
    for start in range(0, matrix.shape[0], rows):
        yield start, np.array(matrix[start : start + rows], dtype=np.float32)


def _scan_unaligned(
    queries: FloatMatrix,
    matrix: FloatMatrix,
    k: int,
    alive: npt.NDArray[np.bool_] | None,
    norms: FloatMatrix | None,
) -> npt.NDArray[np.intp]:
    """:func:`_scan_numpy_batch` of a matrix numpy cannot hand to BLAS: a mapped
    index's vectors lie where faiss's file put them (34 bytes past a 64-byte boundary
    here, not even 4-byte aligned), and numpy's own loop then took ~60x as long (the live
    recall of 500 queries at 1M rows: 138 s). Each block of rows is copied once, scored
    against every query, and its top k kept; the best k of those are the answer."""
    nq = queries.shape[0]
    rows = max(k, min(_UNALIGNED_ROWS, _BATCH_SCORES // max(nq, 1)))
    found_positions, found_scores = [], []
    for start, block in _aligned_rows(matrix, rows):
        stop = start + block.shape[0]
        scores = _ranked(
            queries @ block.T,  # (nq, b)
            None if norms is None else norms[start:stop],
            None if alive is None else alive[start:stop],
        )
        kept = min(k, block.shape[0])
        top = np.argpartition(scores, block.shape[0] - kept, axis=1)[:, block.shape[0] - kept :]
        found_positions.append(top + start)
        found_scores.append(np.take_along_axis(scores, top, axis=1))
    positions = np.concatenate(found_positions, axis=1)
    scores = np.concatenate(found_scores, axis=1)
    if positions.shape[1] > k:
        best = np.argpartition(scores, positions.shape[1] - k, axis=1)[:, positions.shape[1] - k :]
        positions = np.take_along_axis(positions, best, axis=1)
    return positions.astype(np.intp, copy=False)


@functools.cache
def numpy_batches_faster() -> bool:
    """Whether numpy's batch scan beats faiss's on this machine: both timed once, on 32
    random queries against 10,000 random rows of 128 dimensions, the fastest of three
    runs each (~50 ms in all; numpy 2.5 ms against faiss's 16.4 ms on the box above),
    faiss taken only where it ran in under ``_FAISS_MARGIN`` of numpy's time."""
    rng = np.random.default_rng(0)
    matrix = rng.random((10_000, 128), dtype=np.float32) - 0.5
    queries = rng.random((32, 128), dtype=np.float32) - 0.5

    def timed(scan: Callable[[], object]) -> float:
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            scan()
            best = min(best, time.perf_counter() - started)
        return best

    numpy_seconds = timed(lambda: _scan_numpy_batch(queries, matrix, 10, None, None))
    faiss_seconds = timed(lambda: _scan_faiss(queries, matrix, 10, 0, None, "ip"))
    # faiss only where it is clearly faster: a busy moment may slow either one.
    return faiss_seconds > _FAISS_MARGIN * numpy_seconds


def _scan_faiss(
    queries: FloatMatrix,
    matrix: FloatMatrix,
    k: int,
    masked: int,
    alive: npt.NDArray[np.bool_] | None,
    metric: Metric,
) -> tuple[FloatMatrix, npt.NDArray[np.intp]]:
    """Top-k by score for a batch: faiss's blocked BLAS scan with a heap per query."""
    fetch = min(k + masked, matrix.shape[0])
    # A process-wide faiss setting that changes speed, never results: a race with
    # another thread's faiss call costs at most that call some time.
    threshold = faiss.cvar.distance_compute_blas_threshold
    if queries.shape[0] >= _BLAS_MIN_QUERIES:
        faiss.cvar.distance_compute_blas_threshold = 1
    try:
        if metric == "l2":
            distances, positions = faiss.knn(queries, matrix, fetch, metric=faiss.METRIC_L2)
            # Back to a score without ||q||^2, so scores_to_distances treats both alike.
            scores = squared_norms(queries)[:, None] - distances
        else:
            scores, positions = faiss.knn(queries, matrix, fetch, metric=faiss.METRIC_INNER_PRODUCT)
    finally:
        faiss.cvar.distance_compute_blas_threshold = threshold
    if alive is not None:
        keep = np.argsort(~alive[positions], axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(scores, keep, axis=1)
        positions = np.take_along_axis(positions, keep, axis=1)
    return scores.astype(np.float32, copy=False), positions.astype(np.intp, copy=False)
