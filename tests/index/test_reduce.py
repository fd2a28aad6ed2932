"""Reduced collections (``reduce=``): a PCA-projected index, exact distances from the
original vectors, tuned re-rank depth, saved projections, and every search path.

Runs on 3,000 real MiniLM vectors (384-d) of the PyPI data set (tests/data/) and its held-out
test queries, like tests/index/test_ann.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentdb
from latentdb import Collection, IndexSpec, InvalidArgumentError, LatentDBWarning
from latentdb.index._sealed import SealedSegment, learn_projection
from tests._data import pypi_minilm
from tests.index.test_ann import build as build_collection

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

ROWS = 3000
QUERIES = 100
REDUCE = 96


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return pypi_minilm(ROWS, QUERIES)


def distances_to(train: np.ndarray, query: np.ndarray, ids: list[str], metric: str) -> np.ndarray:
    rows = train[[int(i) for i in ids]]
    if metric == "cosine":
        unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return 1.0 - unit @ (query / np.linalg.norm(query))
    if metric == "l2":
        return np.sum((rows - query) ** 2, axis=1)
    return -(rows @ query)


def true_ids(train: np.ndarray, query: np.ndarray, metric: str, k: int = 10) -> set[int]:
    every = distances_to(train, query, [str(i) for i in range(train.shape[0])], metric)
    return set(np.argsort(every, kind="stable")[:k].tolist())


def recall(result: Any, train: np.ndarray, queries: np.ndarray, metric: str) -> float:
    hits = sum(
        len({int(i) for i in ids} & true_ids(train, query, metric))
        for ids, query in zip(result.ids, queries, strict=True)
    )
    return hits / (10 * queries.shape[0])


def build(folder: Path, train: np.ndarray, **options: Any) -> Collection:
    """An optimized collection of ``train`` (hnsw reduced to REDUCE unless told)."""
    options = {"index": "hnsw", "reduce": REDUCE, **options}
    return build_collection(folder, options.pop("index"), train, **options)


@pytest.fixture(scope="module")
def reduced_folder(tmp_path_factory: pytest.TempPathFactory, data: Any) -> Path:
    """One optimized reduced hnsw collection on disk; tests copy it."""
    folder = tmp_path_factory.mktemp("reduced")
    build(folder, data[0])._database.close()
    return folder


@pytest.fixture
def reduced(tmp_path: Path, reduced_folder: Path, databases: list[latentdb.Database]) -> Collection:
    shutil.copytree(reduced_folder, tmp_path / "db")
    databases.append(latentdb.connect(tmp_path / "db"))
    return databases[-1].get_collection("c")


def segment_of(collection: Collection) -> SealedSegment:
    index = collection._database.index(collection._state)
    (entry,) = index.sealed
    return entry[1]


def test_the_projection_is_the_top_principal_axes(data: Any) -> None:
    train, _ = data
    axes = learn_projection(train, 16)
    assert axes.shape == (16, 384) and axes.dtype == np.float32
    np.testing.assert_allclose(axes @ axes.T, np.eye(16), atol=1e-4)
    # The variance along them is the largest any 16 orthonormal axes can keep: numpy's
    # eigenvalues of the covariance agree.
    centred = train - train.mean(axis=0)
    kept = np.sum((centred @ axes.T) ** 2) / train.shape[0]
    eigenvalues = np.linalg.eigvalsh(np.cov(centred, rowvar=False, bias=True))
    assert kept == pytest.approx(np.sort(eigenvalues)[::-1][:16].sum(), rel=1e-3)


def test_reduced_index_meets_the_target_with_exact_distances(reduced: Collection, data: Any):
    train, test = data
    assert reduced.space.reduce == REDUCE and reduced.space.dimension == 384
    segment = segment_of(reduced)
    assert segment.index.d == REDUCE and segment.vectors.shape == (ROWS, 384)
    status = reduced.index_status()
    assert status.kind == "hnsw" and (status.indexed, status.pending) == (ROWS, 0)
    assert status.params["rerank"] in (2, 4, 8, 16)
    assert status.tuned_recall is not None and status.tuned_recall >= 0.95
    result = reduced.query(vectors=test, k=10, include=["distances"])
    assert recall(result, train, test, "cosine") >= 0.9  # tuned on 300 held-out rows
    for ids, found, query in zip(result.ids, result.distances, test, strict=True):
        # Re-scored with the original vectors: the distances of the full space.
        np.testing.assert_allclose(found, distances_to(train, query, ids, "cosine"), atol=1e-5)
        assert list(found) == sorted(found)
    one = reduced.query(vectors=test[0], k=10, include=["distances"])  # the one-query path
    assert one.ids[0] == result.ids[0]


def test_evaluate_shows_what_the_reduction_costs(reduced: Collection, data: Any) -> None:
    _, test = data
    report = reduced.evaluate(test)
    assert report.reduce == REDUCE and report.params["rerank"] >= 2
    assert report.recall_without_rerank is not None
    # The top 10 of a 96-d projection alone miss neighbours that re-ranking more
    # candidates with the 384-d vectors finds.
    assert report.recall_without_rerank < report.recall - 0.05
    assert report.recall >= 0.9
    narrow = reduced.query(vectors=test, k=10, params={"rerank": 1})
    wide = reduced.query(vectors=test, k=10, params={"rerank": 16, "ef": 256})
    train = data[0]
    assert recall(wide, train, test, "cosine") > recall(narrow, train, test, "cosine")
    with pytest.raises(InvalidArgumentError, match="rerank"):
        reduced.query(vectors=test[0], params={"rerank": 0})


def test_an_unreduced_index_takes_no_rerank_and_reports_none(
    tmp_path: Path, data: Any, databases: list[latentdb.Database]
) -> None:
    train, test = data
    plain = build(tmp_path, train[:1000], reduce=None)
    databases.append(plain._database)
    with pytest.raises(InvalidArgumentError, match="rerank"):
        plain.query(vectors=test[0], params={"rerank": 4})
    report = plain.evaluate(test[:20])
    assert report.reduce is None and report.recall_without_rerank is None


def test_the_reduced_index_is_smaller(
    reduced: Collection, tmp_path: Path, data: Any, databases: list[latentdb.Database]
) -> None:
    full = build(tmp_path / "full", data[0], reduce=None)
    databases.append(full._database)
    reduced_bytes = segment_of(reduced).memory_bytes()
    full_bytes = segment_of(full).memory_bytes()
    # 96 of 384 floats per row, plus the same graph links.
    assert reduced_bytes < 0.45 * full_bytes


def test_reopen_loads_the_projection_without_rebuilding(
    reduced: Collection, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = reduced.query(vectors=data[1], k=10, include=["distances"])
    folder = reduced._database.path
    reduced._database.close()

    def no_build(**_: Any) -> None:
        raise AssertionError("the saved index must be loaded, not rebuilt")

    monkeypatch.setattr(SealedSegment, "build", no_build)
    with latentdb.connect(folder) as again:
        collection = again.get_collection("c")
        after = collection.query(vectors=data[1], k=10, include=["distances"])
        assert after.ids == before.ids
        np.testing.assert_allclose(after.distances, before.distances, atol=1e-6)
        segment = segment_of(collection)
        assert segment.projection is not None and segment.index.d == REDUCE
        assert isinstance(segment.vectors, np.memmap)  # originals read from the file


@pytest.mark.parametrize("damage", ["projection", "reduce"])
def test_a_damaged_or_foreign_projection_is_rebuilt_with_a_warning(
    reduced: Collection, data: Any, databases: list[latentdb.Database], damage: str
) -> None:
    folder = reduced._database.path
    reduced._database.close()
    (segment,) = (folder / "indexes").glob("*/seg-*")
    if damage == "projection":
        np.save(segment / "projection.npy", np.zeros((REDUCE, 100), dtype=np.float32))
    else:  # a segment saved for another dimension than the manifest says
        meta = segment / "segment.json"
        meta.write_text(meta.read_text().replace(f'"reduce": {REDUCE}', '"reduce": 64'))
    databases.append(latentdb.connect(folder))
    collection = databases[-1].get_collection("c")
    train, test = data
    with pytest.warns(LatentDBWarning, match="rebuilding"):
        result = collection.query(vectors=test, k=10)
    assert recall(result, train, test, "cosine") > 0.999  # exact until rebuilt
    collection.optimize()
    assert segment_of(collection).index.d == REDUCE


def test_writes_deletes_and_filters_on_a_reduced_index(reduced: Collection, data: Any) -> None:
    train, test = data
    rng = np.random.default_rng(5)
    doomed = rng.choice(ROWS, size=600, replace=False)
    reduced.delete([str(i) for i in doomed])
    reduced.upsert(
        ["new"], vectors=test[0], model=MODEL
    )  # growing: searched exactly beside the graph
    found = reduced.query(vectors=test, k=10)
    assert not {str(i) for i in doomed} & {i for ids in found.ids for i in ids}
    assert found.ids[0][0] == "new"
    assert all(len(ids) == 10 for ids in found.ids)
    # A filter through the masked graph: the allowed rows only, exact distances.
    alive = np.setdiff1d(np.arange(0, ROWS, 2), doomed)
    reduced.update([str(i) for i in alive], metadatas=[{"even": True}] * alive.size)
    filtered = reduced.query(vectors=test[:20], k=10, where={"even": True}, include=["distances"])
    for ids, distances, query in zip(filtered.ids, filtered.distances, test[:20], strict=True):
        assert all(int(i) % 2 == 0 and int(i) not in doomed for i in ids) and len(ids) == 10
        np.testing.assert_allclose(distances, distances_to(train, query, ids, "cosine"), atol=1e-5)
    truth = [set(alive[np.argsort(1 - train[alive] @ q)[:10]].tolist()) for q in test[:20]]
    hits = sum(
        len({int(i) for i in ids} & want) for ids, want in zip(filtered.ids, truth, strict=True)
    )
    assert hits / 200 >= 0.9
    reduced.optimize()  # compaction rebuilds with a new projection
    status = reduced.index_status()
    assert status.deleted == 0 and status.indexed == ROWS - 600 + 1
    assert reduced.query(vectors=test[0], k=1).ids[0][0] == "new"


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_l2_and_inner_product_spaces(
    tmp_path: Path, data: Any, databases: list[latentdb.Database], metric: str
) -> None:
    train, test = data
    # Rows of different lengths, so l2 and ip rank differently from cosine.
    scaled = train * np.random.default_rng(1).uniform(0.5, 2.0, size=(ROWS, 1)).astype(np.float32)
    collection = build(tmp_path, scaled, metric=metric)
    databases.append(collection._database)
    result = collection.query(vectors=test, k=10, include=["distances"])
    assert recall(result, scaled, test, metric) >= 0.9
    for ids, distances, query in zip(result.ids, result.distances, test, strict=True):
        np.testing.assert_allclose(
            distances, distances_to(scaled, query, ids, metric), rtol=1e-4, atol=1e-4
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [IndexSpec(kind="hnsw-sq8"), IndexSpec(kind="ivf"), IndexSpec(kind="ivf-pq", pq_bytes=16)],
    ids=lambda spec: spec.kind,
)
def test_every_ann_kind_can_be_reduced(
    tmp_path: Path, data: Any, databases: list[latentdb.Database], spec: IndexSpec
) -> None:
    train, test = data
    collection = build(tmp_path, train, index=spec)
    databases.append(collection._database)
    segment = segment_of(collection)
    assert segment.kind == spec.kind and segment.index.d == REDUCE
    result = collection.query(vectors=test, k=10, include=["distances"])
    assert recall(result, train, test, "cosine") >= 0.9
    ids, distances = result.ids[0], result.distances[0]
    np.testing.assert_allclose(distances, distances_to(train, test[0], ids, "cosine"), atol=1e-5)


def test_auto_stays_exact_and_full_width_while_small(
    tmp_path: Path, data: Any, databases: list[latentdb.Database]
) -> None:
    train, test = data
    collection = build(tmp_path, train[:500], index="auto")
    databases.append(collection._database)
    assert collection.index_status().kind == "flat"
    assert recall(collection.query(vectors=test, k=10), train[:500], test, "cosine") == 1.0
    report = collection.evaluate(test[:10])
    assert report.reduce is None and report.recall == 1.0
