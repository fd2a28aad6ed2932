"""Ingest in this process: corpus files read into records and written into a collection."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import latentdb
from latentdb import EmbedderError, InvalidArgumentError, ModelRequiredError
from latentdb.ingest import (
    JSON_SUFFIXES,
    PARQUET_SUFFIXES,
    Records,
    check_arguments,
    check_columns,
    corpus_files,
    corpus_kind,
    read_corpus,
    records_from_columns,
    write_records,
)

from .conftest import HashingEmbedder

MODEL = "test/vectors"


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as out:
            out.write(text)
    else:
        path.write_text(text)
    return path


def _animals(count: int, start: int = 0) -> list[dict[str, object]]:
    kinds = ["cat", "dog", "fish"]
    return [
        {"id": i, "text": f"a {kinds[i % 3]} named number {i}", "kind": kinds[i % 3]}
        for i in range(start, start + count)
    ]


def test_corpus_kind_by_suffix_or_folder(tmp_path: Path) -> None:
    for suffix in JSON_SUFFIXES:
        assert corpus_kind(f"corpus{suffix.upper()}") == "json"
    for suffix in PARQUET_SUFFIXES:
        assert corpus_kind(Path(f"corpus{suffix}")) == "parquet"
    assert corpus_kind(tmp_path) == "parquet"  # a folder of Parquet files
    with pytest.raises(InvalidArgumentError, match=r"corpus\.csv: ingest reads JSONL \(\.jsonl"):
        corpus_kind("corpus.csv")


def test_corpus_files_checks_kinds_then_that_they_exist(tmp_path: Path) -> None:
    first = _jsonl(tmp_path / "a.jsonl", _animals(1))
    second = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": ["x"]}), second)
    assert corpus_files(first) == [str(first)]
    assert corpus_files([str(second), first]) == [str(second), str(first)]
    assert corpus_files("s3://bucket/corpus.parquet") == ["s3://bucket/corpus.parquet"]
    with pytest.raises(InvalidArgumentError, match="at least one file"):
        corpus_files([])
    with pytest.raises(InvalidArgumentError, match="JSONL"):  # the kind, before existence
        corpus_files([first, tmp_path / "missing.csv"])
    with pytest.raises(InvalidArgumentError, match=r"no such file: .*missing\.jsonl"):
        corpus_files([first, tmp_path / "missing.jsonl"])


def test_check_columns_names_what_is_missing_and_what_is_there() -> None:
    check_columns(["id", "text"], ["id", None, "text"], source="c.jsonl")
    with pytest.raises(
        InvalidArgumentError, match=r"^c\.jsonl has no column 'x', 'y'; its columns are id, text$"
    ):
        check_columns(["id", "text"], ["id", "x", None, "y"], source="c.jsonl")


def test_records_from_numpy_columns_are_plain_python() -> None:
    """Ray Data hands numpy arrays: ids become str, numpy scalars Python values, and a
    missing value (None or NaN) is no document and no metadata field."""
    columns = {
        "id": np.array([1, 2, 3]),
        "text": np.array(["one", None, "three"], dtype=object),
        "vector": np.eye(3, dtype=np.float64),
        "score": np.array([0.5, np.nan, 1.5]),
        "tag": np.array(["a", "b", None], dtype=object),
    }
    records = records_from_columns(columns, vector_field="vector", metadata_fields=["score", "tag"])
    assert records.ids == ["1", "2", "3"] and len(records) == 3
    assert records.documents == ["one", None, "three"]
    assert records.metadatas == [{"score": 0.5, "tag": "a"}, {"tag": "b"}, {"score": 1.5}]
    assert type(records.metadatas[0]["score"]) is float  # type: ignore[index]
    vectors = records.vector_array()
    assert vectors.dtype == np.float32 and vectors.shape == (3, 3)
    np.testing.assert_array_equal(vectors, np.eye(3))
    plain = records_from_columns({"id": ["a"], "text": ["x"]})
    assert (plain.vectors, plain.metadatas) == (None, None)
    with pytest.raises(InvalidArgumentError, match="without a vector column"):
        plain.vector_array()
    only_ids = records_from_columns(
        {"id": ["a"], "n": [None]}, text_field=None, metadata_fields=["n"]
    )
    assert only_ids.documents is None and only_ids.metadatas == [None]


def test_records_without_stored_ids_and_their_texts() -> None:
    records = Records(
        ids=["a", "b", "c"],
        documents=["x", None, "z"],
        vectors=[[1.0], [2.0], [3.0]],
        metadatas=[{"n": 1}, None, {"n": 3}],
        text_field="body",
    )
    fresh = records.without({"b"})
    assert fresh == Records(["a", "c"], ["x", "z"], [[1.0], [3.0]], [{"n": 1}, {"n": 3}], "body")
    assert fresh.texts() == ["x", "z"]
    assert not records.without(["a", "b", "c"])
    with pytest.raises(EmbedderError, match="record 'b' has no 'body' to embed"):
        records.texts()


def test_read_corpus_batches_files_of_both_kinds_up_to_the_limit(tmp_path: Path) -> None:
    first = _jsonl(tmp_path / "a.jsonl.gz", _animals(5))
    second = tmp_path / "b.parquet"
    pq.write_table(pa.Table.from_pylist(_animals(4, start=5)), second)
    batches = list(read_corpus([first, second], metadata_fields=["kind"], batch_size=2))
    assert [len(batch) for batch in batches] == [2, 2, 1, 2, 2]  # batches within a file
    ids = [record_id for batch in batches for record_id in batch.ids]
    assert ids == [str(i) for i in range(9)]
    assert batches[0].documents == ["a cat named number 0", "a dog named number 1"]
    assert batches[0].metadatas == [{"kind": "cat"}, {"kind": "dog"}]
    limited = list(read_corpus([first, second], batch_size=4, limit=6))
    assert [batch.ids for batch in limited] == [["0", "1", "2", "3"], ["4"], ["5"]]


def test_read_corpus_checks_arguments_at_once_and_columns_per_file(tmp_path: Path) -> None:
    good = _jsonl(tmp_path / "good.jsonl", _animals(2))
    bad = _jsonl(tmp_path / "bad.jsonl", [{"id": "z", "body": "no text column"}])
    with pytest.raises(InvalidArgumentError, match="batch_size must be an integer from 1 to"):
        read_corpus(good, batch_size=0)
    with pytest.raises(InvalidArgumentError, match="limit"):
        read_corpus(good, limit=0)
    with pytest.raises(InvalidArgumentError, match="no such file"):
        read_corpus(tmp_path / "missing.jsonl")
    arguments = {"text_field": "text", "vector_field": None, "batch_size": 1, "limit": None}
    with pytest.raises(InvalidArgumentError, match="a collection with an embedder"):
        check_arguments(**arguments, embedder=False)  # type: ignore[arg-type]
    check_arguments(**{**arguments, "vector_field": "v"}, embedder=False)  # type: ignore[arg-type]
    batches = read_corpus([good, bad])  # the first file is read before the second fails
    assert next(batches).ids == ["0", "1"]
    with pytest.raises(InvalidArgumentError, match=r"bad\.jsonl has no column 'text'; its columns"):
        next(batches)


def test_read_and_write_embed_and_resume_by_id(
    tmp_path: Path, hashing_embedder: HashingEmbedder
) -> None:
    corpus = _jsonl(tmp_path / "animals.jsonl", _animals(12))
    with latentdb.connect(tmp_path / "db") as db:
        collection = db.create_collection("animals", embedder="test-hashing")
        first = write_records(collection, read_corpus(corpus, metadata_fields=["kind"], limit=5))
        assert (first.read, first.skipped, first.written) == (5, 0, 5)
        seen: list[int] = []
        batches = read_corpus(corpus, metadata_fields=["kind"], batch_size=4)
        again = write_records(collection, batches, progress=seen.append)
        assert (again.read, again.skipped, again.written) == (12, 5, 7)
        assert seen == [4, 8, 12] and again.seconds > 0 and again.rate > 0
        assert collection.count() == 12
        got = collection.get(["7"], include=["documents", "metadatas"])
        assert got.documents == ["a dog named number 7"] and got.metadatas == [{"kind": "dog"}]
        assert collection.query(texts="a fish named number 11", k=1).ids == [["11"]]
    # The first run's one batch, the second's two batches with new ids (not 0-3), a query.
    assert hashing_embedder.calls == 1 + 2 + 1


def test_a_record_without_text_is_refused_before_its_batch_is_written(
    tmp_path: Path, hashing_embedder: HashingEmbedder
) -> None:
    corpus = _jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "fine"}, {"id": "b", "text": None}])
    with latentdb.connect(tmp_path / "db") as db:
        collection = db.create_collection("c", embedder="test-hashing")
        with pytest.raises(EmbedderError, match="record 'b' has no 'text' to embed"):
            write_records(collection, read_corpus(corpus))
        assert collection.count() == 0
        with pytest.raises(InvalidArgumentError, match="give text_field= and a collection"):
            read_corpus(corpus, text_field=None)


@pytest.mark.transports
def test_ready_vectors_are_written_on_every_transport(
    db: latentdb.Database, tmp_path: Path
) -> None:
    """write_records uses the public get and add alone, so it serves any Collection."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(10, 4)).astype(np.float32)
    corpus = tmp_path / "vectors.parquet"
    table = {"key": [f"k{i}" for i in range(10)], "embedding": list(vectors), "n": list(range(10))}
    pq.write_table(pa.table(table), corpus)
    collection = db.create_collection("v", dimension=4, metric="l2", embedder=None, model=MODEL)
    collection.add(["k0"], vectors=vectors[:1], model=MODEL)
    fields = {"id_field": "key", "text_field": None, "vector_field": "embedding"}
    with pytest.raises(ModelRequiredError):
        write_records(collection, read_corpus(corpus, **fields))
    assert collection.count() == 1
    batches = read_corpus(corpus, metadata_fields=["n"], batch_size=3, **fields)
    report = write_records(collection, batches, model=MODEL)
    assert (report.read, report.skipped, report.written) == (10, 1, 9)
    got = collection.get(["k4"], include=["vectors", "metadatas", "documents"])
    assert got.vectors is not None
    np.testing.assert_array_equal(got.vectors[0], vectors[4])
    assert got.metadatas == [{"n": 4}] and got.documents == [None]


def test_write_records_takes_records_from_anywhere(tmp_path: Path) -> None:
    with latentdb.connect(tmp_path / "db") as db:
        collection = db.create_collection("v", dimension=2, embedder=None, model=MODEL)
        batches = [
            Records(["a", "b"], vectors=[[1, 0], [0, 1]]),
            Records(["b", "c"], vectors=[[0, 1], [1, 1]]),
        ]
        report = write_records(collection, batches, model=MODEL)
        assert (report.read, report.skipped, report.written) == (4, 1, 3)
        assert sorted(collection.get().ids) == ["a", "b", "c"]
