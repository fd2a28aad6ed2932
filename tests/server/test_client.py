"""The same answers from the client and the engine for what the shared API suite does
not cover (explain, hybrid, scroll, indexes, images, migrations)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

import latentdb
from latentdb import (
    Database,
    EmbedderError,
    IndexStatus,
    InvalidArgumentError,
    ModelRequiredError,
    QueryResult,
    RecallReport,
)
from latentdb.embed import register, unregister
from latentdb.query import QueryPlan
from tests.conftest import HashingEmbedder, SessionServer

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

pytestmark = pytest.mark.transports


class PixelEmbedder(HashingEmbedder):
    """Text as HashingEmbedder; an image as its 4x4 RGB pixels (48-d), decoded by PIL."""

    modalities = frozenset({"text", "image"})

    def __init__(self) -> None:
        super().__init__("test-pixels", dimension=48)

    def embed_images(
        self, images: Sequence[Any], *, progress: Any = None
    ) -> npt.NDArray[np.float32]:
        rows = []
        for position, image in enumerate(images):
            try:
                if isinstance(image, bytes):
                    image = Image.open(io.BytesIO(image))
                elif not isinstance(image, Image.Image):
                    image = Image.open(image)
            except OSError as error:  # as the CLIP embedder says it
                raise EmbedderError(f"image at position {position}: {error}") from None
            pixels = np.asarray(image.convert("RGB").resize((4, 4)), dtype=np.float32)
            rows.append(pixels.ravel() + 1.0)
        return np.stack(rows)


@pytest.fixture
def pixels() -> Iterator[PixelEmbedder]:
    instance = PixelEmbedder()
    register("test-pixels", lambda name: instance)
    yield instance
    unregister("test-pixels")


def test_images_cross_as_bytes_paths_or_pil(
    db: Database, pixels: PixelEmbedder, tmp_path: Path
) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (8, 8), colour) for colour in colours]
    path = tmp_path / "green.png"
    images[1].save(path)
    buffer = io.BytesIO()
    images[2].save(buffer, format="PNG")
    collection = db.create_collection("pics", embedder="test-pixels")
    collection.add(["red", "green", "blue"], images=[images[0], str(path), buffer.getvalue()])
    assert collection.query(images=[images[2]], k=1).ids == [["blue"]]
    assert collection.query(images=[path], k=1, include=[]).ids == [["green"]]
    with pytest.raises(EmbedderError, match="position 0"):
        collection.query(images=[tmp_path / "missing.png"])
    with pytest.raises(InvalidArgumentError, match="list"):
        collection.query(images="red.png")  # type: ignore[arg-type]


@pytest.mark.unsharded  # hybrid search is refused on shards: tests/distributed/
def test_explain_hybrid_and_document_filters(db: Database, hashing_embedder: Any) -> None:
    collection = db.create_collection("t", embedder="test-hashing")
    documents = [f"topic{i % 5} word{i % 3} item{i}" for i in range(40)]
    collection.add(
        [str(i) for i in range(40)],
        documents=documents,
        metadatas=[{"n": i, "even": i % 2 == 0} for i in range(40)],
    )
    explained = collection.query(texts="topic1 word1", k=3, where={"even": True}, explain=True)
    assert isinstance(explained, QueryResult) and isinstance(explained.plan, QueryPlan)
    assert explained.plan.strategy.startswith("exact") and explained.plan.allowed == 20
    hybrid = collection.query(texts=["topic2 item7", "word0"], k=4, hybrid=True)
    assert hybrid.scores is not None and hybrid.scores.dtype == np.float32
    assert hybrid.scores.shape == (2, 4) and np.all(np.diff(hybrid.scores, axis=1) <= 0)
    matched = collection.query(
        texts="topic3", k=10, where_document={"$contains": "item1"}, include=["documents"]
    )
    assert matched.documents is not None
    assert all("item1" in doc for row in matched.documents for doc in row if doc)
    assert collection.get(where_document={"$match": "item39"}).ids == ["39"]
    assert collection.delete(where_document={"$contains": "item3"}) == 11  # 3, 30-39
    assert collection.count() == 29


@pytest.mark.unsharded  # shard by shard there: tests/distributed/
def test_scroll_pages_in_order_and_sees_later_writes(db: Database) -> None:
    collection = db.create_collection("s", dimension=2, embedder=None, model=MODEL)
    collection.add([f"r{i:02d}" for i in range(25)], vectors=np.ones((25, 2)), model=MODEL)
    pages = collection.scroll(batch=10, include=["vectors"], where=None)
    first = next(pages)
    assert first.ids == [f"r{i:02d}" for i in range(10)] and first.vectors is not None
    assert first.vectors.shape == (10, 2)
    collection.add(["late"], vectors=np.ones(2), model=MODEL)
    rest = [page.ids for page in pages]
    assert rest == [
        [f"r{i:02d}" for i in range(10, 20)],
        [*(f"r{i}" for i in range(20, 25)), "late"],
    ]
    assert list(collection.scroll(where={"missing": 1})) == []
    with pytest.raises(InvalidArgumentError, match="batch"):
        next(collection.scroll(batch=0))


def test_indexes_tuned_evaluated_and_status(db: Database) -> None:
    data = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    collection = db.create_collection(
        "h", dimension=8, metric="l2", embedder=None, index="hnsw", model=MODEL
    )
    collection.add([str(i) for i in range(600)], vectors=data, model=MODEL)
    collection.optimize()
    status = collection.index_status()
    assert isinstance(status, IndexStatus) and status.kind == "hnsw" and "ef" in status.params
    report = collection.evaluate(data[:50], k=5)
    assert isinstance(report, RecallReport) and report.queries == 50 and report.recall > 0.5
    assert collection.query(vectors=data[7], k=1, params={"ef": 64}).ids == [["7"]]
    assert collection.query(vectors=data[7], k=1, exact=True).ids == [["7"]]
    collection.set_recall_target(0.9)
    assert collection.recall_target == 0.9
    with pytest.raises(InvalidArgumentError, match="recall_target"):
        collection.set_recall_target(2.0)


@pytest.mark.unsharded  # migrate is refused on shards: tests/distributed/
def test_migration_runs_and_reports(db: Database, hashing_embedder: Any) -> None:
    wider = HashingEmbedder("test-hashing-32", dimension=32)
    register("test-hashing-32", lambda name: wider)
    try:
        source = db.create_collection("docs", embedder="test-hashing")
        source.add([f"d{i}" for i in range(30)], documents=[f"text {i}" for i in range(30)])
        seen: list[tuple[int, int]] = []
        migration = db.migrate(
            "docs", embedder="test-hashing-32", background=False, progress=lambda *a: seen.append(a)
        )
        status = migration.status()
        assert (status.source, status.target, status.state, status.copied) == (
            "docs-v1",
            "docs-v2",
            "done",
            30,
        )
        assert seen and seen[-1] == (30, 30) and migration.done
        assert migration.wait(timeout=5).state == "done"
        assert db.list_aliases() == {"docs": "docs-v2"}
        assert db.get_collection("docs").space.dimension == 32
        assert [m.id for m in db.list_migrations()] == [migration.id]
        with pytest.raises(EmbedderError, match="unknown embedder"):
            db.migrate("docs", embedder="no-such-model")
    finally:
        unregister("test-hashing-32")


def test_vector_forms_give_the_same_answers(http_server: SessionServer, tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)
    with latentdb.connect(tmp_path / "db") as embedded:
        http_server.serve(embedded)
        results = []
        for form in ("binary", "json"):
            with latentdb.connect(http_server.url, vector_format=form) as db:  # type: ignore[arg-type]
                collection = db.get_or_create_collection(
                    "v", dimension=6, embedder=None, model=MODEL
                )
                collection.upsert([str(i) for i in range(50)], vectors=data, model=MODEL)
                results.append(
                    collection.query(vectors=data[:5], k=3, include=["distances", "vectors"])
                )
                got = collection.get(["3"], include=["vectors"]).vectors
                assert got is not None
                np.testing.assert_allclose(got[0], data[3] / np.linalg.norm(data[3]), rtol=1e-6)
        binary, plain = results
        assert binary.ids == plain.ids
        assert binary.distances is not None and plain.distances is not None
        np.testing.assert_allclose(binary.distances, plain.distances, atol=1e-6)
        reply = httpx.post(
            f"{http_server.url}/v1/collections/v/query",
            json={"vectors": data[0].tolist(), "k": 1, "include": ["distances"]},
        )
        assert reply.json()["ids"] == [["0"]] and isinstance(reply.json()["distances"], list)
        with pytest.raises(InvalidArgumentError, match="vector_format"):
            latentdb.connect(http_server.url, vector_format="arrow")  # type: ignore[arg-type]


def test_the_http_api_takes_and_reports_require_model(
    http_server: SessionServer, tmp_path: Path
) -> None:
    """Issue 16's setting over HTTP: documented in OpenAPI, taken by create, reported
    by the collection, and a write of vectors without model= is a 409 model_required
    that the client raises as ModelRequiredError."""
    url = http_server.url
    with latentdb.connect(tmp_path / "db") as embedded:
        http_server.serve(embedded)
        schema = httpx.get(f"{url}/openapi.json").json()
        field = schema["components"]["schemas"]["CreateCollectionBody"]["properties"]
        assert field["require_model"]["type"] == "boolean"
        assert field["require_model"]["default"] is True
        body = {"name": "strict", "dimension": 2, "embedder": None, "model": MODEL}
        created = httpx.post(f"{url}/v1/collections", json=body).json()
        assert created["require_model"] is True
        lenient = {"name": "lenient", "dimension": 2, "embedder": None, "require_model": False}
        assert httpx.post(f"{url}/v1/collections", json=lenient).json()["require_model"] is False
        assert httpx.get(f"{url}/v1/collections/lenient").json()["require_model"] is False
        unnamed = httpx.post(f"{url}/v1/collections", json={**lenient, "require_model": True})
        assert unnamed.status_code == 400 and "needs model=" in unnamed.json()["message"]
        refused = httpx.post(
            f"{url}/v1/collections/strict/records", json={"ids": ["a"], "vectors": [1.0, 0.0]}
        )
        assert refused.status_code == 409 and refused.json()["code"] == "model_required"
        with latentdb.connect(url) as db:
            strict = db.get_collection("strict")
            assert strict.require_model and not db.get_collection("lenient").require_model
            with pytest.raises(ModelRequiredError, match=f"model='{MODEL}'"):
                strict.add(["a"], vectors=[1.0, 0.0])
            strict.add(["a"], vectors=[1.0, 0.0], model=MODEL)
            made = db.get_or_create_collection(
                "made", dimension=2, embedder=None, require_model=False
            )
            assert not made.require_model and embedded.get_collection("strict").count() == 1
        assert not embedded.get_collection("made").require_model


def test_openapi_docs_and_metrics(http_server: SessionServer, tmp_path: Path) -> None:
    with latentdb.connect(tmp_path / "db") as embedded:
        http_server.serve(embedded)
        embedded.create_collection("m", dimension=2, embedder=None, model=MODEL).add(
            ["a"], vectors=[1.0, 0.0], model=MODEL
        )
        with latentdb.connect(http_server.url) as db:
            db.get_collection("m").query(vectors=[1.0, 0.0])
        schema = httpx.get(f"{http_server.url}/openapi.json").json()
        assert "/v1/collections/{name}/query" in schema["paths"]
        assert "QueryBody" in schema["components"]["schemas"]
        assert "swagger" in httpx.get(f"{http_server.url}/docs").text.lower()
        metrics = httpx.get(f"{http_server.url}/metrics").text
        assert 'latentdb_collection_rows{collection="m"} 1' in metrics
        assert (
            'latentdb_requests_total{method="POST",route="/v1/collections/{name}/query",'
            'status="200"}' in metrics
        )
        assert (
            'latentdb_request_duration_seconds_bucket{route="/v1/collections/{name}/query"'
            in metrics
        )


def test_live_recall_reaches_the_client_and_metrics(
    http_server: SessionServer, tmp_path: Path
) -> None:
    with latentdb.connect(tmp_path / "db") as embedded:
        http_server.serve(embedded)
        spec = {"kind": "flat", "sample_rate": 1.0, "sample_per_minute": 1000}
        embedded.create_collection("m", dimension=2, embedder=None, model=MODEL, index=spec).add(
            ["a", "b"], vectors=[[1.0, 0.0], [0.0, 1.0]], model=MODEL
        )
        with latentdb.connect(http_server.url) as db:
            remote = db.get_collection("m")
            assert remote.index_status().live_recall is None
            for _ in range(100):  # the measurement starts at 100 recorded queries
                remote.query(vectors=[1.0, 0.0], k=1, include=[])
            deadline = time.monotonic() + 30
            while remote.index_status().live_recall is None and time.monotonic() < deadline:
                time.sleep(0.05)
            status = remote.index_status()
            assert (status.live_recall, status.live_queries) == (1.0, 100)  # exact: all found
        metrics = httpx.get(f"{http_server.url}/metrics").text
        assert 'latentdb_live_recall{collection="m"} 1.0' in metrics
        assert 'latentdb_live_recall_queries{collection="m"} 100' in metrics
