"""``create_collection(..., reduce=r)`` through the public API, embedded and over HTTP:
the space records the reduction, bad values are refused and create nothing, queries
keep full-width vectors and exact distances, evaluate reports the cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentdb import CollectionExistsError, Database, IndexSpec, InvalidArgumentError

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

# Each test that uses db or open_db runs embedded and over HTTP (tests/conftest.py).
pytestmark = pytest.mark.transports

DIM = 32
ROWS = 1200


def clustered(n: int, seed: int) -> np.ndarray:
    """Rows near an 8-d subspace of the 32-d space (most variance on 8 axes)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(8, DIM))
    return (rng.normal(size=(n, 8)) @ basis + 0.05 * rng.normal(size=(n, DIM))).astype(np.float32)


def test_the_space_records_the_reduction(db: Database) -> None:
    spec = IndexSpec(kind="hnsw", seal_rows=500)
    collection = db.create_collection(
        "r", dimension=DIM, embedder=None, index=spec, reduce=8, model=MODEL
    )
    assert collection.space.reduce == 8 and collection.space.dimension == DIM
    assert db.get_collection("r").space.reduce == 8
    plain = db.create_collection("p", dimension=DIM, embedder=None, model=MODEL)
    assert plain.space.reduce is None
    assert (
        db.get_or_create_collection("r", dimension=DIM, embedder=None, model=MODEL).space.reduce
        == 8
    )
    with pytest.raises(CollectionExistsError, match="reduce 8"):
        db.get_or_create_collection("r", dimension=DIM, embedder=None, reduce=16, model=MODEL)


@pytest.mark.parametrize(
    ("reduce", "index", "message"),
    [
        (DIM, "auto", "below the space's dimension"),
        (0, "auto", "from 1 to 31"),
        (-3, "hnsw", "from 1 to 31"),
        (2.5, "hnsw", "integer"),
        (True, "hnsw", "integer"),
        ("8", "hnsw", "integer"),
        (8, "flat", "needs an ANN index"),
    ],
)
def test_bad_reductions_are_refused_and_create_nothing(
    db: Database, reduce: object, index: str, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        db.create_collection(
            "r", dimension=DIM, embedder=None, index=index, reduce=reduce, model=MODEL
        )  # type: ignore[arg-type]
    assert db.list_collections() == []


def test_reduced_queries_are_full_width_with_exact_distances(db: Database) -> None:
    train, queries = clustered(ROWS, 0), clustered(20, 1)
    collection = db.create_collection(
        "r", dimension=DIM, metric="l2", embedder=None, index="hnsw", reduce=8, model=MODEL
    )
    collection.add([str(i) for i in range(ROWS)], vectors=train, model=MODEL)
    collection.optimize()
    result = collection.query(vectors=queries, k=5, include=["distances", "vectors"])
    for ids, distances, query in zip(result.ids, result.distances, queries, strict=True):
        rows = train[[int(i) for i in ids]]
        np.testing.assert_allclose(distances, np.sum((rows - query) ** 2, axis=1), rtol=1e-4)
        truth = np.argsort(np.sum((train - query) ** 2, axis=1))[:5]
        assert len({int(i) for i in ids} & set(truth.tolist())) >= 4
    assert result.vectors is not None and result.vectors[0].shape == (5, DIM)
    np.testing.assert_array_equal(result.vectors[0][0], train[int(result.ids[0][0])])
    report = collection.evaluate(queries)
    assert report.reduce == 8 and report.kind == "hnsw" and "rerank" in report.params
    assert report.recall_without_rerank is not None and report.recall >= 0.9
    assert collection.index_status().params["rerank"] >= 2


def test_reduced_collections_survive_reopening(open_db: object, tmp_path: Path) -> None:
    db = open_db()  # type: ignore[operator]
    collection = db.create_collection(
        "r", dimension=DIM, embedder=None, index="hnsw", reduce=4, model=MODEL
    )
    collection.add([str(i) for i in range(600)], vectors=clustered(600, 2), model=MODEL)
    collection.optimize()
    before = collection.query(vectors=clustered(3, 3), k=3)
    db.close()
    again = open_db().get_collection("r")  # type: ignore[operator]
    assert again.space.reduce == 4
    assert again.query(vectors=clustered(3, 3), k=3).ids == before.ids
