"""A filter's own index: codes re-ranked on the rows (small filters) or a graph."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from latentdb.index import exact_search
from latentdb.query import _subset
from tests._segments import clustered


def codes_of(vectors: np.ndarray, metric: Any = "cosine") -> _subset.SubsetGraph:
    keys = np.arange(1000, 1000 + vectors.shape[0], dtype=np.int64)
    index = _subset.subset_index(lambda: (keys, vectors), keys.shape[0], metric, ())
    assert index.wait(60)
    return index


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_codes_re_ranked_over_every_row_answer_exactly(metric: Any) -> None:
    vectors = clustered(600, dimension=32)
    queries = clustered(20, dimension=32, seed=3)
    index = codes_of(vectors, metric)
    assert isinstance(index, _subset.SubsetCodes) and index.strategy == "subset-pq"
    distances, keys = index.search(queries, 10, {"rerank": 600})
    truth_distances, truth_rows = exact_search(queries, vectors, 10, metric)
    np.testing.assert_array_equal(keys, truth_rows + 1000)
    np.testing.assert_allclose(distances, truth_distances, rtol=1e-5, atol=1e-6)


def test_a_deeper_re_rank_finds_more_and_answers_are_ordered() -> None:
    """The depth is the knob the planner measures: on rows spread as noise around a few
    centres (hard for 4-bit codes) 40 deep found 0.41-0.45 of the top 10, 400 deep
    0.95-0.99, 1,000 deep (a third of the rows) all but a few."""
    vectors = clustered(3000, dimension=64)
    queries = clustered(50, dimension=64, seed=4)
    index = codes_of(vectors)
    _, truth = exact_search(queries, vectors, 10, "cosine")
    recalls = []
    for depth in (40, 1000):
        distances, keys = index.search(queries, 10, {"rerank": depth})
        recalls.append(np.mean([len(set(keys[i]) & set(truth[i] + 1000)) / 10 for i in range(50)]))
        assert (np.diff(distances, axis=1) >= 0).all()  # nearest first
        assert np.isin(keys, np.arange(1000, 4000)).all()
    assert recalls[0] < recalls[1] and recalls[1] >= 0.95


def test_fewer_rows_than_k_are_padded() -> None:
    vectors = clustered(40, dimension=16)
    index = codes_of(vectors)
    distances, keys = index.search(vectors[:2], 50, {"rerank": 32})
    assert keys.shape == (2, 50)
    assert (keys[:, :40] >= 1000).all() and (keys[:, 40:] == -1).all()
    assert np.isinf(distances[:, 40:]).all() and np.isfinite(distances[:, :40]).all()
    assert keys[0, 0] == 1000  # a stored row finds itself


def test_a_filter_of_more_rows_than_codes_suit_gets_a_graph(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_subset, "SUBSET_CODES_ROWS", 100)
    vectors = clustered(300, dimension=16)
    index = codes_of(vectors)
    assert type(index) is _subset.SubsetGraph and index.knob == "ef"
    _, keys = index.search(vectors[:5], 1, {"ef": 64})
    assert keys[:, 0].tolist() == list(range(1000, 1005))


@pytest.mark.parametrize("rows", [0, 5, 63])
def test_too_few_rows_to_train_codes_on_are_all_re_ranked(rows: int) -> None:
    """A filter's rows deleted after it counted them leave too few to train codes on
    (the lifecycle machine built codes over none): every row is re-ranked instead."""
    vectors = clustered(rows, dimension=16) if rows else np.empty((0, 16), np.float32)
    queries = clustered(3, dimension=16, seed=7)
    index = codes_of(vectors)
    assert index.ready
    _, keys = index.search(queries, 10, {"rerank": 32})
    assert keys.shape == (3, 10)
    if rows:
        _, truth_rows = exact_search(queries, vectors, min(10, rows), "cosine")
        np.testing.assert_array_equal(keys[:, : min(10, rows)], truth_rows + 1000)
    assert (keys[:, min(10, rows) :] == -1).all()
