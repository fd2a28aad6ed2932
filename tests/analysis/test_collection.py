"""Collection.analyze / map / project, on the embedded engine and over HTTP."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latentdb import (
    Database,
    FilterError,
    IndexSpec,
    InvalidArgumentError,
    SpaceMap,
    SpaceReport,
)

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

pytestmark = pytest.mark.transports

DIM = 32


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Four tight clusters: far more structure than Gaussian noise of the same shape."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4, DIM)) * 4
    return (centres[np.arange(n) % 4] + rng.standard_normal((n, DIM)) * 0.3).astype(np.float32)


def filled(db: Database, n: int = 600, metric: str = "cosine") -> object:
    collection = db.create_collection("c", embedder=None, dimension=DIM, metric=metric, model=MODEL)
    rows = clustered(n)
    rows[1] = rows[0] * 1.0001  # one planted near-duplicate pair
    collection.add(
        [f"r{i}" for i in range(n)],
        vectors=rows,
        documents=[f"document number {i}" for i in range(n)],
        metadatas=[{"cluster": i % 4, "even": i % 2 == 0} for i in range(n)],
        model=MODEL,
    )
    return collection


def test_analyze_measures_the_space(db: Database) -> None:
    collection = filled(db)
    report = collection.analyze(sample=1000, k=10)  # type: ignore[attr-defined]
    assert isinstance(report, SpaceReport)
    assert (report.count, report.dimension, report.metric, report.model) == (
        600,
        DIM,
        "cosine",
        MODEL,
    )
    assert report.sample == 600 and not report.near_duplicates_estimated
    assert report.norms.unit_length  # a cosine collection stores unit vectors
    assert report.relative_contrast > 2 * report.gaussian_relative_contrast
    assert report.near_duplicate_pairs >= 1
    assert {"r0", "r1"} in [{p.first, p.second} for p in report.near_duplicate_examples]
    assert report.intrinsic_dimension_estimator.startswith("TwoNN")
    assert report.index is not None and report.index.kind == "flat"
    assert [t.dimension for t in report.reductions] == [16, 8]
    assert {a.topic for a in report.advice} >= {"metric", "index", "reduction", "duplicates"}
    assert all(a.evidence for a in report.advice)
    again = SpaceReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.relative_contrast == report.relative_contrast


def test_analyze_advises_cosine_when_norms_vary_under_ip(db: Database) -> None:
    collection = db.create_collection("ip", embedder=None, dimension=DIM, metric="ip", model=MODEL)
    rows = clustered(300) * np.random.default_rng(1).uniform(0.2, 5, size=(300, 1))
    collection.add([str(i) for i in range(300)], vectors=rows.astype(np.float32), model=MODEL)
    report = collection.analyze(sample=300)
    assert not report.norms.unit_length
    (metric,) = [a for a in report.advice if a.topic == "metric"]
    assert float(metric.evidence["top_k_agreement_with_cosine"]) < 0.9
    assert "metric='cosine'" in metric.text


def test_analyze_refuses_bad_arguments(db: Database) -> None:
    collection = filled(db, n=12)
    with pytest.raises(InvalidArgumentError, match="sample"):
        collection.analyze(sample=2)  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgumentError, match="more than k"):
        collection.analyze(k=20)  # type: ignore[attr-defined]


def test_map_and_project_sample_with_a_fixed_seed(db: Database) -> None:
    collection = filled(db)
    space_map = collection.map(sample=200)  # type: ignore[attr-defined]
    assert isinstance(space_map, SpaceMap)
    assert space_map.coordinates.shape == (200, 2) and space_map.total == 600
    assert len(set(space_map.ids)) == 200
    position = space_map.ids.index("r8") if "r8" in space_map.ids else 0
    number = int(space_map.ids[position][1:])
    assert space_map.documents[position] == f"document number {number}"
    assert space_map.metadatas[position] == {"cluster": number % 4, "even": number % 2 == 0}
    coordinates = collection.project(sample=200)  # type: ignore[attr-defined]
    np.testing.assert_allclose(coordinates, space_map.coordinates, rtol=1e-5, atol=1e-5)
    assert coordinates.dtype == np.float32
    # Clusters stay apart on a PCA map: each point is nearer its own cluster's centre.
    labels = np.array([m["cluster"] for m in space_map.metadatas])
    centres = np.stack([space_map.coordinates[labels == c].mean(axis=0) for c in range(4)])
    nearest = np.argmin(((space_map.coordinates[:, None] - centres) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.9


def test_map_filters_and_refuses_bad_arguments(db: Database) -> None:
    collection = filled(db)
    only = collection.map(where={"cluster": 2}, sample=1000)  # type: ignore[attr-defined]
    assert only.total == 150 and all(m["cluster"] == 2 for m in only.metadatas)
    with pytest.raises(InvalidArgumentError, match="method must be one of"):
        collection.project(method="mds")  # type: ignore[attr-defined]
    with pytest.raises(FilterError):
        collection.project(where={"cluster": {"$bad": 1}})  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgumentError, match="at least 3"):
        collection.project(where={"cluster": 99})  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.embedded_only  # the server only relays: one transport is enough for 30 s of numba
@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_nonlinear_maps_keep_clusters_apart(db: Database, method: str) -> None:
    collection = filled(db, n=300)
    space_map = collection.map(method=method, sample=300)  # type: ignore[attr-defined]
    labels = np.array([m["cluster"] for m in space_map.metadatas])
    xy = space_map.coordinates
    assert xy.shape == (300, 2) and np.isfinite(xy).all()
    centres = np.stack([xy[labels == c].mean(axis=0) for c in range(4)])
    nearest = np.argmin(((xy[:, None] - centres) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.9
    np.testing.assert_allclose(collection.project(method=method, sample=300), xy, atol=1e-4)  # type: ignore[attr-defined]


def test_analyze_and_map_read_sealed_segments_without_deleted_rows(db: Database) -> None:
    collection = db.create_collection(
        "ann",
        embedder=None,
        dimension=DIM,
        model=MODEL,
        index=IndexSpec(kind="hnsw", seal_rows=100),
    )
    rows = clustered(400)
    collection.add([f"r{i}" for i in range(400)], vectors=rows, model=MODEL)
    collection.optimize()
    collection.delete([f"r{i}" for i in range(0, 400, 4)])
    collection.add([f"new{i}" for i in range(20)], vectors=clustered(20, seed=5), model=MODEL)
    report = collection.analyze(sample=1000)
    assert report.count == 320 and report.sample == 320
    assert report.index is not None and report.index.kind == "hnsw" and "ef" in report.index.params
    (index,) = [a for a in report.advice if a.topic == "index"]
    assert "hnsw (ef=" in index.text and "recall@10" in index.text
    deleted = {f"r{i}" for i in range(0, 400, 4)}
    assert not deleted & {hub.id for hub in report.top_hubs}
    space_map = collection.map(sample=1000)
    assert space_map.total == 320 and not deleted & set(space_map.ids)
    assert {f"new{i}" for i in range(20)} <= set(space_map.ids)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_analyze_a_tiny_collection_in_each_metric(db: Database, metric: str) -> None:
    collection = db.create_collection(
        "tiny", embedder=None, dimension=DIM, metric=metric, model=MODEL
    )
    collection.add([str(i) for i in range(12)], vectors=clustered(12), model=MODEL)
    report = collection.analyze(k=3)
    assert report.count == 12 and report.metric == metric
    assert all(0 <= trial.recall <= 1 for trial in report.reductions)
    json.dumps(report.to_dict(), allow_nan=False)
