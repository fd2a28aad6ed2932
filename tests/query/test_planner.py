"""The query planner: each way of answering a filtered query, chosen by how many rows the
filter allows, gives k results when k rows match and recall against the exact filtered
answer; explain=True says which way was taken."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentdb
from latentdb import Collection, IndexSpec
from latentdb.query import _planner, _subset
from tests._data import pypi_minilm

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

ROWS = 3000
QUERIES = 60


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return pypi_minilm(ROWS, QUERIES)


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory, data: Any) -> Any:
    train, _ = data
    db = latentdb.connect(tmp_path_factory.mktemp("planner"))
    collection = db.create_collection(
        "c",
        dimension=384,
        embedder=None,
        index=IndexSpec(kind="hnsw", m=16, ef_construction=64),
        model=MODEL,
    )
    collection.add(
        [str(i) for i in range(ROWS)],
        vectors=train,
        metadatas=[{"bucket": i % 100, "even": i % 2 == 0} for i in range(ROWS)],
        model=MODEL,
    )
    collection.optimize()
    yield collection
    db.close()


def exact_filtered(train: np.ndarray, queries: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(allowed)
    scores = queries @ train[rows].T
    return rows[np.argsort(-scores, axis=1)[:, :10]]


def check(collection: Collection, data: Any, where: dict[str, Any], allowed: np.ndarray) -> str:
    """Recall >= 0.95 and k results; the strategy the planner took."""
    train, test = data
    truth = exact_filtered(train, test, allowed)
    found = [collection.query(vectors=q, k=10, where=where, include=[]).ids[0] for q in test]
    assert all(len(row) == min(10, int(allowed.sum())) for row in found)
    hits = sum(
        len({int(i) for i in row} & set(want.tolist()))
        for row, want in zip(found, truth, strict=True)
    )
    assert hits / truth.size >= 0.95
    plan = collection.query(vectors=test[0], k=10, where=where, explain=True).plan
    assert plan is not None and plan.allowed == int(allowed.sum())
    assert plan.estimated is not None and plan.rows == ROWS
    assert set(plan.timings_ms) == {"filter", "search", "fetch"}
    return plan.strategy


def test_a_wide_filter_searches_the_graph_with_the_rest_masked(
    collection: Collection, data: Any
) -> None:
    where = {"even": True}  # half the rows
    assert check(collection, data, where, np.arange(ROWS) % 2 == 0) == "ann-filtered"
    plan = collection.query(vectors=data[1][0], where=where, explain=True).plan
    assert plan is not None and plan.params["ef"] >= collection.index_status().params["ef"]


def test_a_narrow_filter_is_scanned_then_kept_as_a_matrix(
    collection: Collection, data: Any
) -> None:
    where = {"bucket": {"$lt": 3}}  # 90 rows
    first = collection.query(
        vectors=data[1][0], where={"bucket": {"$lt": 3}, "even": {"$exists": True}}, explain=True
    ).plan
    assert first is not None and first.strategy == "exact-filtered"  # seen once
    assert check(collection, data, where, np.arange(ROWS) % 100 < 3) == "subset-flat"


def test_a_middle_filter_used_again_gets_a_graph_of_its_own(
    collection: Collection, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_subset, "FLAT_ROWS", 200)
    monkeypatch.setattr(_planner, "EXACT_ROWS", 100)
    where = {"bucket": {"$lt": 25}}  # 750 rows: a quarter
    allowed = np.arange(ROWS) % 100 < 25
    first = collection.query(vectors=data[1][0], where=where, explain=True).plan
    assert first is not None and first.strategy == "ann-filtered"
    collection.query(vectors=data[1][0], where=where)  # used again: the build starts
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        plan = collection.query(vectors=data[1][0], where=where, explain=True).plan
        assert plan is not None
        if plan.strategy == "subset-hnsw":
            break
        assert plan.strategy == "ann-filtered"  # answered meanwhile
        time.sleep(0.05)
    assert check(collection, data, where, allowed) == "subset-hnsw"


def test_k_results_whenever_k_rows_match(
    collection: Collection, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_planner, "EXACT_ROWS", 0)  # even 12 rows go to the graph
    where = {"$and": [{"bucket": 7}, {"even": False}]}  # 30 rows (1%), scattered
    result = collection.query(vectors=data[1][:20], k=10, where=where, include=[], explain=True)
    assert all(len(row) == 10 for row in result.ids)
    assert result.plan is not None and result.plan.strategy == "ann-filtered"
    none = collection.query(vectors=data[1][:3], where={"bucket": 7, "even": True}, explain=True)
    assert none.ids == [[], [], []] and none.plan is not None and none.plan.strategy == "empty"


def test_writes_change_what_a_cached_filter_allows(tmp_path: Path, data: Any) -> None:
    train, test = data
    with latentdb.connect(tmp_path) as db:
        c = db.create_collection("w", dimension=384, embedder=None, index="hnsw", model=MODEL)
        c.add(
            [str(i) for i in range(600)],
            vectors=train[:600],
            metadatas=[{"b": i % 10} for i in range(600)],
            model=MODEL,
        )
        c.optimize()
        where = {"b": 3}
        for _ in range(3):  # cached, then kept as a matrix
            ids = c.query(vectors=test[0], k=100, where=where, include=[]).ids[0]
        assert sorted(map(int, ids)) == list(range(3, 600, 10))
        c.update(["3"], metadatas=[{"b": 4}])
        c.delete(["13"])
        c.add(["new"], vectors=train[700], metadatas=[{"b": 3}], model=MODEL)
        ids = c.query(vectors=test[0], k=100, where=where, include=[]).ids[0]
        assert set(ids) == {str(i) for i in range(23, 600, 10)} | {"new"}


def test_unfiltered_explain_names_the_index(collection: Collection, data: Any) -> None:
    plan = collection.query(vectors=data[1][0], explain=True).plan
    assert plan is not None and plan.strategy == "ann" and plan.allowed is None
    assert plan.params == collection.index_status().params
    exact = collection.query(vectors=data[1][0], exact=True, explain=True).plan
    assert exact is not None and exact.strategy == "exact"
    assert collection.query(vectors=data[1][0]).plan is None  # only when asked
