"""Bulk embedding with Ray Data into a sharded collection: resumable, JSONL and Parquet."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import latentdb
from latentdb import InvalidArgumentError, ModelMismatchError, ModelRequiredError, distributed
from latentdb.cli import app
from latentdb.distributed import ShardedCollection, ShardedDatabase, ingest
from latentdb.embed import MINILM_MODEL
from tests._data import pypi_minilm, pypi_texts

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

ROWS = 150
runner = CliRunner()


@pytest.mark.slow  # loads MiniLM in a Ray worker
def test_ingest_embeds_a_jsonl_corpus_and_resumes_by_id(
    sharded: ShardedDatabase, tmp_path: Path
) -> None:
    records = pypi_texts(ROWS)
    corpus = tmp_path / "corpus.jsonl.gz"
    with gzip.open(corpus, "wt") as out:
        out.writelines(json.dumps(record) + "\n" for record in records)
    train, _ = pypi_minilm(ROWS, 1)  # the same texts, embedded by the same model
    collection = sharded.create_collection("pypi", shards=3)
    # A run that stopped after 60 records: those are stored, not embedded again.
    collection.add(
        [str(i) for i in range(60)],
        vectors=train[:60],
        documents=[record["text"] for record in records[:60]],
        metadatas=[{"name": record["name"]} for record in records[:60]],
        model=MINILM_MODEL,
    )
    seen: list[int] = []
    report = ingest(collection, corpus, metadata_fields=["name"], workers=1, progress=seen.append)
    assert (report.read, report.skipped, report.written) == (ROWS, 60, ROWS - 60)
    assert seen and seen[-1] == ROWS and seen == sorted(seen)
    assert collection.count() == ROWS
    got = collection.get(["7", "100"], include=["documents", "metadatas", "vectors"])
    assert got.documents == [records[7]["text"], records[100]["text"]]
    assert got.metadatas == [{"name": records[7]["name"]}, {"name": records[100]["name"]}]
    # The workers' vector of text 100 is the model's (the file keeps it as float16).
    assert got.vectors is not None
    assert float(got.vectors[1] @ train[100]) > 0.999
    assert collection.query(vectors=train[100], k=1).ids == [["100"]]


def test_ingest_adds_ready_vectors_from_parquet(sharded: ShardedDatabase, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    table = pa.table(
        {
            "key": [f"k{i}" for i in range(40)],
            "embedding": list(vectors),
            "group": [i % 3 for i in range(40)],
        }
    )
    pq.write_table(table, tmp_path / "vectors.parquet")
    collection = sharded.create_collection(
        "v", dimension=8, metric="l2", embedder=None, model=MODEL
    )
    arguments: dict[str, Any] = {
        "id_field": "key",
        "text_field": None,
        "vector_field": "embedding",
        "metadata_fields": ["group"],
        "workers": 1,
    }
    # Ready vectors are vectors of some model: named, as add(vectors=) names them.
    with pytest.raises(ModelRequiredError, match=f"model='{MODEL}'"):
        ingest(collection, tmp_path / "vectors.parquet", **arguments)
    with pytest.raises(ModelMismatchError, match="other/model"):
        ingest(collection, tmp_path / "vectors.parquet", model="other/model", **arguments)
    assert collection.count() == 0
    report = ingest(collection, tmp_path / "vectors.parquet", model=MODEL, **arguments)
    assert (report.read, report.written) == (40, 40)
    got = collection.get(["k5"], include=["vectors", "metadatas", "documents"])
    assert got.vectors is not None
    np.testing.assert_array_equal(got.vectors[0], vectors[5])
    assert got.metadatas == [{"group": 2}] and got.documents == [None]


def test_ingest_refuses_what_it_cannot_read_and_writes_nothing(
    sharded: ShardedDatabase, tmp_path: Path, ray_cluster: Any
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "body": "text"}\n')
    collection = sharded.create_collection("c", embedder="minilm")
    with pytest.raises(InvalidArgumentError, match="no column 'text'; its columns are id, body"):
        ingest(collection, corpus, workers=1)
    with pytest.raises(InvalidArgumentError, match="JSONL"):
        ingest(collection, tmp_path / "corpus.csv")
    with pytest.raises(InvalidArgumentError, match="no such file"):
        ingest(collection, tmp_path / "missing.jsonl")
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        ingest(collection, corpus, batch_size=0)
    with latentdb.connect(tmp_path / "plain") as plain:
        one = plain.create_collection("c", dimension=4, embedder=None, model=MODEL)
        with pytest.raises(InvalidArgumentError, match="sharded collection"):
            ingest(one, corpus)
    assert collection.count() == 0


@pytest.mark.slow  # loads MiniLM in a Ray worker
def test_cli_ingest_ray_embeds_into_a_sharded_database(ray_cluster: Any, tmp_path: Path) -> None:
    records = pypi_texts(40)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(record) + "\n" for record in records))
    folder = tmp_path / "db"
    arguments = ["ingest", str(folder), "pypi", str(corpus), "--ray", "--shards", "3"]
    result = runner.invoke(app, [*arguments, "--metadata", "name", "--limit", "30"])
    assert result.exit_code == 0, result.output
    assert "30 records read, 0 already stored, 30 added" in result.output
    with distributed.connect(path=folder) as database:
        collection = database.get_collection("pypi")
        assert isinstance(collection, ShardedCollection) and collection.shards == 3
        assert collection.count() == 30
        assert collection.get(["3"]).metadatas == [{"name": records[3]["name"]}]


@pytest.mark.slow  # loads MiniLM in this process
def test_cli_ingest_without_ray_fills_an_embedded_database(tmp_path: Path) -> None:
    records = pypi_texts(30)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(record) + "\n" for record in records))
    folder = tmp_path / "db"
    first = runner.invoke(app, ["ingest", str(folder), "pypi", str(corpus), "--limit", "12"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["ingest", str(folder), "pypi", str(corpus), "--batch-size", "8"])
    assert again.exit_code == 0, again.output
    assert "30 records read, 12 already stored, 18 added" in again.output
    with latentdb.connect(folder) as database:
        assert database.get_collection("pypi").count() == 30
    wrong = runner.invoke(app, ["ingest", str(folder), "pypi", str(corpus), "--text-field", "x"])
    assert wrong.exit_code != 0 and "has no column 'x'" in wrong.output
