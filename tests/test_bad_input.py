"""The bad-input catalogue (issue 15, defects 2, 9, 10 and 15), on every transport.

Each hostile call must raise its named :class:`~latentdb.LatentDBError` subclass and
write nothing (records, collections and aliases as before); each case that must work
(huge or tiny cosine vectors, ``$in`` of 100,000 values) must give the right answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from latentdb import (
    Collection,
    Database,
    FilterError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidMetadataError,
    InvalidVectorError,
    LatentDBError,
    ModelMismatchError,
    ModelRequiredError,
)
from latentdb.query._where import MAX_CONDITIONS, MAX_DEPTH

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

pytestmark = pytest.mark.transports

DIM = 8
ROWS = 12
ONE = np.ones(DIM, dtype=np.float32)

Call = Callable[[Database, Collection], Any]


def rows(n: int = ROWS, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.fixture
def seeded(db: Database) -> tuple[Database, Collection]:
    """A cosine collection "c" of 12 records (ids "0".."11", metadata i/tag, documents)
    and an alias "a" of it."""
    collection = db.create_collection("c", dimension=DIM, embedder=None, model=MODEL)
    collection.add(
        [str(i) for i in range(ROWS)],
        vectors=rows(),
        documents=[f"word{i} common" for i in range(ROWS)],
        metadatas=[{"i": i, "tag": "ab"[i % 2]} for i in range(ROWS)],
        model=MODEL,
    )
    db.create_alias("a", "c")
    return db, collection


def stored(db: Database, collection: Collection) -> tuple[Any, ...]:
    """Everything a call could have written."""
    everything = collection.get(include=["vectors", "documents", "metadatas"])
    assert everything.vectors is not None
    return (
        db.list_collections(),
        db.list_aliases(),
        collection.count(),
        everything.ids,
        everything.vectors.tobytes(),
        everything.documents,
        everything.metadatas,
    )


def nested(depth: int, operator: str = "$and") -> dict[str, Any]:
    """A where filter with ``depth`` levels of ``operator`` around {"i": 1}."""
    where: dict[str, Any] = {"i": 1}
    for _ in range(depth):
        where = {operator: [where]} if operator != "$not" else {"$not": where}
    return where


def nested_document(depth: int) -> dict[str, Any]:
    where: dict[str, Any] = {"$contains": "word1"}
    for _ in range(depth):
        where = {"$or": [where]}
    return where


def query(**kwargs: Any) -> Call:
    return lambda db, c: c.query(vectors=ONE, **kwargs)


def get(**kwargs: Any) -> Call:
    return lambda db, c: c.get(**kwargs)


def delete(**kwargs: Any) -> Call:
    return lambda db, c: c.delete(**kwargs)


def add(ids: Any = "new", **kwargs: Any) -> Call:
    kwargs.setdefault("vectors", ONE)
    kwargs.setdefault("model", MODEL)
    return lambda db, c: c.add(ids, **kwargs)


def upsert(ids: Any = "0", **kwargs: Any) -> Call:
    kwargs.setdefault("vectors", ONE)
    kwargs.setdefault("model", MODEL)
    return lambda db, c: c.upsert(ids, **kwargs)


def create(**kwargs: Any) -> Call:
    kwargs.setdefault("dimension", DIM)
    kwargs.setdefault("embedder", None)
    kwargs.setdefault("model", MODEL)
    return lambda db, c: db.create_collection("new", **kwargs)


def scroll(**kwargs: Any) -> Call:
    return lambda db, c: list(c.scroll(**kwargs))


SURROGATE = "\ud800"

# (case, call, the error it must raise); grouped by the defect of issue 15.
CASES: list[tuple[str, Call, type[LatentDBError]]] = [
    # 2: vectors that cannot be normalized
    ("cosine-zero", add(vectors=np.zeros(DIM)), InvalidVectorError),
    ("cosine-zero-in-batch", add(["x", "y"], vectors=[ONE, np.zeros(DIM)]), InvalidVectorError),
    ("nan-vector", add(vectors=[np.nan] * DIM), InvalidVectorError),
    ("inf-vector", upsert(vectors=[np.inf] * DIM), InvalidVectorError),
    ("query-zero", lambda db, c: c.query(vectors=np.zeros(DIM)), InvalidVectorError),
    # 9: filters
    ("and-too-deep-get", get(where=nested(MAX_DEPTH + 1)), FilterError),
    ("and-500-deep-get", get(where=nested(500)), FilterError),
    ("or-too-deep-delete", delete(where=nested(MAX_DEPTH + 1, "$or")), FilterError),
    ("not-too-deep-query", query(where=nested(MAX_DEPTH + 1, "$not")), FilterError),
    ("and-500-deep-query", query(where=nested(500)), FilterError),
    ("and-too-deep-scroll", scroll(where=nested(MAX_DEPTH + 1)), FilterError),
    ("document-too-deep", get(where_document=nested_document(MAX_DEPTH + 1)), FilterError),
    (
        "too-many-conditions",
        get(where={"$or": [{"i": i} for i in range(MAX_CONDITIONS + 1)]}),
        FilterError,
    ),
    ("match-quote-get", get(where_document={"$match": '"abc'}), FilterError),
    ("match-star-delete", delete(where_document={"$match": "*"}), FilterError),
    ("match-column-query", query(where_document={"$match": "col:x"}), FilterError),
    ("match-quote-query", query(where_document={"$match": '"abc'}), FilterError),
    ("match-star-scroll", scroll(where_document={"$match": "*"}), FilterError),
    ("in-not-a-list", get(where={"i": {"$in": 3}}), FilterError),
    ("in-of-dicts", delete(where={"i": {"$in": [{}]}}), FilterError),
    # 10: every argument's type and range
    ("surrogate-id", add(SURROGATE), InvalidIdError),
    ("surrogate-id-upsert", upsert(["ok", "x" + SURROGATE], vectors=rows(2)), InvalidIdError),
    ("surrogate-id-get", get(ids=[SURROGATE]), InvalidIdError),
    ("surrogate-id-delete", delete(ids=[SURROGATE]), InvalidIdError),
    ("surrogate-metadata-value", add(metadatas=[{"k": SURROGATE}]), InvalidMetadataError),
    ("surrogate-metadata-key", upsert(metadatas=[{SURROGATE: 1}]), InvalidMetadataError),
    ("surrogate-document", add(documents=[SURROGATE]), InvalidArgumentError),
    (
        "surrogate-update",
        lambda db, c: c.update("0", documents=["a" + SURROGATE]),
        InvalidArgumentError,
    ),
    ("surrogate-where-value", get(where={"tag": SURROGATE}), FilterError),
    ("surrogate-where-key", delete(where={SURROGATE: 1}), FilterError),
    ("surrogate-in", query(where={"tag": {"$in": ["a", SURROGATE]}}), FilterError),
    ("surrogate-contains", get(where_document={"$contains": SURROGATE}), FilterError),
    ("surrogate-collection", lambda db, c: db.get_collection(SURROGATE), InvalidArgumentError),
    ("surrogate-model", create(model=SURROGATE), InvalidArgumentError),
    ("limit-2**63", get(limit=2**63), InvalidArgumentError),
    ("offset-2**63", get(offset=2**63), InvalidArgumentError),
    ("limit-negative", get(limit=-1), InvalidArgumentError),
    ("limit-bool", get(limit=True), InvalidArgumentError),
    ("limit-float", get(limit=2.0), InvalidArgumentError),
    ("batch-2**63", scroll(batch=2**63), InvalidArgumentError),
    ("batch-zero", scroll(batch=0), InvalidArgumentError),
    ("include-unhashable", get(include=[["a"]]), InvalidArgumentError),
    ("include-unhashable-query", query(include=[["a"]]), InvalidArgumentError),
    ("include-unknown", query(include=["ids"]), InvalidArgumentError),
    ("include-number", get(include=5), InvalidArgumentError),
    ("params-list", query(params=[1]), InvalidArgumentError),
    ("params-huge", query(params={"ef": 10**30}), InvalidArgumentError),
    ("params-nan", query(params={"ef": float("nan")}), InvalidArgumentError),
    ("k-10**30", query(k=10**30), InvalidArgumentError),
    ("k-zero", query(k=0), InvalidArgumentError),
    ("k-bool", query(k=True), InvalidArgumentError),
    ("k-float", query(k=3.0), InvalidArgumentError),
    ("exact-int", query(exact=1), InvalidArgumentError),
    ("explain-string", query(explain="yes"), InvalidArgumentError),
    ("texts-numbers", lambda db, c: c.query(texts=[1, 2]), InvalidArgumentError),
    ("evaluate-k-10**30", lambda db, c: c.evaluate(k=10**30), InvalidArgumentError),
    ("evaluate-sample-zero", lambda db, c: c.evaluate(sample=0), InvalidArgumentError),
    ("analyze-k-huge", lambda db, c: c.analyze(k=10**30), InvalidArgumentError),
    ("recall-nan", lambda db, c: c.set_recall_target(float("nan")), InvalidArgumentError),
    ("recall-bool", lambda db, c: c.set_recall_target(True), InvalidArgumentError),
    (
        "weights-nan",
        lambda db, c: c.query(texts="x", hybrid=True, hybrid_weights=(float("nan"), 1)),
        InvalidArgumentError,
    ),
    ("ids-number", add(5), InvalidIdError),
    ("ids-empty-string", add([""]), InvalidIdError),
    ("ids-duplicate", add(["x", "x"], vectors=rows(2)), InvalidArgumentError),
    ("metadata-nan", add(metadatas=[{"x": float("nan")}]), InvalidMetadataError),
    ("metadata-int-2**64", add(metadatas=[{"x": 2**64}]), InvalidMetadataError),
    ("metadata-nested", upsert(metadatas=[{"x": {"y": 1}}]), InvalidMetadataError),
    ("documents-number", add(documents=[5]), InvalidArgumentError),
    ("model-list", add(model=["external"]), InvalidArgumentError),
    # issue 16: vectors of unknown or another model never enter a collection that
    # requires their model named (the default), whatever else the call carries
    ("model-missing", add(model=None), ModelRequiredError),
    ("model-missing-upsert", upsert(["0", "new"], vectors=rows(2), model=None), ModelRequiredError),
    ("model-missing-update", lambda db, c: c.update("0", vectors=ONE), ModelRequiredError),
    ("model-other", add(["x", "y"], vectors=rows(2), model="other/model"), ModelMismatchError),
    ("model-other-update", lambda db, c: c.update("0", vectors=ONE, model="x"), ModelMismatchError),
    ("model-missing-at-create", create(model=None), InvalidArgumentError),
    ("require-model-string", create(require_model="yes"), InvalidArgumentError),
    ("require-model-none", create(require_model=None, model=None), InvalidArgumentError),
    ("progress-number", add(progress=5), InvalidArgumentError),
    ("vectors-strings", add(vectors=["a"] * DIM), InvalidVectorError),
    ("vectors-ragged", add(["x", "y"], vectors=[[1.0] * DIM, [1.0]]), InvalidVectorError),
    ("embedder-list", create(embedder=["x"]), InvalidArgumentError),
    ("metric-list", create(metric=["cosine"]), InvalidArgumentError),
    ("dimension-huge", create(dimension=10**12), InvalidArgumentError),
    ("dimension-bool", create(dimension=True), InvalidArgumentError),
    ("dimension-float", create(dimension=8.0), InvalidArgumentError),
    ("recall-target-2", create(recall_target=2), InvalidArgumentError),
    ("reduce-huge", create(reduce=10**12), InvalidArgumentError),
    ("name-dict", lambda db, c: db.create_collection({}, dimension=DIM), InvalidArgumentError),
    ("get-collection-dict", lambda db, c: db.get_collection({}), InvalidArgumentError),
    ("delete-collection-int", lambda db, c: db.delete_collection(5), InvalidArgumentError),
    ("create-alias-dict", lambda db, c: db.create_alias("x", {}), InvalidArgumentError),
    ("switch-alias-dict", lambda db, c: db.switch_alias({}, "c"), InvalidArgumentError),
    ("delete-alias-list", lambda db, c: db.delete_alias([]), InvalidArgumentError),
    ("migrate-dict", lambda db, c: db.migrate({}), InvalidArgumentError),
    ("migrate-embedder-int", lambda db, c: db.migrate("c", embedder=5), InvalidArgumentError),
    (
        "migrate-background-string",
        lambda db, c: db.migrate("c", reduce=4, background="no"),
        InvalidArgumentError,
    ),
    ("map-sample-2", lambda db, c: c.map(sample=2), InvalidArgumentError),
    ("map-method-list", lambda db, c: c.map(method=["pca"]), InvalidArgumentError),
    # 15: index settings
    ("index-m-10**12", create(index={"kind": "hnsw", "m": 10**12}), InvalidArgumentError),
    ("index-m-1", create(index={"kind": "hnsw", "m": 1}), InvalidArgumentError),
    ("index-m-bool", create(index={"kind": "hnsw", "m": True}), InvalidArgumentError),
    ("index-ef-construction", create(index={"ef_construction": 10**6}), InvalidArgumentError),
    ("index-nlist-zero", create(index={"kind": "ivf", "nlist": 0}), InvalidArgumentError),
    ("index-nlist-huge", create(index={"kind": "ivf", "nlist": 10**9}), InvalidArgumentError),
    ("index-nlist-string", create(index={"kind": "ivf", "nlist": "8"}), InvalidArgumentError),
    (
        "index-pq-bytes-huge",
        create(index={"kind": "ivf-pq", "pq_bytes": 10**5}),
        InvalidArgumentError,
    ),
    ("index-seal-rows-1", create(index={"seal_rows": 1}), InvalidArgumentError),
    ("index-seal-rows-huge", create(index={"seal_rows": 10**12}), InvalidArgumentError),
    ("index-unknown-field", create(index={"M": 16}), InvalidArgumentError),
    ("index-unknown-kind", create(index="hnsw2"), InvalidArgumentError),
    ("index-number", create(index=5), InvalidArgumentError),
]


@pytest.mark.parametrize(("call", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_its_error_and_writes_nothing(
    seeded: tuple[Database, Collection], call: Call, error: type[LatentDBError]
) -> None:
    db, collection = seeded
    before = stored(db, collection)
    with pytest.raises(error):
        call(db, collection)
    assert stored(db, collection) == before


def test_cosine_vectors_of_any_finite_scale_are_stored_as_unit_vectors(
    seeded: tuple[Database, Collection],
) -> None:
    """Defect 2: [1e20] * 8 was stored as zeros (its squared norm overflows float32) and a
    1e-23 vector refused as all zeros (its squared norm underflows)."""
    _, collection = seeded
    direction = np.array([1, -2, 3, -4, 5, -6, 7, -8], dtype=np.float64)
    unit = direction / np.linalg.norm(direction)
    scales = {"huge": 1e20, "tiny": 1e-23, "float64-huge": 1e300, "float64-tiny": 1e-300}
    for name, scale in scales.items():
        given = direction * scale
        collection.add(
            name,
            vectors=given if name.startswith("float64") else given.astype(np.float32),
            model=MODEL,
        )
    got = collection.get(list(scales), include=["vectors"])
    assert got.ids == list(scales)
    assert got.vectors is not None
    np.testing.assert_allclose(got.vectors, np.tile(unit, (4, 1)), atol=1e-6)
    for scale in (1e20, 1e-23):
        hits = collection.query(vectors=(direction * scale).astype(np.float32), k=4)
        assert sorted(hits.ids[0]) == sorted(scales)
        assert hits.distances is not None
        np.testing.assert_allclose(hits.distances[0], 0.0, atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_unnormalized_vectors_whose_distances_would_overflow_are_refused(
    db: Database, metric: str
) -> None:
    """In an l2 or ip space, [1e20] * 8 was accepted and every distance to it was inf.
    Rows up to a quarter of float32's range are kept, and their distances are finite."""
    collection = db.create_collection("u", dimension=DIM, metric=metric, embedder=None, model=MODEL)
    collection.add(["big"], vectors=np.full(DIM, 1e18, dtype=np.float32), model=MODEL)
    with pytest.raises(InvalidVectorError, match="squared norm"):
        collection.add(["huge", "fine"], vectors=[np.full(DIM, 1e20), ONE], model=MODEL)
    with pytest.raises(InvalidVectorError, match="squared norm"):
        collection.query(vectors=np.full(DIM, 1e20, dtype=np.float32), k=1)
    assert collection.get().ids == ["big"]
    hits = collection.query(vectors=np.full(DIM, -1e18, dtype=np.float32), k=1, exact=True)
    assert hits.distances is not None and np.isfinite(hits.distances).all()


@pytest.mark.parametrize("size", [1_000, 100_000])
def test_in_and_nin_of_many_values_work_in_every_method(
    seeded: tuple[Database, Collection], size: int
) -> None:
    """Defect 9: get() and delete() failed with "Expression tree is too large" from about
    1,000 values, while query() took them."""
    _, collection = seeded
    odd = [i for i in range(ROWS) if i % 2]
    values = odd + list(range(10_000, 10_000 + size - len(odd)))
    strings = [str(value) for value in values] + ["a"]
    assert len(values) == size

    def ids(where: dict[str, Any]) -> list[int]:  # sharded: shard by shard, not key order
        return sorted(int(i) for i in collection.get(where=where, include=[]).ids)

    assert ids({"i": {"$in": values}}) == odd
    assert ids({"i": {"$nin": values}}) == [i for i in range(ROWS) if i % 2 == 0]
    assert len(collection.get(where={"tag": {"$in": strings}}).ids) == ROWS // 2
    pages = list(collection.scroll(where={"i": {"$in": values}}, batch=4))
    assert sum(len(page.ids) for page in pages) == len(odd)
    hits = collection.query(vectors=ONE, k=ROWS, where={"i": {"$in": values}}, include=[])
    assert sorted(hits.ids[0], key=int) == [str(i) for i in odd]
    hits = collection.query(vectors=ONE, k=ROWS, where={"i": {"$nin": values}}, exact=True)
    assert len(hits.ids[0]) == ROWS - len(odd)
    assert collection.delete(where={"i": {"$in": values}}) == len(odd)
    assert collection.count() == ROWS - len(odd)
    assert collection.delete(where={"i": {"$nin": values}}) == ROWS - len(odd)
    assert collection.count() == 0


def test_filters_at_the_documented_limits_work(seeded: tuple[Database, Collection]) -> None:
    """Defect 9: MAX_DEPTH nested levels and MAX_CONDITIONS conditions still run in SQL
    (get, delete) and in memory (query); one more is a FilterError (the catalogue)."""
    _, collection = seeded
    for operator in ("$and", "$or"):
        where = nested(MAX_DEPTH, operator)
        assert collection.get(where=where, include=[]).ids == ["1"]
        assert collection.query(vectors=ONE, where=where, include=[]).ids == [["1"]]
    assert collection.get(where=nested(MAX_DEPTH, "$not"), include=[]).ids == ["1"]
    found = collection.get(where_document=nested_document(MAX_DEPTH), include=[]).ids
    assert sorted(found) == ["1", "10", "11"]
    wide = {"$or": [{"i": i} for i in range(1, MAX_CONDITIONS + 1)]}
    assert len(collection.get(where=wide, include=[]).ids) == ROWS - 1
    assert len(collection.query(vectors=ONE, k=ROWS, where=wide).ids[0]) == ROWS - 1
    assert collection.delete(where=wide) == ROWS - 1
    assert collection.get(include=[]).ids == ["0"]


def test_match_of_quoted_words_runs(seeded: tuple[Database, Collection]) -> None:
    """Defect 9: FTS5 syntax in $match is refused (the catalogue); quoted, the same
    characters are plain words."""
    _, collection = seeded
    assert collection.get(where_document={"$match": '"col:x"'}).ids == []
    assert collection.get(where_document={"$match": '"word3"'}, include=[]).ids == ["3"]
    hits = collection.query(vectors=ONE, where_document={"$match": "word3 OR word4"}, include=[])
    assert sorted(hits.ids[0]) == ["3", "4"]


def test_index_settings_at_their_bounds_build(db: Database) -> None:
    """Defect 15: the largest settings an IndexSpec accepts are ones faiss builds."""
    collection = db.create_collection(
        "edge",
        dimension=DIM,
        embedder=None,
        index={"kind": "hnsw", "m": 256, "ef_construction": 4096, "seal_rows": 2},
        model=MODEL,
    )
    collection.add([str(i) for i in range(64)], vectors=rows(64), model=MODEL)
    collection.optimize()
    assert collection.index_status().kind == "hnsw"
    assert collection.query(vectors=rows(64)[5], k=1, include=[]).ids == [["5"]]


@pytest.mark.embedded_only
def test_migration_methods_check_their_arguments(seeded: tuple[Database, Collection]) -> None:
    """Defect 10, the Migration that migrate() returns (the client has its own)."""
    db, _ = seeded
    migration = db.migrate("c", reduce=4, background=False)
    for timeout in (-1, "1", float("nan"), True):
        with pytest.raises(InvalidArgumentError, match="timeout"):
            migration.wait(timeout=timeout)  # type: ignore[arg-type]
    for call in (migration.run, migration.start):
        with pytest.raises(InvalidArgumentError, match="progress"):
            call(5)  # type: ignore[arg-type]
    assert migration.wait(timeout=0).state == "done"
