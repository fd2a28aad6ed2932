"""Document filters (substring and FTS5 full text), hybrid search, and scrolling."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentdb
from latentdb import Collection, Database, FilterError, InvalidArgumentError

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

DOCUMENTS = [
    "How to parse JSON files in Python",
    "Reading CSV data with pandas",
    "A JSON schema validator",
    "Plotting charts with matplotlib",
    "Fast numerical arrays: numpy",
    None,
]


@pytest.fixture
def docs(db: Database) -> Collection:
    collection = db.create_collection("d", dimension=4, embedder=None, model=MODEL)
    collection.add(
        [f"r{i}" for i in range(len(DOCUMENTS))],
        vectors=np.eye(6, 4, dtype=np.float32) + 0.1,
        documents=DOCUMENTS,
        metadatas=[{"n": i} for i in range(len(DOCUMENTS))],
        model=MODEL,
    )
    return collection


def ids(collection: Collection, **filters: Any) -> list[str]:
    return collection.get(include=[], **filters).ids


@pytest.mark.parametrize(
    ("where_document", "want"),
    [
        ({"$contains": "JSON"}, ["r0", "r2"]),
        ({"$contains": "json"}, []),  # substring match is case-sensitive, like Chroma's
        ({"$not_contains": "JSON"}, ["r1", "r3", "r4", "r5"]),  # r5 has no document
        ({"$match": "json"}, ["r0", "r2"]),  # full text: words, case-folded
        ({"$match": "pars*"}, ["r0"]),
        ({"$match": '"JSON files"'}, ["r0"]),
        ({"$match": "json NOT schema"}, ["r0"]),
        ({"$or": [{"$match": "numpy"}, {"$contains": "CSV"}]}, ["r1", "r4"]),
        ({"$and": [{"$match": "json"}, {"$not_contains": "schema"}]}, ["r0"]),
    ],
)
def test_document_filters(docs: Collection, where_document: Any, want: list[str]) -> None:
    assert ids(docs, where_document=where_document) == want
    hits = docs.query(vectors=np.ones(4), k=10, where_document=where_document, include=[])
    assert sorted(hits.ids[0]) == want


def test_document_and_metadata_filters_combine(docs: Collection) -> None:
    where_document = {"$match": "json"}
    assert ids(docs, where={"n": {"$gt": 0}}, where_document=where_document) == ["r2"]
    result = docs.query(
        vectors=np.ones(4), where={"n": 0}, where_document=where_document, explain=True
    )
    assert result.ids == [["r0"]]
    assert result.plan is not None and result.plan.filter_source == "sql"
    assert docs.delete(where_document={"$contains": "CSV"}) == 1
    assert ids(docs, where_document={"$match": "pandas"}) == []


def test_full_text_index_follows_writes(docs: Collection) -> None:
    docs.update(["r3"], documents=["Parsing JSON quickly"])
    docs.upsert(["r2"], vectors=np.ones(4), documents=["A YAML validator"], model=MODEL)
    docs.delete(["r0"])
    docs.add(["new"], vectors=np.ones(4), documents=["json lines"], model=MODEL)
    assert ids(docs, where_document={"$match": "json"}) == ["r3", "new"]
    assert ids(docs, where_document={"$match": "yaml"}) == ["r2"]


@pytest.mark.parametrize(
    ("where_document", "message"),
    [
        ({"$match": "json AND"}, r"\$match"),
        ({"$regex": "x"}, r"\$regex"),
        ({"$contains": ""}, "non-empty string"),
        ({"$contains": 3}, "non-empty string"),
        ({"$and": {"$contains": "a"}}, "list"),
        ({"$contains": "a", "$match": "b"}, "exactly one operator"),
        ("json", "dict"),
    ],
)
def test_malformed_document_filters(docs: Collection, where_document: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        docs.get(where_document=where_document)
    with pytest.raises(FilterError, match=message):
        docs.query(vectors=np.ones(4), where_document=where_document)


def test_a_database_from_before_full_text_gets_its_index(tmp_path: Path) -> None:
    with latentdb.connect(tmp_path) as db:
        db.create_collection("d", dimension=2, embedder=None, model=MODEL).add(
            ["a", "b"], vectors=np.eye(2), documents=["alpha beta", "gamma"], model=MODEL
        )
    connection = sqlite3.connect(tmp_path / "latentdb.sqlite3")
    for trigger in ("insert", "delete", "update_old", "update_new"):
        connection.execute(f"DROP TRIGGER records_fts_{trigger}")
    connection.execute("DROP TABLE records_fts")
    # ...and what migration 4 (vector packs) added after it.
    connection.execute("DROP INDEX records_by_pack")
    connection.execute("ALTER TABLE records DROP COLUMN pack")
    connection.execute("ALTER TABLE records DROP COLUMN pack_row")
    connection.execute("DROP TABLE packs")
    connection.execute("PRAGMA user_version = 2")
    connection.commit()
    connection.close()
    with latentdb.connect(tmp_path) as db:  # migration 3 builds the index of old rows
        collection = db.get_collection("d")
        assert collection.get(where_document={"$match": "beta"}).ids == ["a"]
        np.testing.assert_array_equal(collection.get(include=["vectors"]).vectors, np.eye(2))


# -- hybrid search ----------------------------------------------------------------------


@pytest.fixture
def texts(db: Database, hashing_embedder: Any) -> Collection:
    collection = db.create_collection("h", embedder="test-hashing")
    collection.add(
        ["cats", "dogs", "zebra", "code"],
        documents=[
            "cats sleep on warm sofas",
            "dogs chase balls in parks",
            "the zebra crossing xq17 regulation",
            "python code for parsing",
        ],
    )
    return collection


def test_hybrid_fuses_text_and_vector_rankings(texts: Collection) -> None:
    question = "xq17"  # a rare token: full text finds it, the vector alone may not
    text_only = texts.query(texts=question, k=2, hybrid=True, hybrid_weights=(0.0, 1.0))
    assert text_only.ids[0][0] == "zebra"
    fused = texts.query(texts=question, k=4, hybrid=True)
    assert fused.scores is not None and fused.distances is not None
    assert list(fused.scores[0]) == sorted(fused.scores[0], reverse=True)
    assert fused.ids[0][0] == "zebra"  # first in one ranking, and in the other's top 4
    plain = texts.query(texts=question, k=4)
    vector_only = texts.query(texts=question, k=4, hybrid=True, hybrid_weights=(1.0, 0.0))
    assert vector_only.ids == plain.ids  # no text weight: the vector ranking
    by_id = dict(zip(plain.ids[0], plain.distances[0], strict=True))  # type: ignore[index]
    for record_id, distance in zip(fused.ids[0], fused.distances[0], strict=True):
        assert distance == pytest.approx(by_id[record_id], abs=1e-5)  # vector distances
    filtered = texts.query(
        texts="parsing code xq17", k=4, hybrid=True, where_document={"$not_contains": "xq17"}
    )
    assert "zebra" not in filtered.ids[0] and filtered.ids[0][0] == "code"


def test_hybrid_needs_text_and_sane_weights(texts: Collection) -> None:
    with pytest.raises(InvalidArgumentError, match="needs texts="):
        texts.query(vectors=np.ones(16), hybrid=True)
    for weights, message in (((0, 0), "both be 0"), ((1, -1), ">= 0"), ((1,), "two numbers")):
        with pytest.raises(InvalidArgumentError, match=message):
            texts.query(texts="cats", hybrid=True, hybrid_weights=weights)  # type: ignore[arg-type]
    assert texts.query(texts="!!!", k=2, hybrid=True).ids[0]  # no words: the vector side


# -- scrolling --------------------------------------------------------------------------


def test_scroll_pages_through_everything_in_order_while_others_write(db: Database) -> None:
    collection = db.create_collection("s", dimension=2, embedder=None, model=MODEL)
    collection.add(
        [f"{i:04d}" for i in range(2500)],
        vectors=np.ones((2500, 2)),
        metadatas=[{"even": i % 2 == 0} for i in range(2500)],
        model=MODEL,
    )
    seen: list[str] = []
    for page in collection.scroll(batch=1000, include=["metadatas"]):
        assert len(page.ids) <= 1000 and page.metadatas is not None
        if not seen:
            collection.add(
                ["late"], vectors=np.ones(2), model=MODEL
            )  # after the first page: comes last
            collection.delete(["0001"])  # already seen: no effect on the pages
        seen += page.ids
    assert seen == [f"{i:04d}" for i in range(2500)] + ["late"]
    evens = [i for page in collection.scroll(batch=300, where={"even": True}) for i in page.ids]
    assert evens == [f"{i:04d}" for i in range(0, 2500, 2)]
    with pytest.raises(InvalidArgumentError, match="batch"):
        next(collection.scroll(batch=0))
