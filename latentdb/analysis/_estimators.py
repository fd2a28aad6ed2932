"""Estimators of a latent space's geometry, as plain functions over numpy arrays.

Each takes float32 (n, d) rows and returns numbers; none knows about collections.
They are checked on data with known answers in ``tests/analysis/test_estimators.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from latentdb.errors import InvalidArgumentError
from latentdb.index import distance_matrix

__all__ = [
    "DUPLICATE_FRACTION",
    "NeighbourScan",
    "gaussian_like",
    "hubness_skewness",
    "k_occurrence",
    "levina_bickel",
    "norm_summary",
    "relative_contrast",
    "scan_neighbours",
    "two_nn",
]

FloatMatrix = npt.NDArray[np.float32]
IntMatrix = npt.NDArray[np.int64]

# Near-duplicates: squared Euclidean distance at most this fraction of the mean squared
# norm. On unit vectors that is |a - b|^2 <= 0.02, i.e. cosine similarity >= 0.99.
DUPLICATE_FRACTION = 0.02
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
        farthest: float64 (nq,): ... to its farthest row.
        neighbours: int64 (nq, k): positions (in ``rows``) of each query's k nearest
            other rows in the scan's metric, nearest first.
        euclidean_neighbours: int64 (nq, k): the same under Euclidean distance.
        cosine_neighbours: int64 (nq, k): the same under cosine distance.
        near_duplicates: int64 (nq,): other rows within the near-duplicate radius.
        radius: That radius (Euclidean, not squared).
    """

    nearest: npt.NDArray[np.float64]
    second: npt.NDArray[np.float64]
    farthest: npt.NDArray[np.float64]
    neighbours: IntMatrix
    euclidean_neighbours: IntMatrix
    cosine_neighbours: IntMatrix
    near_duplicates: npt.NDArray[np.int64]
    radius: float


def _top(scores: npt.NDArray[np.float32], k: int) -> IntMatrix:
    """Columns of the k smallest scores of each row, smallest first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(scores, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def scan_neighbours(
    rows: object,
    query_positions: object,
    *,
    k: int,
    metric: str,
    duplicate_fraction: float = DUPLICATE_FRACTION,
) -> NeighbourScan:
    """Exact neighbours of the rows at ``query_positions`` among all ``rows``.

    One blocked matrix product per block of queries gives, at once, the nearest, second
    nearest and farthest distances, the k nearest in the space's metric, in Euclidean
    distance and in cosine distance, and the count of near-duplicates. A query's own
    row is never its neighbour.

    Args:
        rows: float32 (n, d), n >= 3.
        query_positions: int (nq,) distinct positions in ``rows``.
        k: Neighbours per query, 1 <= k < n.
        metric: "cosine", "l2" or "ip" (ranking of ``neighbours``; "ip" ranks by
            largest inner product).
        duplicate_fraction: Near-duplicate radius, squared, as a fraction of the mean
            squared norm.

    Returns:
        A :class:`NeighbourScan`.

    Raises:
        InvalidArgumentError: fewer than 3 rows, k out of range, bad positions.
    """
    matrix = _as_rows(rows, "rows")
    n = matrix.shape[0]
    positions = np.asarray(query_positions, dtype=np.int64)
    if n < 3:
        raise InvalidArgumentError(f"a neighbour scan needs at least 3 rows; got {n}")
    if not 1 <= k < n:
        raise InvalidArgumentError(f"k must be in [1, {n - 1}] for {n} rows; got {k}")
    if positions.ndim != 1 or positions.size == 0 or positions.min() < 0 or positions.max() >= n:
        raise InvalidArgumentError(f"query_positions must be positions in [0, {n}) ")
    squared = np.einsum("ij,ij->i", matrix, matrix)
    norms = np.sqrt(squared)
    inverse = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0).astype(np.float32)
    radius_squared = float(duplicate_fraction * squared.mean())
    nq = positions.size
    nearest = np.empty(nq)
    second = np.empty(nq)
    farthest = np.empty(nq)
    neighbours = np.empty((nq, k), dtype=np.int64)
    euclidean = np.empty((nq, k), dtype=np.int64)
    cosine = np.empty((nq, k), dtype=np.int64)
    duplicates = np.empty(nq, dtype=np.int64)
    for start in range(0, nq, _BLOCK):
        block = positions[start : start + _BLOCK]
        own = (np.arange(block.size), block)
        dots = matrix[block] @ matrix.T  # (b, n)
        distance = squared[block, None] + squared[None, :] - 2.0 * dots
        np.maximum(distance, 0.0, out=distance)
        farthest[start : start + block.size] = np.sqrt(distance.max(axis=1))
        distance[own] = np.inf
        duplicates[start : start + block.size] = (distance <= radius_squared).sum(axis=1)
        top = _top(distance, max(k, 2))
        two = np.sqrt(np.take_along_axis(distance, top[:, :2], axis=1))
        nearest[start : start + block.size] = two[:, 0]
        second[start : start + block.size] = two[:, 1]
        euclidean[start : start + block.size] = top[:, :k]
        cosine_distance = -(dots * inverse[None, :])
        cosine_distance[own] = np.inf
        cosine[start : start + block.size] = _top(cosine_distance, k)
        if metric == "ip":
            dots = -dots
            dots[own] = np.inf
            neighbours[start : start + block.size] = _top(dots, k)
        elif metric == "cosine":
            neighbours[start : start + block.size] = cosine[start : start + block.size]
        else:
            neighbours[start : start + block.size] = top[:, :k]
    return NeighbourScan(
        nearest=nearest,
        second=second,
        farthest=farthest,
        neighbours=neighbours,
        euclidean_neighbours=euclidean,
        cosine_neighbours=cosine,
        near_duplicates=duplicates,
        radius=float(np.sqrt(radius_squared)),
    )


def relative_contrast(nearest: object, farthest: object) -> float:
    """Mean distance to the farthest row over mean distance to the nearest.

    Beyer et al. (1999) showed the ratio tends to 1 as the dimension of i.i.d. data
    grows: nearest and farthest become alike and "nearest" loses meaning. Data with
    structure (low intrinsic dimension, clusters) keeps it well above 1.

    Args:
        nearest, farthest: (nq,) Euclidean distances per query.

    Returns:
        The ratio (inf when every nearest distance is 0).
    """
    near = float(np.mean(np.asarray(nearest, dtype=np.float64)))
    far = float(np.mean(np.asarray(farthest, dtype=np.float64)))
    return far / near if near > 0 else float("inf")


def gaussian_like(
    count: int, dimension: int, *, unit: bool, seed: int = 0, queries: int
) -> tuple[float, float]:
    """Relative contrast and hubness skewness of i.i.d. Gaussian vectors, the baseline.

    ``count`` vectors of ``dimension`` N(0, I) entries (scaled to unit length when
    ``unit``), generated in blocks so memory stays small; ``queries`` of them are
    the queries. Fixed seed: the same arguments give the same figures.

    Returns:
        (relative contrast over ``queries`` queries, k-occurrence skewness at k=10
        among the queries).
    """
    rng = np.random.default_rng(seed)
    queries = min(queries, count)

    def block(size: int) -> FloatMatrix:
        out = rng.standard_normal((size, dimension), dtype=np.float32)
        if unit:
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    query_rows = block(queries)
    within = distance_matrix(query_rows, query_rows, "l2")
    np.fill_diagonal(within, np.inf)
    nearest = np.sqrt(np.maximum(within.min(axis=1), 0.0)).astype(np.float64)
    np.fill_diagonal(within, -np.inf)
    farthest = np.sqrt(np.maximum(within.max(axis=1), 0.0)).astype(np.float64)
    done = queries
    while done < count:
        size = min(20_000, count - done)
        rows = block(size)
        distance = distance_matrix(query_rows, rows, "l2")
        np.maximum(distance, 0.0, out=distance)
        nearest = np.minimum(nearest, np.sqrt(distance.min(axis=1)))
        farthest = np.maximum(farthest, np.sqrt(distance.max(axis=1)))
        done += size
    skew = hubness_skewness(k_occurrence(query_rows, k=min(10, queries - 1), metric="l2"))
    return relative_contrast(nearest, farthest), skew


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
