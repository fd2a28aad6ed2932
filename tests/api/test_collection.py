"""Collection methods on the embedded engine: each method, each kind of bad input."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentdb
from latentdb import (
    Collection,
    Database,
    DimensionMismatchError,
    DuplicateIdError,
    EmbedderError,
    FilterError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidMetadataError,
    InvalidVectorError,
    LatentDBError,
    ModelMismatchError,
    ModelRequiredError,
    RecordNotFoundError,
)
from latentdb.api import QueryResult, query_result
from latentdb.engine._state import IdsByKey

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

# Each test that uses db or open_db runs embedded and over HTTP (tests/conftest.py).
pytestmark = pytest.mark.transports

DIM = 8


def vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def snapshot(collection: Collection) -> tuple[Any, ...]:
    """Everything stored, to check that a failed call changed nothing."""
    everything = collection.get(include=["vectors", "documents", "metadatas"])
    return (
        everything.ids,
        None if everything.vectors is None else everything.vectors.tobytes(),
        everything.documents,
        everything.metadatas,
    )


@pytest.fixture
def l2(db: Database) -> Collection:
    """An l2 collection with 20 records (ids "0".."19")."""
    collection = db.create_collection("l2", dimension=DIM, metric="l2", embedder=None, model=MODEL)
    collection.add(
        [str(i) for i in range(20)],
        vectors=vectors(20),
        documents=[f"doc {i}" for i in range(20)],
        metadatas=[{"i": i, "even": i % 2 == 0, "tag": "ab"[i % 2]} for i in range(20)],
        model=MODEL,
    )
    return collection


def test_add_then_get_returns_exactly_what_was_added(l2: Collection) -> None:
    got = l2.get(["3", "1"], include=["vectors", "documents", "metadatas"])
    assert got.ids == ["3", "1"]
    assert got.vectors is not None
    np.testing.assert_array_equal(got.vectors, vectors(20)[[3, 1]])
    assert got.documents == ["doc 3", "doc 1"]
    assert got.metadatas == [
        {"i": 3, "even": False, "tag": "b"},
        {"i": 1, "even": False, "tag": "b"},
    ]
    assert l2.count() == 20


def test_get_include_controls_fields_and_missing_ids_are_left_out(l2: Collection) -> None:
    got = l2.get(["5", "nope"], include=["documents"])
    assert got.ids == ["5"]
    assert got.documents == ["doc 5"]
    assert got.vectors is None and got.metadatas is None


@pytest.mark.unsharded  # shard by shard there: tests/distributed/test_collection.py
def test_get_all_in_insertion_order_with_limit_offset_and_where(l2: Collection) -> None:
    assert l2.get(include=[]).ids == [str(i) for i in range(20)]
    assert l2.get(limit=3, offset=2).ids == ["2", "3", "4"]
    assert l2.get(where={"even": True}, limit=2, offset=1).ids == ["2", "4"]
    assert l2.get(["9", "8", "7"], where={"even": False}).ids == ["9", "7"]
    assert l2.get(["9", "8", "7"], limit=1, offset=1).ids == ["8"]


def test_query_matches_brute_force_l2(l2: Collection) -> None:
    queries = vectors(5, seed=1)
    result = l2.query(vectors=queries, k=4)
    expected = ((queries[:, None, :] - vectors(20)[None]) ** 2).sum(-1)
    order = np.argsort(expected, axis=1)[:, :4]
    assert result.ids == [[str(i) for i in row] for row in order]
    assert result.distances is not None and result.distances.dtype == np.float32
    np.testing.assert_allclose(
        result.distances, np.take_along_axis(expected, order, 1), rtol=1e-4, atol=1e-4
    )
    assert result.documents == [[f"doc {i}" for i in row] for row in order]


def test_query_single_vector_is_a_batch_of_one(l2: Collection) -> None:
    one = l2.query(vectors=vectors(20)[7], k=1, include=["distances"])
    assert one.ids == [["7"]]
    assert one.distances is not None and one.distances.shape == (1, 1)
    assert one.documents is None and one.metadatas is None
    assert float(one.distances[0, 0]) == pytest.approx(0.0, abs=1e-5)


def test_query_k_larger_than_collection_and_where(l2: Collection) -> None:
    result = l2.query(vectors=vectors(2, seed=3), k=50, where={"tag": "a"})
    assert [len(row) for row in result.ids] == [10, 10]
    assert all(int(i) % 2 == 0 for row in result.ids for i in row)
    assert result.distances is not None and result.distances.shape == (2, 10)
    assert np.all(np.diff(result.distances, axis=1) >= 0)


def test_query_returns_vectors_when_asked(l2: Collection) -> None:
    result = l2.query(vectors=vectors(20)[[2, 4]], k=1, include=["vectors"])
    assert result.vectors is not None
    np.testing.assert_array_equal(result.vectors[0][0], vectors(20)[2])
    assert result.distances is None


def test_query_with_no_hits_returns_empty_vectors(l2: Collection) -> None:
    # A filter nothing passes left no hits to reshape (LangChain's MMR search asks for
    # vectors: issue 9).
    result = l2.query(vectors=vectors(20)[[2, 4]], k=3, where={"i": -1}, include=["vectors"])
    assert result.ids == [[], []]
    assert result.vectors is not None
    assert [v.shape for v in result.vectors] == [(0, DIM), (0, DIM)]


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_distances_follow_the_metric(db: Database, metric: str) -> None:
    collection = db.create_collection("m", dimension=3, metric=metric, embedder=None, model=MODEL)
    stored = np.array([[1, 0, 0], [0, 2, 0], [1, 1, 0]], dtype=np.float32)
    collection.add(["x", "y", "xy"], vectors=stored, model=MODEL)
    query = np.array([3, 1, 0], dtype=np.float32)
    result = collection.query(vectors=query, k=3)
    assert result.distances is not None
    got = dict(zip(result.ids[0], result.distances[0].tolist(), strict=True))
    if metric == "cosine":
        unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
        expected = 1 - unit @ (query / np.linalg.norm(query))
        assert collection.space.normalized
    elif metric == "ip":
        expected = -(stored @ query)
    else:
        expected = ((stored - query) ** 2).sum(1)
    for record_id, value in zip(["x", "y", "xy"], expected, strict=True):
        assert got[record_id] == pytest.approx(float(value), abs=1e-5)


def test_cosine_space_stores_unit_vectors(db: Database) -> None:
    collection = db.create_collection("c", dimension=2, embedder=None, model=MODEL)
    collection.add("a", vectors=[3.0, 4.0], model=MODEL)
    got = collection.get("a", include=["vectors"]).vectors
    assert got is not None
    np.testing.assert_allclose(got, [[0.6, 0.8]], rtol=1e-6)


def test_upsert_replaces_every_field_and_adds_new(l2: Collection) -> None:
    l2.upsert(["1", "new"], vectors=vectors(2, seed=9), documents=["one", None], model=MODEL)
    got = l2.get(["1", "new"], include=["vectors", "documents", "metadatas"])
    assert got.documents == ["one", None]
    assert got.metadatas == [None, None]
    assert got.vectors is not None
    np.testing.assert_array_equal(got.vectors, vectors(2, seed=9))
    assert l2.count() == 21
    assert l2.query(vectors=vectors(2, seed=9)[0], k=1).ids == [["1"]]
    assert l2.get(include=[]).ids[1] == "1"  # a replaced record keeps its place


def test_update_changes_only_given_fields(l2: Collection) -> None:
    l2.update(["2"], metadatas=[{"new": True}])
    got = l2.get("2", include=["vectors", "documents", "metadatas"])
    assert got.metadatas == [{"new": True}]
    assert got.documents == ["doc 2"]
    assert got.vectors is not None
    np.testing.assert_array_equal(got.vectors[0], vectors(20)[2])
    l2.update("2", vectors=np.full(DIM, 100, dtype=np.float32), model=MODEL)
    assert l2.query(vectors=np.full(DIM, 99, dtype=np.float32), k=1).ids == [["2"]]


def test_update_of_a_missing_id_writes_nothing(l2: Collection) -> None:
    before = snapshot(l2)
    with pytest.raises(RecordNotFoundError, match="missing"):
        l2.update(["1", "missing"], documents=["x", "y"])
    assert snapshot(l2) == before


def test_delete_by_ids_where_and_both(l2: Collection) -> None:
    assert l2.delete(["0", "1", "unknown"]) == 2
    assert l2.delete(where={"i": {"$gte": 15}}) == 5
    assert l2.delete(["2", "3"], where={"even": True}) == 1
    assert l2.count() == 12
    remaining = set(l2.get(include=[]).ids)
    assert remaining == {str(i) for i in range(3, 15)}
    result = l2.query(vectors=vectors(20), k=20)
    assert all(set(row) == remaining for row in result.ids)


def test_delete_needs_ids_or_where(l2: Collection) -> None:
    with pytest.raises(InvalidArgumentError, match="ids=, where= or where_document="):
        l2.delete()
    assert l2.count() == 20


def test_many_deletes_then_query_is_still_exact(db: Database) -> None:
    collection = db.create_collection("big", dimension=DIM, metric="l2", embedder=None, model=MODEL)
    data = vectors(2000, seed=4)
    collection.add([str(i) for i in range(2000)], vectors=data, model=MODEL)
    collection.query(vectors=data[0], k=1)  # load the index, then delete through it
    for start in range(0, 1000, 100):
        collection.delete([str(i) for i in range(start, start + 100, 2)])
    alive = np.array([i for i in range(2000) if i >= 1000 or i % 2 == 1])
    queries = vectors(3, seed=5)
    for batch in (queries[:1], queries):
        result = collection.query(vectors=batch, k=5)
        expected = ((batch[:, None] - data[alive][None]) ** 2).sum(-1)
        order = alive[np.argsort(expected, axis=1)[:, :5]]
        assert result.ids == [[str(i) for i in row] for row in order]


def test_add_twice_is_a_duplicate_and_writes_nothing(l2: Collection) -> None:
    before = snapshot(l2)
    with pytest.raises(DuplicateIdError, match="'5' is already stored"):
        l2.add(["new", "5"], vectors=vectors(2), model=MODEL)
    assert snapshot(l2) == before


BAD_ADDS: list[tuple[str, dict[str, Any], type[LatentDBError], str]] = [
    ("wrong dimension", {"vectors": np.zeros((2, DIM + 1))}, DimensionMismatchError, "dimension 8"),
    ("nan", {"vectors": np.full((2, DIM), np.nan)}, InvalidVectorError, "NaN"),
    ("inf", {"vectors": np.full((2, DIM), np.inf)}, InvalidVectorError, "infinity"),
    ("float64 overflow", {"vectors": np.full((2, DIM), 1e300)}, InvalidVectorError, "infinity"),
    ("strings", {"vectors": [["a"] * DIM] * 2}, InvalidVectorError, "numeric"),
    ("ragged", {"vectors": [[1.0] * DIM, [1.0]]}, InvalidVectorError, "rectangular"),
    ("3-d", {"vectors": np.zeros((2, 1, DIM))}, InvalidVectorError, "shape"),
    ("too few vectors", {"vectors": np.zeros((1, DIM))}, InvalidArgumentError, "expected 2"),
    ("no vectors", {}, EmbedderError, "no embedder"),
    (
        "docs length",
        {"vectors": np.zeros((2, DIM)), "documents": ["a"]},
        InvalidArgumentError,
        "2 documents",
    ),
    (
        "doc type",
        {"vectors": np.zeros((2, DIM)), "documents": ["a", 3]},
        InvalidArgumentError,
        "strings",
    ),
    (
        "meta length",
        {"vectors": np.zeros((2, DIM)), "metadatas": [{}]},
        InvalidArgumentError,
        "2 metadatas",
    ),
    (
        "nested meta",
        {"vectors": np.zeros((2, DIM)), "metadatas": [{"a": [[1]]}, None]},
        InvalidMetadataError,
        "'a'",
    ),
    (
        "dict in meta",
        {"vectors": np.zeros((2, DIM)), "metadatas": [{"a": {"b": 1}}, None]},
        InvalidMetadataError,
        "'a'",
    ),
    (
        "empty list meta",
        {"vectors": np.zeros((2, DIM)), "metadatas": [{"a": []}, None]},
        InvalidMetadataError,
        "'a'",
    ),
    (
        "meta not dict",
        {"vectors": np.zeros((2, DIM)), "metadatas": ["x", None]},
        InvalidMetadataError,
        "dict",
    ),
    (
        "meta nan",
        {"vectors": np.zeros((2, DIM)), "metadatas": [{"a": float("nan")}, None]},
        InvalidMetadataError,
        "finite",
    ),
    (
        "meta big int",
        {"vectors": np.zeros((2, DIM)), "metadatas": [{"a": 2**64}, None]},
        InvalidMetadataError,
        "64-bit",
    ),
    (
        "meta key",
        {"vectors": np.zeros((2, DIM)), "metadatas": [{"$a": 1}, None]},
        InvalidMetadataError,
        "keys",
    ),
    ("model", {"vectors": np.zeros((2, DIM)), "model": "other"}, ModelMismatchError, "'other'"),
    (
        "no model",
        {"vectors": np.ones((2, DIM)), "model": None},
        ModelRequiredError,
        f"Pass model='{MODEL}'.*require_model=False",
    ),
]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [case[1:] for case in BAD_ADDS],
    ids=[case[0] for case in BAD_ADDS],
)
@pytest.mark.parametrize("method", ["add", "upsert"])
def test_bad_input_raises_a_named_error_and_writes_nothing(
    l2: Collection, method: str, arguments: dict[str, Any], error: type[LatentDBError], message: str
) -> None:
    before = snapshot(l2)
    with pytest.raises(error, match=message):
        getattr(l2, method)(["new1", "new2"], **{"model": MODEL, **arguments})
    assert snapshot(l2) == before


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        ([], InvalidIdError, "empty"),
        ([""], InvalidIdError, "non-empty"),
        ([1], InvalidIdError, "strings"),
        (["a", "a"], DuplicateIdError, "more than once"),
        (None, InvalidIdError, "list"),
    ],
)
def test_bad_ids(l2: Collection, ids: Any, error: type[LatentDBError], message: str) -> None:
    before = snapshot(l2)
    with pytest.raises(error, match=message):
        l2.add(ids, vectors=np.zeros((max(len(ids or []), 1), DIM)), model=MODEL)
    assert snapshot(l2) == before


def test_zero_vector_in_cosine_space_is_refused(db: Database) -> None:
    collection = db.create_collection("c", dimension=2, embedder=None, model=MODEL)
    with pytest.raises(InvalidVectorError, match="all zeros"):
        collection.add(["a", "b"], vectors=[[1.0, 0.0], [0.0, 0.0]], model=MODEL)
    assert collection.count() == 0


def test_callers_array_is_never_modified(db: Database) -> None:
    collection = db.create_collection("c", dimension=2, embedder=None, model=MODEL)
    data = np.array([[3.0, 4.0]], dtype=np.float32)
    collection.add(["a"], vectors=data, model=MODEL)
    collection.query(vectors=data)
    np.testing.assert_array_equal(data, [[3.0, 4.0]])


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({}, InvalidArgumentError, "exactly one"),
        ({"vectors": np.zeros(DIM), "texts": "x"}, InvalidArgumentError, "exactly one"),
        ({"vectors": np.zeros(DIM + 1)}, DimensionMismatchError, "dimension"),
        ({"vectors": np.zeros(DIM), "k": 0}, InvalidArgumentError, "k must"),
        ({"vectors": np.zeros(DIM), "include": ["embeddings"]}, InvalidArgumentError, "embeddings"),
        ({"vectors": np.zeros(DIM), "model": "other"}, ModelMismatchError, "other"),
        ({"texts": "hello"}, EmbedderError, "no embedder"),
        ({"vectors": np.zeros(DIM), "where": {"i": {"$gt": "x"}}}, FilterError, r"\$gt"),
        ({"vectors": np.zeros(DIM), "where": {"i": {"$like": 1}}}, FilterError, r"\$like"),
    ],
)
def test_bad_queries(l2: Collection, arguments: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        l2.query(**arguments)


def test_get_rejects_bad_paging_and_include(l2: Collection) -> None:
    with pytest.raises(InvalidArgumentError, match="limit"):
        l2.get(limit=-1)
    with pytest.raises(InvalidArgumentError, match="offset"):
        l2.get(offset=-2)
    with pytest.raises(InvalidArgumentError, match="distances"):
        l2.get(include=["distances"])
    with pytest.raises(FilterError, match=r"\$and"):
        l2.get(where={"$and": []})


def test_query_empty_collection(db: Database) -> None:
    collection = db.create_collection("e", dimension=DIM, embedder=None, model=MODEL)
    result = collection.query(vectors=vectors(3), k=5)
    assert result.ids == [[], [], []]
    assert result.distances is not None and result.distances.shape == (3, 0)


def test_text_path_embeds_documents_and_queries(db: Database, hashing_embedder: Any) -> None:
    collection = db.create_collection("t", embedder="test-hashing")
    assert collection.space.model == "test/hashing-16"
    assert collection.space.fingerprint == hashing_embedder.fingerprint
    collection.add(["cat", "stock"], documents=["the cat sat on a mat", "stock prices fell"])
    assert collection.query(texts="a cat on the mat", k=1).ids == [["cat"]]
    assert collection.query(texts=["stock market prices"], k=1).ids == [["stock"]]
    collection.update(["cat"], documents=["stock prices rose"])
    assert set(collection.query(texts="stock prices", k=2).ids[0]) == {"cat", "stock"}
    with pytest.raises(EmbedderError, match="position 1"):
        collection.add(["x", "y"], documents=["fine", None])
    assert collection.count() == 2


def test_changed_embedder_fingerprint_is_refused(
    db: Database, hashing_embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = db.create_collection("t", embedder="test-hashing")
    collection.add(["a"], documents=["alpha beta"])
    monkeypatch.setattr(hashing_embedder, "salt", "upgraded weights")
    with pytest.raises(ModelMismatchError, match=hashing_embedder.fingerprint):
        collection.query(texts="alpha")
    with pytest.raises(ModelMismatchError):
        collection.add(["b"], documents=["gamma"])
    # Stored data stays readable and vector queries in the stored space still work.
    stored = collection.get("a", include=["vectors"]).vectors
    assert collection.query(vectors=stored, k=1).ids == [["a"]]


def test_closed_database_refuses_use(tmp_path: Any) -> None:
    database = latentdb.connect(tmp_path / "x")
    collection = database.create_collection("c", dimension=2, embedder=None, model=MODEL)
    database.close()
    with pytest.raises(latentdb.DatabaseClosedError):
        collection.count()


def test_two_handles_share_state(db: Database, l2: Collection) -> None:
    other = db.get_collection("l2")
    other.add(["z"], vectors=vectors(1, seed=8), model=MODEL)
    assert l2.count() == 21
    assert l2.query(vectors=vectors(1, seed=8), k=1).ids == [["z"]]


def test_deleted_collection_handle_raises(db: Database, l2: Collection) -> None:
    db.delete_collection("l2")
    with pytest.raises(latentdb.CollectionNotFoundError):
        l2.count()
    with pytest.raises(latentdb.CollectionNotFoundError):
        l2.add(["a"], vectors=vectors(1), model=MODEL)


def test_two_databases_on_one_folder_see_each_other(open_db: Callable[[], Database]) -> None:
    first, second = open_db(), open_db()
    a = first.create_collection("c", dimension=DIM, metric="l2", embedder=None, model=MODEL)
    a.add(["1"], vectors=vectors(1), model=MODEL)
    b = second.get_collection("c")
    assert b.query(vectors=vectors(1), k=5).ids == [["1"]]  # loads b's index
    a.add(["2"], vectors=vectors(1, seed=2), model=MODEL)
    a.delete(["1"])
    assert b.count() == 1
    assert b.query(vectors=vectors(1), k=5).ids == [["2"]]
    second.delete_collection("c")
    with pytest.raises(latentdb.CollectionNotFoundError):
        a.query(vectors=vectors(1))


@pytest.mark.parametrize("shape", [(2,), (1, 2)])
@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_one_query_vector_takes_the_same_answer_as_a_batch(
    db: Database, shape: tuple[int, ...], scale: float
) -> None:
    collection = db.create_collection("c", dimension=2, embedder=None, model=MODEL)
    collection.add(["a", "b", "c"], vectors=[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], model=MODEL)
    query = (np.array([0.8, 0.6], dtype=np.float32) * scale).reshape(shape)
    one = collection.query(vectors=query, k=3)
    batch = collection.query(vectors=np.vstack([query.reshape(1, 2)] * 2), k=3)
    assert one.ids == batch.ids[:1] == [["b", "a", "c"]]
    assert one.distances is not None and batch.distances is not None
    np.testing.assert_allclose(one.distances[0], batch.distances[0], atol=1e-6)
    np.testing.assert_allclose(one.distances[0], [0.04, 0.2, 0.4], atol=1e-6)


@pytest.mark.parametrize(
    "include",
    [(), ["documents"], ("distances", "documents", "metadatas"), ["vectors", "metadatas"]],
)
def test_the_common_query_answers_as_the_general_path(db: Database, include: Any) -> None:
    """query(vectors=, k=, include=) and nothing else takes a shorter path (no request
    built); with exact=True the same query takes the general one: the same answer."""
    collection = db.create_collection("c", dimension=2, embedder=None, model=MODEL)
    collection.add(
        ["a", "b", "c"], vectors=[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], model=MODEL,
        documents=["x", "y", "z"], metadatas=[{"n": 1}, {"n": 2}, {"n": 3}],
    )  # fmt: skip
    collection.delete(["c"])  # deleted rows stay out of both
    query = np.array([0.0, 1.0], dtype=np.float32)
    short = collection.query(vectors=query, k=3, include=include)
    general = collection.query(vectors=query, k=3, include=include, exact=True)
    assert short.ids == general.ids == [["b", "a"]]
    for field in ("documents", "metadatas"):
        assert getattr(short, field) == getattr(general, field)
    for field in ("distances", "vectors"):
        mine, theirs = getattr(short, field), getattr(general, field)
        assert (mine is None) == (theirs is None)
        if mine is not None:
            np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="include"):
        collection.query(vectors=query, k=3, include=["ids"])  # refused the same way
    with pytest.raises(InvalidArgumentError, match="include"):
        collection.query(vectors=query, k=3, include=["ids"], exact=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_one_non_finite_query_vector_is_refused(db: Database, bad: float) -> None:
    collection = db.create_collection("c", dimension=2, embedder=None, model=MODEL)
    collection.add(["a"], vectors=[[1.0, 0.0]], model=MODEL)
    with pytest.raises(InvalidVectorError, match="NaN or infinity"):
        collection.query(vectors=np.array([bad, 1.0], dtype=np.float32))


def test_ids_by_key_answers_alike_dense_or_sparse() -> None:
    dense = IdsByKey({1: "a", 2: "b", 5: "e"})
    sparse = IdsByKey({1: "a", 10**9: "z"})  # too sparse for the array
    assert dense.lookup(np.array([[5, 1]])) == [["e", "a"]]
    assert sparse.lookup(np.array([[10**9, 1]])) == [["z", "a"]]
    dense.update(np.array([7, 10_000], dtype=np.int64), ["g", "x"])  # past the array: regrown
    dense.discard(np.array([1, 99], dtype=np.int64))
    assert dense.lookup(np.array([[10_000, 7, 2]])) == [["x", "g", "b"]]
    assert len(dense) == 4 and dense[10_000] == "x"
    with pytest.raises(KeyError):
        dense[1]


def test_ids_by_key_asks_for_the_keys_it_lacks_until_it_is_complete() -> None:
    store = {1: "a", 2: "b", 5: "e", 9: "i"}
    asked: list[list[int]] = []

    def fetch(keys: list[int]) -> dict[int, str]:
        asked.append(keys)
        return {key: store[key] for key in keys if key in store}

    ids = IdsByKey({2: "b"}, fetch=fetch)
    assert ids.lookup(np.array([[5, 2], [1, 5]])) == [["e", "b"], ["a", "e"]]
    assert asked == [[5, 1, 5]]  # once, for the keys it lacked
    assert ids.lookup(np.array([[1, 2]])) == [["a", "b"]] and len(asked) == 1  # kept
    ids.update(np.array([12], dtype=np.int64), ["l"])  # a write while partial
    ids.discard(np.array([9], dtype=np.int64))
    ids.complete({1: "a", 2: "b", 5: "e", 9: "i"})  # read before the write
    assert ids.lookup(np.array([[12, 9, 1]])) == [["l", "i", "a"]]
    assert ids.lookup(np.array([[3]])) == [[None]] and len(asked) == 1  # nothing asked


def test_a_large_collection_reads_its_ids_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latentdb.engine import _database

    vectors = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    with latentdb.connect(tmp_path) as db:
        c = db.create_collection("c", dimension=8, embedder=None, index="hnsw", model=MODEL)
        c.add([f"id{i}" for i in range(300)], vectors=vectors, model=MODEL)
        c.optimize()
    monkeypatch.setattr(_database, "IDS_AT_ONCE", 10)
    with latentdb.connect(tmp_path) as db:
        c = db.get_collection("c")
        found = c.query(vectors=vectors[:20], k=3, include=[]).ids
        assert [row[0] for row in found] == [f"id{i}" for i in range(20)]
        c.delete(["id0"])
        c.add(["new"], vectors=vectors[:1], model=MODEL)
        deadline = time.monotonic() + 10
        while c._state.ids._fetch is not None and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        assert c._state.ids._fetch is None  # type: ignore[attr-defined]
        assert c.query(vectors=vectors[0], k=1, include=[]).ids == [["new"]]
        assert c.query(vectors=vectors[:40], k=1, include=[]).ids[1:] == [
            [f"id{i}"] for i in range(1, 40)
        ]


def test_the_fast_query_result_equals_the_dataclass() -> None:
    distances = np.zeros((1, 2), np.float32)
    made = query_result([["a", "b"]], distances, [["x", None]], [[{"k": 1}, None]], None)
    assert made == QueryResult(
        ids=[["a", "b"]], distances=distances, documents=[["x", None]],
        metadatas=[[{"k": 1}, None]],
    )  # fmt: skip
    assert {f.name for f in dataclasses.fields(QueryResult)} == set(vars(made))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.ids = []  # type: ignore[misc]


def test_evaluate_on_the_queries_the_index_recorded(db: Database) -> None:
    spec = {"kind": "hnsw", "m": 8, "sample_rate": 1.0, "sample_per_minute": 10_000}
    collection = db.create_collection(
        "r", dimension=8, metric="l2", embedder=None, model=MODEL, index=spec
    )
    rows = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    collection.add([str(i) for i in range(600)], vectors=rows, model=MODEL)
    collection.optimize()
    with pytest.raises(InvalidArgumentError, match="recorded no queries yet"):
        collection.evaluate("recorded")
    with pytest.raises(InvalidArgumentError, match="queries must be vectors, 'recorded' or None"):
        collection.evaluate("everything")
    for query in rows[:20] + 0.1:
        collection.query(vectors=query, k=5, include=[])
    collection.query(vectors=rows[0], k=5, where={"missing": 1})  # filtered: not recorded
    report = collection.evaluate("recorded", k=5)
    assert (report.source, report.queries, report.k) == ("recorded queries", 20, 5)
    assert 0.0 <= report.recall <= 1.0
    assert collection.clear_recorded_queries() == 20
    with pytest.raises(InvalidArgumentError, match="recorded no queries yet"):
        collection.evaluate("recorded")
    assert collection.index_status().live_recall is None
    assert collection.clear_recorded_queries() == 0
