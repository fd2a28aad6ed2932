"""Estimators of a latent space's geometry, as plain functions over numpy arrays.

Each takes float32 (n, d) rows and returns numbers; none knows about collections.
They are checked on data with known answers in ``tests/analysis/test_estimators.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from latentdb.errors import InvalidArgumentError
from latentdb.index import distance_matrix, exact_search

__all__ = [
    "DUPLICATE_FRACTION",
    "DimensionPoint",
    "Hubness",
    "NeighbourScan",
    "dimension_curve",
    "distance_profile",
    "gaussian_like",
    "gaussian_rows",
    "hubness",
    "hubness_skewness",
    "k_occurrence",
    "levina_bickel",
    "nearest_others",
    "norm_summary",
    "occurrence_skewness",
    "relative_contrast",
    "scan_neighbours",
    "two_nn",
]

FloatMatrix = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.float64]
IntMatrix = npt.NDArray[np.int64]

# Near-duplicates on unit vectors: |a - b|^2 <= 0.02, i.e. cosine similarity >= 0.99.
DUPLICATE_FRACTION = 0.02
# Student's t at 97.5% by degrees of freedom: a 95% interval from (df + 1) query groups.
_T_975 = {4: 2.776, 9: 2.262, 19: 2.093}
# Queries per block of a scan: a 256 x 100,000 float32 block of distances is 100 MB.
_BLOCK = 256


def _as_rows(vectors: object, name: str) -> FloatMatrix:
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise InvalidArgumentError(
            f"{name} must be a non-empty (n, d) array; got shape {tuple(rows.shape)}"
        )
    return rows


@dataclass(frozen=True)
class NormSummary:
    """Lengths of the vectors.

    Attributes:
        mean, std, min, max: Of the Euclidean norms.
        unit_length: Every norm is within ``tolerance`` of 1.
        tolerance: The tolerance used.
    """

    mean: float
    std: float
    min: float
    max: float
    unit_length: bool
    tolerance: float


def norm_summary(vectors: object, *, tolerance: float = 1e-3) -> NormSummary:
    """Mean, spread and range of the norms of ``vectors`` (n, d), and whether all are 1.

    Raises:
        InvalidArgumentError: not a non-empty 2-D array.
    """
    rows = _as_rows(vectors, "vectors")
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    return NormSummary(
        mean=float(norms.mean()),
        std=float(norms.std()),
        min=float(norms.min()),
        max=float(norms.max()),
        unit_length=bool(np.abs(norms - 1.0).max() <= tolerance),
        tolerance=tolerance,
    )


@dataclass(frozen=True)
class NeighbourScan:
    """What one exact pass of sampled queries over all rows measures.

    Attributes:
        nearest: float64 (nq,): Euclidean distance of each query to its nearest other row.
        second: float64 (nq,): ... to its second nearest other row.
        mean: float64 (nq,): ... to the other rows on average.
        farthest: float64 (nq,): ... to its farthest row.
        neighbours: int64 (nq, k): positions (in ``rows``) of each query's k nearest
            other rows in the scan's metric, nearest first.
        euclidean_neighbours: int64 (nq, k): the same under Euclidean distance.
        cosine_neighbours: int64 (nq, k): the same under cosine distance.
        near_duplicates: int64 (nq,): other rows within ``radius``.
        radius: Euclidean distance within which a row counts as a near-duplicate.
    """

    nearest: FloatArray
    second: FloatArray
    mean: FloatArray
    farthest: FloatArray
    neighbours: IntMatrix
    euclidean_neighbours: IntMatrix
    cosine_neighbours: IntMatrix
    near_duplicates: IntMatrix
    radius: float


def _top(scores: npt.NDArray[np.float32], k: int) -> IntMatrix:
    """Columns of the k smallest scores of each row, smallest first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(scores, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def _positions(query_positions: object, n: int) -> IntMatrix:
    positions = np.asarray(query_positions, dtype=np.int64)
    if positions.ndim != 1 or positions.size == 0 or positions.min() < 0 or positions.max() >= n:
        raise InvalidArgumentError(f"query_positions must be positions in [0, {n})")
    return positions


def scan_neighbours(
    rows: object,
    query_positions: object,
    *,
    k: int,
    metric: str,
    duplicate_radius: float = 0.0,
) -> NeighbourScan:
    """Exact neighbours of the rows at ``query_positions`` among all ``rows``.

    One blocked matrix product per block of queries gives, at once, the nearest, second
    nearest, mean and farthest distances, the k nearest in the space's metric, in
    Euclidean distance and in cosine distance, and the count of near-duplicates. A
    query's own row is never its neighbour.

    Args:
        rows: float32 (n, d), n >= 3.
        query_positions: int (nq,) distinct positions in ``rows``.
        k: Neighbours per query, 1 <= k < n.
        metric: "cosine", "l2" or "ip" (ranking of ``neighbours``; "ip" ranks by
            largest inner product).
        duplicate_radius: Euclidean distance within which another row counts as a
            near-duplicate of the query.

    Returns:
        A :class:`NeighbourScan`.

    Raises:
        InvalidArgumentError: fewer than 3 rows, k out of range, bad positions.
    """
    matrix = _as_rows(rows, "rows")
    n = matrix.shape[0]
    if n < 3:
        raise InvalidArgumentError(f"a neighbour scan needs at least 3 rows; got {n}")
    if not 1 <= k < n:
        raise InvalidArgumentError(f"k must be in [1, {n - 1}] for {n} rows; got {k}")
    positions = _positions(query_positions, n)
    squared = np.einsum("ij,ij->i", matrix, matrix)
    norms = np.sqrt(squared)
    inverse = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0).astype(np.float32)
    radius_squared = float(duplicate_radius) ** 2
    # On unit rows Euclidean, cosine and inner-product rankings are one: one top-k.
    alike = bool(np.abs(norms - 1.0).max() <= 1e-4)
    nq = positions.size
    nearest = np.empty(nq)
    second = np.empty(nq)
    mean = np.empty(nq)
    farthest = np.empty(nq)
    neighbours = np.empty((nq, k), dtype=np.int64)
    euclidean = np.empty((nq, k), dtype=np.int64)
    cosine = np.empty((nq, k), dtype=np.int64)
    duplicates = np.empty(nq, dtype=np.int64)
    # One buffer for the square roots of every block (a fresh 100 MB each block faults
    # its pages in again).
    roots = np.empty((min(_BLOCK, nq), n), dtype=np.float32)
    for start in range(0, nq, _BLOCK):
        block = positions[start : start + _BLOCK]
        done = slice(start, start + block.size)
        own = (np.arange(block.size), block)
        dots = matrix[block] @ matrix.T  # (b, n)
        # |q|^2 + |x|^2 - 2 q.x in place (on a copy where the dots are needed again).
        distance = dots if alike else dots.copy()
        distance *= -2.0
        distance += squared[None, :]
        distance += squared[block, None]
        np.maximum(distance, 0.0, out=distance)
        distance[own] = 0.0
        farthest[done] = np.sqrt(distance.max(axis=1))
        root = np.sqrt(distance, out=roots[: block.size])
        # float32 sums are pairwise: within 1e-6 of float64's over 100,000 terms.
        mean[done] = root.sum(axis=1) / (n - 1)
        distance[own] = np.inf
        duplicates[done] = np.count_nonzero(distance <= radius_squared, axis=1)
        top = _top(distance, max(k, 2))
        two = np.sqrt(np.take_along_axis(distance, top[:, :2], axis=1))
        nearest[done] = two[:, 0]
        second[done] = two[:, 1]
        euclidean[done] = top[:, :k]
        if alike:
            cosine[done] = neighbours[done] = top[:, :k]
            continue
        cosine_distance = -(dots * inverse[None, :])
        cosine_distance[own] = np.inf
        cosine[done] = _top(cosine_distance, k)
        if metric == "ip":
            dots = -dots
            dots[own] = np.inf
            neighbours[done] = _top(dots, k)
        elif metric == "cosine":
            neighbours[done] = cosine[done]
        else:
            neighbours[done] = top[:, :k]
    return NeighbourScan(
        nearest=nearest,
        second=second,
        mean=mean,
        farthest=farthest,
        neighbours=neighbours,
        euclidean_neighbours=euclidean,
        cosine_neighbours=cosine,
        near_duplicates=duplicates,
        radius=float(duplicate_radius),
    )


def relative_contrast(nearest: object, mean: object) -> float:
    """Relative contrast (He, Kumar, Chang 2012): the mean distance of a query to the
    rows over its distance to the nearest one, as the ratio of their means over queries,
    E[D_mean] / E[D_min].

    It tends to 1 as the dimension of i.i.d. data grows (Beyer et al. 1999): nearest
    and average become alike and "nearest" loses meaning. Data with structure (low
    intrinsic dimension, clusters) keeps it well above 1, and the lower it is, the
    harder approximate search is.

    Args:
        nearest, mean: (nq,) Euclidean distances per query: to its nearest other row,
            and to the other rows on average.

    Returns:
        The ratio (inf when every nearest distance is 0).
    """
    near = float(np.mean(np.asarray(nearest, dtype=np.float64)))
    average = float(np.mean(np.asarray(mean, dtype=np.float64)))
    return average / near if near > 0 else float("inf")


def distance_profile(rows: object, query_positions: object) -> tuple[FloatArray, FloatArray]:
    """Euclidean distance of each query to its nearest other row and to the other rows
    on average: what :func:`relative_contrast` needs, and no more (one matrix product
    per block of queries).

    Args:
        rows: float32 (n, d), n >= 2.
        query_positions: int (nq,) positions in ``rows``.

    Returns:
        (nearest, mean), float64 (nq,) each.
    """
    matrix = _as_rows(rows, "rows")
    n = matrix.shape[0]
    if n < 2:
        raise InvalidArgumentError(f"a distance profile needs at least 2 rows; got {n}")
    positions = _positions(query_positions, n)
    squared = np.einsum("ij,ij->i", matrix, matrix)
    nearest = np.empty(positions.size)
    mean = np.empty(positions.size)
    for start in range(0, positions.size, _BLOCK):
        block = positions[start : start + _BLOCK]
        done = slice(start, start + block.size)
        distance = squared[block, None] + squared[None, :] - 2.0 * (matrix[block] @ matrix.T)
        np.maximum(distance, 0.0, out=distance)
        distance[np.arange(block.size), block] = 0.0
        np.sqrt(distance, out=distance)
        mean[done] = distance.sum(axis=1, dtype=np.float64) / (n - 1)
        distance[np.arange(block.size), block] = np.inf
        nearest[done] = distance.min(axis=1)
    return nearest, mean


def gaussian_rows(count: int, dimension: int, *, unit: bool, seed: int = 0) -> FloatMatrix:
    """``count`` i.i.d. N(0, I) vectors of ``dimension`` (scaled to unit length when
    ``unit``): the structureless baseline a space's figures are set against. Fixed seed."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((count, dimension), dtype=np.float32)
    if unit:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)
    return out


def gaussian_like(
    count: int, dimension: int, *, unit: bool, seed: int = 0, queries: int
) -> tuple[float, float]:
    """Relative contrast and hubness skewness of i.i.d. Gaussian vectors, the baseline.

    ``count`` vectors of :func:`gaussian_rows`; ``queries`` of them (a fixed-seed
    sample) are the queries of the contrast, and every row is a query of the hubness
    (its k-occurrence counted over all ``count`` rows, k=10).

    Returns:
        (relative contrast, k-occurrence skewness).
    """
    rows = gaussian_rows(count, dimension, unit=unit, seed=seed)
    picked = np.random.default_rng(seed).permutation(count)[: min(queries, count)]
    scan = scan_neighbours(rows, np.sort(picked), k=min(10, count - 1), metric="l2")
    _, neighbours = nearest_others(rows, np.arange(count), k=min(10, count - 1), metric="l2")
    counts = np.bincount(neighbours.ravel(), minlength=count)
    return relative_contrast(scan.nearest, scan.mean), hubness_skewness(counts)


def two_nn(nearest: object, second: object) -> float:
    """Intrinsic dimension by TwoNN (Facco, d'Errico, Rodriguez, Laio 2017).

    Under locally uniform density the ratio mu = r2 / r1 of each point's second to
    first neighbour distance follows a Pareto law with exponent d; this is its maximum
    likelihood estimate, (N - 1) / sum(log mu). Points with r1 = 0 (exact duplicates)
    are left out. Using only two neighbours keeps it local, so it is less biased than
    many-neighbour estimators where the dimension is high: on Gaussian data of d = 32
    with 50,000 points it reads ~27 where Levina-Bickel with k = 10 reads ~22.

    Args:
        nearest, second: (n,) distances of each point to its first and second neighbour.

    Returns:
        The estimate (nan when fewer than 2 usable points).
    """
    first = np.asarray(nearest, dtype=np.float64)
    other = np.asarray(second, dtype=np.float64)
    usable = first > 0
    mu = other[usable] / first[usable]
    logs = np.log(mu)
    if logs.size < 2 or logs.sum() <= 0:
        return float("nan")
    return float((logs.size - 1) / logs.sum())


def levina_bickel(distances: object) -> float:
    """Intrinsic dimension by the Levina-Bickel MLE (2004), averaged as MacKay and
    Ghahramani suggest (the mean of the inverse per-point estimates, inverted).

    Args:
        distances: (n, k) distances of each point to its k nearest neighbours,
            ascending, k >= 3.

    Returns:
        The estimate (nan when no point is usable).
    """
    table = np.asarray(distances, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] < 3:
        raise InvalidArgumentError("levina_bickel needs (n, k) distances with k >= 3")
    usable = table[:, 0] > 0
    table = table[usable]
    if table.shape[0] == 0:
        return float("nan")
    k = table.shape[1]
    logs = np.log(table[:, -1:] / table[:, :-1]).sum(axis=1) / (k - 2)
    mean = float(logs.mean())
    return 1.0 / mean if mean > 0 else float("nan")


def k_occurrence(vectors: object, *, k: int, metric: str) -> npt.NDArray[np.int64]:
    """How often each row is among the k nearest neighbours of the other rows.

    Args:
        vectors: float32 (n, d), n > k.
        k: Neighbours per row.
        metric: "cosine", "l2" or "ip".

    Returns:
        int64 (n,) counts; they sum to n * k.
    """
    rows = _as_rows(vectors, "vectors")
    n = rows.shape[0]
    if not 1 <= k < n:
        raise InvalidArgumentError(f"k must be in [1, {n - 1}] for {n} rows; got {k}")
    if metric == "cosine":
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = rows / np.maximum(norms, 1e-30)
    # Cosine ranks as inner product on the unit rows: -<x, y>, as before the rows were
    # normalized.
    scores = distance_matrix(rows, rows, "l2" if metric == "l2" else "ip")
    np.fill_diagonal(scores, np.inf)
    return np.bincount(_top(scores, k).ravel(), minlength=n).astype(np.int64)


def hubness_skewness(occurrences: object) -> float:
    """Skewness of the k-occurrence distribution (Radovanovic, Nanopoulos, Ivanovic 2010).

    Near 0: every point is a neighbour about equally often. Well above 1: a few hubs
    turn up in many result lists while many points are nobody's neighbour, which grows
    with the dimension of i.i.d. data.

    Returns:
        The (population) skewness; 0 when all counts are equal.
    """
    counts = np.asarray(occurrences, dtype=np.float64)
    spread = counts.std()
    if spread == 0:
        return 0.0
    return float(np.mean((counts - counts.mean()) ** 3) / spread**3)


# Queries per exact top-k call: 4,096 x 100,000 float32 distances inside faiss's blocks,
# and a bounded result to gather.
_KNN_BLOCK = 4096


def nearest_others(
    rows: object, query_positions: object, *, k: int, metric: str
) -> tuple[FloatArray, IntMatrix]:
    """Exact k nearest other rows of the rows at ``query_positions``, by faiss's blocked
    scan (:func:`latentdb.index.exact_search`). A query's own row is left out even where
    exact duplicates tie with it.

    Args:
        rows: float32 (n, d); cosine normalizes a copy.
        query_positions: int (nq,) positions in ``rows``.
        k: Neighbours per query, 1 <= k < n.
        metric: "cosine", "l2" or "ip".

    Returns:
        (float64 (nq, k) distances in the metric, smaller is closer: squared Euclidean
        for l2, 1 - cosine for cosine, -inner product for ip; int64 (nq, k) positions),
        nearest first.

    Raises:
        InvalidArgumentError: k out of range, bad positions.
    """
    matrix = _as_rows(rows, "rows")
    n = matrix.shape[0]
    if not 1 <= k < n:
        raise InvalidArgumentError(f"k must be in [1, {n - 1}] for {n} rows; got {k}")
    positions = _positions(query_positions, n)
    if metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if np.abs(norms - 1.0).max() > 1e-4:
            matrix = np.ascontiguousarray(matrix / np.maximum(norms, 1e-30), dtype=np.float32)
    distances = np.empty((positions.size, k))
    found = np.empty((positions.size, k), dtype=np.int64)
    for start in range(0, positions.size, _KNN_BLOCK):
        block = positions[start : start + _KNN_BLOCK]
        queries = np.ascontiguousarray(matrix[block])
        scores, hits = exact_search(queries, matrix, k + 1, metric)  # type: ignore[arg-type]
        own = hits == block[:, None]
        own[~own.any(axis=1), -1] = True  # not among them (ties): drop the farthest
        keep = ~own
        done = slice(start, start + block.size)
        distances[done] = scores[keep].reshape(block.size, k)
        found[done] = hits[keep].reshape(block.size, k)
    return distances, found


def occurrence_skewness(counts: object, *, queries: int, rows: int, k: int) -> float:
    """Skewness of the k-occurrence of all ``rows`` rows, from the occurrences among a
    uniform sample of ``queries`` of them as queries.

    A row that is among the k nearest of N other rows turns up in a sample of m of the n
    rows' result lists a hypergeometric number of times c, whose falling factorial
    moments are E[c^(r)] = N^(r) m^(r) / n^(r). So the sample's mean c^(r), scaled by
    n^(r) / m^(r), estimates the collection's mean N^(r) without bias for r = 2, 3; the
    mean of N is k exactly. The skewness follows from those three moments: the counts of
    the sample itself would add binomial noise and read low.

    Args:
        counts: (n,) occurrences of each row among the sampled queries' k nearest.
        queries: Queries sampled, m (every row when m = n: the counts are exact).
        rows: Rows in all, n.
        k: Neighbours per query.

    Returns:
        The estimated skewness (nan when m < 3 or the estimated spread is not positive).
    """
    c = np.asarray(counts, dtype=np.float64)
    m, n = queries, rows
    if m >= n:
        return hubness_skewness(c)
    if m < 3:
        return float("nan")
    second = float(np.mean(c * (c - 1))) * (n * (n - 1)) / (m * (m - 1))
    third = (
        float(np.mean(c * (c - 1) * (c - 2))) * (n * (n - 1) * (n - 2)) / (m * (m - 1) * (m - 2))
    )
    mean = float(k)
    raw_two = second + mean
    raw_three = third + 3 * second + mean
    variance = raw_two - mean**2
    if variance <= 0:
        return float("nan")
    return float((raw_three - 3 * mean * raw_two + 2 * mean**3) / variance**1.5)


@dataclass(frozen=True)
class Hubness:
    """The k-occurrence of every row of a collection, counted or estimated.

    Attributes:
        skewness: Skewness of the k-occurrence over all rows: exact when every row was
            a query, else estimated by :func:`occurrence_skewness`.
        low, high: A 95% interval for it, by the delete-a-group jackknife over
            ``groups`` disjoint random groups of the queries (as many seeds of the
            sample): t times the jackknife standard error; both equal ``skewness``
            when exact.
        counts: int64 (n,): occurrences of each row among the queries' k nearest.
        queries: Queries (rows in a random order).
        rows: Rows in all.
        k: Neighbours per query.
        groups: Query groups behind the interval (0 when exact).
    """

    skewness: float
    low: float
    high: float
    counts: IntMatrix
    queries: int
    rows: int
    k: int
    groups: int

    @property
    def exact(self) -> bool:
        """Whether every row was a query."""
        return self.queries >= self.rows

    def occurrences(self, positions: object) -> FloatArray:
        """The k-occurrence of the rows at ``positions`` over the whole collection:
        counted, or the sample's count scaled by rows / queries."""
        return np.asarray(self.counts[np.asarray(positions)], dtype=np.float64) * (
            self.rows / self.queries
        )


def hubness(neighbours: object, rows: int, *, groups: int = 20) -> Hubness:
    """The k-occurrence skewness of ``rows`` rows from the k nearest of some of them.

    Args:
        neighbours: int (m, k) positions of the k nearest other rows of m distinct rows
            taken in a random order (every row, m = n, for the exact figure).
        rows: n, the rows the neighbours were searched among.
        groups: Disjoint query groups for the interval when m < n (20: t = 2.093 on
            19 degrees of freedom, where 5 groups' t = 2.776 widened the same spread by a
            third; under 2: no interval).

    Returns:
        A :class:`Hubness`.

    Raises:
        InvalidArgumentError: an empty table, or positions outside [0, rows).
    """
    table = np.asarray(neighbours, dtype=np.int64)
    if table.ndim != 2 or table.size == 0 or table.min() < 0 or table.max() >= rows:
        raise InvalidArgumentError(f"neighbours must be an (m, k) table of positions < {rows}")
    m, k = table.shape
    counts = np.bincount(table.ravel(), minlength=rows).astype(np.int64)
    skewness = occurrence_skewness(counts, queries=m, rows=rows, k=k)
    if m >= rows or groups < 2 or m < 3 * groups:
        return Hubness(skewness, skewness, skewness, counts, m, rows, k, 0)
    # Delete-a-group jackknife: each group left out in turn, the rest estimate again
    # (most of the sample, so each estimate is as stable as the full one, where a fifth
    # of the queries alone reads wildly on Gaussian data: -77..76 at 100k, 800 queries).
    leave_outs = []
    for group in range(groups):
        part = table[group::groups]
        rest = counts - np.bincount(part.ravel(), minlength=rows)
        leave_outs.append(occurrence_skewness(rest, queries=m - len(part), rows=rows, k=k))
    estimates = np.asarray(leave_outs)
    if np.all(np.isfinite(estimates)):
        deviations = estimates - estimates.mean()
        spread = float(np.sqrt((groups - 1) / groups * np.sum(deviations**2)))
    else:
        spread = float("inf")
    half = _T_975.get(groups - 1, 2.0) * spread
    return Hubness(skewness, skewness - half, skewness + half, counts, m, rows, k, groups)


@dataclass(frozen=True)
class DimensionPoint:
    """Intrinsic dimension measured on a subsample of the rows.

    Attributes:
        rows: Rows in the subsample (the neighbours are searched among them).
        queries: Rows of the subsample whose neighbours were measured.
        two_nn: TwoNN estimate, and ``two_nn_error`` its standard error (d / sqrt(N)).
        levina_bickel: Levina-Bickel MLE with the k nearest.
    """

    rows: int
    queries: int
    two_nn: float
    two_nn_error: float
    levina_bickel: float


def dimension_curve(
    rows: object,
    order: object,
    *,
    scales: list[int],
    queries: int,
    k: int = 10,
    known: dict[int, FloatArray] | None = None,
) -> list[DimensionPoint]:
    """Intrinsic dimension over nested subsamples: TwoNN and Levina-Bickel read lower
    the more rows there are, since neighbours are closer (on 50k MiniLM vectors TwoNN read
    8.0 at 3.1k rows, 5.2 at 12.5k and 3.8 at 50k, issue 19), so one figure is
    meaningless without its scale.

    Args:
        rows: float32 (n, d).
        order: int (n,) a permutation of the rows: the subsample of size s is its first
            s, and the queries of each are its first ``queries`` (fewer if s is).
        scales: Subsample sizes, each in [k + 1, n].
        queries: Queries per scale.
        k: Neighbours measured, >= 2 (Levina-Bickel needs 3: nan below).
        known: Euclidean distances (q, >= k) of the first q rows of ``order`` to their
            nearest others, by scale, where already measured (a scan of every row).

    Returns:
        One :class:`DimensionPoint` per scale, in the order given.
    """
    matrix = _as_rows(rows, "rows")
    permutation = np.asarray(order, dtype=np.int64)
    known = known or {}
    if k < 2:
        raise InvalidArgumentError(f"the dimension curve needs k >= 2 neighbours; got {k}")
    points = []
    for scale in scales:
        if not k < scale <= matrix.shape[0]:
            raise InvalidArgumentError(
                f"scale must be in [{k + 1}, {matrix.shape[0]}]; got {scale}"
            )
        count = min(queries, scale)
        table = known.get(scale)
        if table is None or table.shape[0] < count or table.shape[1] < k:
            subsample = matrix if scale == matrix.shape[0] else matrix[permutation[:scale]]
            first = permutation[:count] if scale == matrix.shape[0] else np.arange(count)
            squared, _ = nearest_others(subsample, first, k=k, metric="l2")
            table = np.sqrt(np.maximum(squared, 0.0))
        table = table[:count, :k]
        two = two_nn(table[:, 0], table[:, 1])
        usable = int(np.count_nonzero(table[:, 0] > 0))
        points.append(
            DimensionPoint(
                rows=scale,
                queries=count,
                two_nn=two,
                two_nn_error=two / np.sqrt(usable) if usable else float("nan"),
                levina_bickel=levina_bickel(table) if k >= 3 else float("nan"),
            )
        )
    return points
