"""The metric's distance, in one place: smaller is closer (DESIGN.md).

- ``cosine``: 1 - <q, x> (rows and queries unit length), never below 0;
- ``l2``: squared Euclidean distance, never below 0;
- ``ip``: -<q, x>.

Each function names its numpy kernel, because results are compared bit for bit: a
row's distance to a query must be the same bits whichever segment, shard, batch or
path found it. :func:`pair_distances` (and :func:`aligned_distances`, the same sums) is
that reference: one dot product, or squared difference, per pair, summed in an order
that depends only on the dimension. :func:`distance_matrix` is a BLAS product, fast for
scanning but rounded by its blocking: it ranks candidates, and the distances returned
are computed again pair by pair.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from latentdb.space import Metric

__all__ = [
    "aligned_distances",
    "distance_matrix",
    "faiss_distances",
    "faiss_distances_of_one",
    "one_query_distances",
    "pair_distances",
    "scores_to_distances",
    "squared_norms",
]

FloatMatrix = npt.NDArray[np.float32]


def squared_norms(matrix: FloatMatrix) -> FloatMatrix:
    """||row||^2 of each row, float32 (n,)."""
    norms: FloatMatrix = np.einsum("ij,ij->i", matrix, matrix)
    return norms


def pair_distances(queries: FloatMatrix, rows: FloatMatrix, metric: Metric) -> FloatMatrix:
    """Distances of each query (nq, d) to its own candidate rows (nq, c, d), float32
    (nq, c): one dot product (or squared difference) per pair, summed in an order that
    depends only on the dimension, so the same pair always gives the same bits."""
    if metric == "l2":
        difference = rows - queries[:, None, :]
        distances: FloatMatrix = np.einsum("qcd,qcd->qc", difference, difference)
        return distances
    scores: FloatMatrix = np.einsum("qd,qcd->qc", queries, rows)
    if metric == "ip":
        np.negative(scores, out=scores)
    else:
        np.maximum(np.subtract(1.0, scores, out=scores), 0.0, out=scores)
    return scores


def aligned_distances(queries: FloatMatrix, rows: FloatMatrix, metric: Metric) -> FloatMatrix:
    """Distances of aligned pairs: query ``i`` (n, d) to row ``i`` (n, d), float32 (n,);
    the bits of :func:`pair_distances` for the same pairs."""
    return pair_distances(queries, rows[:, None, :], metric)[:, 0]


def one_query_distances(query: FloatMatrix, rows: FloatMatrix, metric: Metric) -> FloatMatrix:
    """Distances of one query (d,) to rows (c, d), float32 (c,), in 1-d numpy calls
    (~20 us; the batched path costs 5x that): the same einsum sums, bit for bit, as
    :func:`pair_distances` makes for the query in a batch."""
    if metric == "l2":
        difference = rows - query
        distances: FloatMatrix = np.einsum("cd,cd->c", difference, difference)
        return distances
    distances = np.einsum("cd,d->c", rows, query)
    if metric == "ip":
        np.negative(distances, out=distances)
    else:
        np.maximum(np.subtract(1.0, distances, out=distances), 0.0, out=distances)
    return distances


def distance_matrix(
    queries: FloatMatrix,
    rows: FloatMatrix,
    metric: Metric,
    *,
    row_norms: FloatMatrix | None = None,
) -> FloatMatrix:
    """Distances of each query (nq, d) to every row (n, d), float32 (nq, n), by one BLAS
    product (a matrix-vector product for one query). Not clamped: rounding can dip a
    hair below 0, so use it to rank, and :func:`pair_distances` for the distances.

    Args:
        row_norms: ||row||^2 (n,) for l2, to save a pass over ``rows`` (computed if None).
    """
    distances: FloatMatrix
    if queries.shape[0] == 1:
        query = queries[0]
        scores: FloatMatrix = rows @ query
        if metric == "cosine":
            distances = 1.0 - scores
        elif metric == "ip":
            distances = -scores
        else:
            norms = squared_norms(rows) if row_norms is None else row_norms
            distances = np.asarray(norms - 2.0 * scores + float(query @ query), np.float32)
        return distances[None, :]
    products: FloatMatrix = queries @ rows.T
    if metric == "cosine":
        distances = 1.0 - products
    elif metric == "ip":
        distances = -products
    else:
        norms = squared_norms(rows) if row_norms is None else row_norms
        distances = norms[None, :] - 2.0 * products + squared_norms(queries)[:, None]
    return distances


def scores_to_distances(queries: FloatMatrix, scores: FloatMatrix, metric: Metric) -> FloatMatrix:
    """Turn larger-is-closer scores into the metric's smaller-is-closer distances.

    Scores are <q, x> for cosine and ip, and 2<q, x> - ||x||^2 (or ||q||^2 - ||q - x||^2)
    for l2.
    """
    if metric == "ip":
        distances = -scores
    elif metric == "cosine":
        distances = np.maximum(1.0 - scores, 0.0)
    else:
        distances = np.maximum(squared_norms(queries)[:, None] - scores, 0.0)
    return distances.astype(np.float32, copy=False)


def faiss_distances(queries: FloatMatrix, raw: FloatMatrix, metric: Metric) -> FloatMatrix:
    """Distances from what a faiss index of the space returned for ``queries``: inner
    products (cosine, ip) or squared L2 distances (l2), (nq, k)."""
    scores = squared_norms(queries)[:, None] - raw if metric == "l2" else raw
    return scores_to_distances(queries, scores, metric)


_ONE = np.ones((), dtype=np.float32)  # a 0-d array: np.subtract converts no Python float


def faiss_distances_of_one(raw: FloatMatrix, metric: Metric) -> None:
    """:func:`faiss_distances` of one query's hits (1, k), nearest first, in place and
    in as few numpy calls as can be (the single-query path): only the nearest can
    round past the metric's bound."""
    if metric == "cosine":
        if raw[0, 0] > 1.0:  # rounding: the nearest may score a hair above 1
            raw[0, 0] = 1.0
        np.subtract(_ONE, raw, out=raw)
    elif metric == "ip":
        np.negative(raw, out=raw)
    elif raw[0, 0] < 0.0:  # faiss gives squared L2 distances already
        raw[0, 0] = 0.0
