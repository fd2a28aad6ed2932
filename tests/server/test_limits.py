"""Limits and errors: 413 over the body or batch size, JSON errors, no stack traces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import latentdb
from latentdb import (
    Collection,
    DimensionMismatchError,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    TransportError,
)
from latentdb.engine import EmbeddedCollection
from latentdb.server import ServerThread
from tests.server.conftest import serving

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

DIM = 4


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server without auth that takes 64 KiB bodies and 10 rows per call."""
    with serving(tmp_path_factory.mktemp("small") / "db", max_body=65536, max_batch=10) as server:
        with latentdb.connect(server.url) as db:
            db.create_collection("c", dimension=DIM, embedder=None, model=MODEL).add(
                ["a"], vectors=np.ones(DIM), model=MODEL
            )
        yield server


def test_batches_over_the_limit_are_413(small: ServerThread) -> None:
    with latentdb.connect(small.url) as db:
        collection = db.get_collection("c")
        ids = [str(i) for i in range(11)]
        with pytest.raises(PayloadTooLargeError, match=r"11 rows .* limit of 10") as raised:
            collection.add(ids, vectors=np.ones((11, DIM)), model=MODEL)
        assert raised.value.status == 413
        with pytest.raises(PayloadTooLargeError, match="11 queries"):
            collection.query(vectors=np.ones((11, DIM)))
        with pytest.raises(PayloadTooLargeError, match="11 ids"):
            collection.get(ids)
        collection.add(ids[:10], vectors=np.ones((10, DIM)), model=MODEL)  # at the limit: fine
        assert collection.count() == 11


def test_bodies_over_the_limit_are_413_declared_or_streamed(small: ServerThread) -> None:
    body = b'{"ids": ["' + b"x" * 70_000 + b'"]}'
    reply = httpx.post(f"{small.url}/v1/collections/c/records", content=body)
    assert reply.status_code == 413
    error = reply.json()
    assert error["code"] == "payload_too_large" and "65,536 bytes" in error["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 10_000

    reply = httpx.post(f"{small.url}/v1/collections/c/records", content=chunks())
    assert reply.status_code == 413 and reply.json()["code"] == "payload_too_large"
    with (
        latentdb.connect(small.url, vector_format="json") as db,
        pytest.raises(PayloadTooLargeError, match="--max-body"),
    ):
        db.get_collection("c").upsert(
            ["big"], vectors=np.ones((1, DIM)), documents=["x" * 70_000], model=MODEL
        )


def test_every_error_is_json_with_a_stable_code(small: ServerThread) -> None:
    cases = [
        ("GET", "/nowhere", None, 404, "not_found"),
        ("GET", "/v1/collections/missing", None, 404, "collection_not_found"),
        ("POST", "/v1/collections/c/query", {"vectors": [1, 2]}, 400, "dimension_mismatch"),
        ("POST", "/v1/collections/c/query", {"vector": [1, 2]}, 400, "invalid_argument"),
        ("POST", "/v1/collections/c/query", b"{not json", 400, "invalid_argument"),
        ("DELETE", "/v1/collections/c/count", None, 405, "invalid_argument"),
        (
            "POST",
            "/v1/collections/c/query",
            {"vectors": {"dtype": "float32", "shape": [1, 4], "data": "AAAA"}},
            400,
            "invalid_vector",
        ),
    ]
    for method, path, body, status, code in cases:
        content = body if isinstance(body, bytes) or body is None else None
        reply = httpx.request(
            method,
            small.url + path,
            content=content,
            json=None if content is not None or body is None else body,
        )
        assert reply.status_code == status, (path, reply.text)
        error = reply.json()
        assert set(error) == {"code", "status", "message"} and error["code"] == code, reply.text
        assert error["status"] == status and error["message"]
    with latentdb.connect(small.url) as db:
        with pytest.raises(DimensionMismatchError, match="dimension 4"):
            db.get_collection("c").query(vectors=[1.0, 2.0])
        with pytest.raises(NotFoundError):
            db._call("GET", "/nowhere")


def test_an_internal_error_is_a_500_without_its_details(
    small: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Collection) -> int:
        raise RuntimeError("secret detail at /srv/data")

    monkeypatch.setattr(EmbeddedCollection, "_count", broken)  # the engine behind the server
    reply = httpx.get(f"{small.url}/v1/collections/c/count")
    assert reply.status_code == 500
    assert reply.json() == {
        "code": "internal_error",
        "status": 500,
        "message": "the server failed to answer; the reason is in its log",
    }
    assert "secret" not in reply.text and "Traceback" not in reply.text
    with latentdb.connect(small.url) as db, pytest.raises(ServerError):
        db.get_collection("c").count()


def test_nothing_listening_is_a_transport_error(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="cannot reach"):
        latentdb.connect("http://127.0.0.1:9")
    with pytest.raises(InvalidArgumentError, match="api_key= is for a server URL"):
        latentdb.connect(tmp_path / "db", api_key="k")


def test_a_closed_client_refuses_use(small: ServerThread) -> None:
    db = latentdb.connect(small.url)
    collection = db.get_collection("c")
    db.close()
    with pytest.raises(latentdb.DatabaseClosedError):
        collection.count()
