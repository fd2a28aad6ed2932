"""The distance module: the metric conventions, and the same bits on every path."""

from __future__ import annotations

import numpy as np
import pytest

from latentdb.index import (
    aligned_distances,
    distance_matrix,
    pair_distances,
    scores_to_distances,
    squared_norms,
)
from latentdb.index._distance import faiss_distances_of_one, one_query_distances
from latentdb.space import Metric

METRICS: tuple[Metric, ...] = ("cosine", "l2", "ip")


def unit(rows: int, dimension: int, seed: int) -> np.ndarray:
    points = np.random.default_rng(seed).standard_normal((rows, dimension))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def reference(queries: np.ndarray, rows: np.ndarray, metric: Metric) -> np.ndarray:
    """The conventions of DESIGN.md in float64."""
    q, x = queries.astype(np.float64), rows.astype(np.float64)
    if metric == "cosine":
        return 1.0 - q @ x.T
    if metric == "ip":
        return -(q @ x.T)
    return ((q[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)


@pytest.mark.parametrize("metric", METRICS)
def test_every_shape_follows_the_metric_conventions(metric: Metric) -> None:
    queries, rows = unit(5, 24, 0), unit(40, 24, 1)
    truth = reference(queries, rows, metric)
    matrix = distance_matrix(queries, rows, metric)
    assert matrix.shape == (5, 40) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix, truth, atol=1e-5)
    np.testing.assert_allclose(distance_matrix(queries[:1], rows, metric), truth[:1], atol=1e-5)
    pairs = pair_distances(queries, np.broadcast_to(rows[:7], (5, 7, 24)).copy(), metric)
    assert pairs.shape == (5, 7) and pairs.dtype == np.float32
    np.testing.assert_allclose(pairs, truth[:, :7], atol=1e-5)
    aligned = aligned_distances(queries, rows[:5], metric)
    assert aligned.shape == (5,)
    np.testing.assert_allclose(aligned, np.diag(truth[:, :5]), atol=1e-5)
    if metric != "ip":  # distances, never below zero on the exact paths
        assert (pairs >= 0).all() and (aligned >= 0).all()


@pytest.mark.parametrize("metric", METRICS)
def test_pairs_are_the_same_bits_in_any_batch(metric: Metric) -> None:
    queries, rows = unit(6, 384, 2), unit(6 * 9, 384, 3).reshape(6, 9, 384)
    batch = pair_distances(queries, rows, metric)
    for q in range(6):
        assert np.array_equal(one_query_distances(queries[q], rows[q], metric), batch[q])
        assert np.array_equal(
            pair_distances(queries[q : q + 1], rows[q : q + 1], metric)[0], batch[q]
        )
        for c in range(9):
            pair = aligned_distances(queries[q : q + 1], rows[q, c : c + 1], metric)
            assert pair[0] == batch[q, c]


@pytest.mark.parametrize("metric", METRICS)
def test_pair_distances_replace_the_engines_copy_bit_for_bit(metric: Metric) -> None:
    """What engine/_collection.py's _distances computes for hybrid search hits."""
    queries, vectors = unit(4, 384, 4), unit(4 * 10, 384, 5).reshape(4, 10, 384)
    dots = np.einsum("qkd,qd->qk", vectors, queries)
    if metric == "cosine":
        engine = np.maximum(1.0 - dots, 0.0)
    elif metric == "ip":
        engine = -dots
    else:
        differences = vectors - queries[:, None, :]
        engine = np.einsum("qkd,qkd->qk", differences, differences)
    assert np.array_equal(pair_distances(queries, vectors, metric), engine.astype(np.float32))


def test_scores_and_faiss_outputs_become_distances() -> None:
    queries = unit(2, 8, 6)
    scores = np.array([[1.0000001, 0.5], [0.25, -0.5]], dtype=np.float32)
    assert scores_to_distances(queries, scores, "cosine").tolist()[0][0] == 0.0
    assert scores_to_distances(queries, scores, "ip").tolist() == (-scores).tolist()
    l2 = scores_to_distances(queries, scores, "l2")
    np.testing.assert_allclose(l2, np.maximum(squared_norms(queries)[:, None] - scores, 0))
    raw = np.array([[1.0000001, 0.5]], dtype=np.float32)
    faiss_distances_of_one(raw, "cosine")
    assert raw.tolist() == [[0.0, 0.5]]
    raw = np.array([[-1e-7, 2.0]], dtype=np.float32)
    faiss_distances_of_one(raw, "l2")
    assert raw.tolist() == [[0.0, 2.0]]
