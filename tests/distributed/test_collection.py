"""Sharded collections: routing, the merge against one engine, what sharding changes.

The shared API suite (tests/api, tests/analysis, marked ``transports``) runs on sharded
collections too; these tests cover what only sharding has.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentdb
from latentdb import (
    DimensionMismatchError,
    DuplicateIdError,
    InvalidArgumentError,
    ModelRequiredError,
    RecordNotFoundError,
    distributed,
)
from latentdb.distributed import ShardedCollection, ShardedDatabase, shard_of

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

DIM = 12


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def shard_records(folder: Path) -> list[str]:
    """The ids stored in one shard folder, read by an embedded engine of our own (the
    host has it open too: SQLite's WAL lets both)."""
    with latentdb.connect(folder) as database:
        return database.get_collection("shard").get(include=()).ids


def test_shard_of_is_a_stable_hash_spread_evenly() -> None:
    # Fixed values: the hash must never change, or stored ids would be looked for in
    # the wrong shard (BLAKE2b of the UTF-8 id, little-endian, modulo the shards).
    assert [shard_of(i, 4) for i in ("a", "b", "doc-1", "é")] == [
        int.from_bytes(__import__("hashlib").blake2b(i.encode(), digest_size=8).digest(), "little")
        % 4
        for i in ("a", "b", "doc-1", "é")
    ]
    counts = np.bincount([shard_of(str(i), 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900 and counts.max() < 1100


def test_records_live_in_the_shard_their_id_hashes_to(
    sharded: ShardedDatabase, tmp_path: Path
) -> None:
    collection = sharded.create_collection("c", dimension=DIM, embedder=None, shards=3, model=MODEL)
    ids = [f"id-{i}" for i in range(60)]
    collection.add(ids, vectors=vectors(60), model=MODEL)
    folders = sorted((tmp_path / "sharded" / "shards").glob("*/shard-*-replica-0"))
    assert len(folders) == 3
    for shard, folder in enumerate(folders):
        assert folder.name == f"shard-{shard}-replica-0"
        assert set(shard_records(folder)) == {i for i in ids if shard_of(i, 3) == shard}


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_exact_queries_equal_one_engine_ids_and_distances(
    sharded: ShardedDatabase, tmp_path: Path, metric: str
) -> None:
    rows, queries = vectors(300), vectors(7, seed=1)
    ids = [f"r{i}" for i in range(300)]
    metadatas = [{"i": i, "odd": i % 2 == 1} for i in range(300)]
    documents = [f"document {i}" for i in range(300)]
    one = latentdb.connect(tmp_path / "one")
    single = one.create_collection("c", dimension=DIM, metric=metric, embedder=None, model=MODEL)
    spread = sharded.create_collection(
        "c", dimension=DIM, metric=metric, embedder=None, shards=4, model=MODEL
    )
    for collection in (single, spread):
        for start in range(0, 300, 70):  # several batches, some rows alone in a shard
            stop = start + 70
            collection.add(
                ids[start:stop],
                vectors=rows[start:stop],
                documents=documents[start:stop],
                metadatas=metadatas[start:stop],
                model=MODEL,
            )
        # Two rows of one batch in two shards: each shard normalizes its one row as
        # the single engine normalizes the batch (not by the one-vector path).
        pair = next(
            (f"x{i}", f"x{i + 1}")
            for i in range(99)
            if shard_of(f"x{i}", 4) != shard_of(f"x{i + 1}", 4)
        )
        collection.add(list(pair), vectors=vectors(2, seed=5) * 1e-3 + rows[:2], model=MODEL)
    include = ["distances", "documents", "metadatas", "vectors"]
    for where in (None, {"odd": True}, {"i": {"$lt": 40}}):
        want = single.query(vectors=queries, k=15, where=where, exact=True, include=include)
        got = spread.query(vectors=queries, k=15, where=where, exact=True, include=include)
        assert got.ids == want.ids
        assert got.distances is not None and want.distances is not None
        np.testing.assert_array_equal(got.distances, want.distances)
        assert got.documents == want.documents and got.metadatas == want.metadatas
        assert got.vectors is not None and want.vectors is not None
        for mine, theirs in zip(got.vectors, want.vectors, strict=True):
            np.testing.assert_array_equal(mine, theirs)
    one_query = spread.query(vectors=queries[0], k=3, exact=True, include=[])
    assert one_query.ids == [single.query(vectors=queries[0], k=3, exact=True).ids[0]]
    assert one_query.distances is None and one_query.documents is None
    one.close()


def test_get_and_scroll_go_shard_by_shard_and_page_consistently(
    sharded: ShardedDatabase,
) -> None:
    collection = sharded.create_collection("c", dimension=DIM, embedder=None, shards=3, model=MODEL)
    ids = [str(i) for i in range(50)]
    collection.add(
        ids, vectors=vectors(50), metadatas=[{"even": i % 2 == 0} for i in range(50)], model=MODEL
    )
    order = collection.get(include=[]).ids
    shards = [shard_of(i, 3) for i in order]
    assert sorted(order) == sorted(ids) and shards == sorted(shards)
    for shard in range(3):  # within a shard: insertion order
        mine = [i for i in order if shard_of(i, 3) == shard]
        assert mine == sorted(mine, key=int)
    pages = [collection.get(limit=7, offset=offset, include=[]).ids for offset in range(0, 56, 7)]
    assert [i for page in pages for i in page] == order
    evens = collection.get(where={"even": True}, include=[]).ids
    assert collection.get(where={"even": True}, limit=4, offset=10).ids == evens[10:14]
    scrolled = list(collection.scroll(batch=8, include=["metadatas"]))
    assert [len(page) for page in scrolled] == [8] * 6 + [2]
    assert [i for page in scrolled for i in page.ids] == order
    assert scrolled[0].metadatas is not None and scrolled[0].vectors is None


def test_bad_input_and_conflicts_write_nothing_on_any_shard(sharded: ShardedDatabase) -> None:
    collection = sharded.create_collection("c", dimension=DIM, embedder=None, shards=3, model=MODEL)
    collection.add(["a", "b"], vectors=vectors(2), model=MODEL)
    batch = [str(i) for i in range(30)]
    wide = np.zeros((30, DIM + 1), dtype=np.float32)
    with pytest.raises(DimensionMismatchError, match=f"dimension {DIM}"):
        collection.add(batch, vectors=wide, model=MODEL)
    with pytest.raises(DuplicateIdError, match="'b' is already stored"):
        collection.add([*batch, "b"], vectors=vectors(31), model=MODEL)
    with pytest.raises(RecordNotFoundError, match="'nope'"):
        collection.update(["a", "nope"], metadatas=[{"x": 1}, {"x": 2}])
    assert collection.count() == 2
    assert collection.get(["a"], include=["metadatas"]).metadatas == [None]


def test_hybrid_and_migrate_are_refused_by_name(
    sharded: ShardedDatabase, hashing_embedder: Any
) -> None:
    collection = sharded.create_collection("t", embedder="test-hashing")
    collection.add(["cat"], documents=["the cat sat"])  # embedded here, in the driver
    with pytest.raises(InvalidArgumentError, match="hybrid search is not available"):
        collection.query(texts="cat", hybrid=True)
    with pytest.raises(InvalidArgumentError, match="migrate is not available"):
        sharded.migrate("t", embedder="minilm")
    assert collection.query(texts="a cat", k=1).ids == [["cat"]]


def test_shards_and_replicas_are_checked_and_kept(sharded: ShardedDatabase) -> None:
    for bad in (0, -1, 2.5, True, 5000):
        with pytest.raises(InvalidArgumentError, match="shards"):
            sharded.create_collection("c", dimension=DIM, embedder=None, shards=bad, model=MODEL)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="replicas"):
        sharded.create_collection("c", dimension=DIM, embedder=None, replicas=0, model=MODEL)
    assert sharded.list_collections() == []
    made = sharded.create_collection(
        "c", dimension=DIM, embedder=None, shards=3, replicas=2, model=MODEL
    )
    assert isinstance(made, ShardedCollection) and (made.shards, made.replicas) == (3, 2)
    again = sharded.get_or_create_collection(
        "c", dimension=DIM, embedder=None, shards=5, model=MODEL
    )
    assert isinstance(again, ShardedCollection) and again.shards == 3
    assert "shards=3, replicas=2" in repr(again)


def test_deleting_a_collection_deletes_its_shard_folders(
    sharded: ShardedDatabase, tmp_path: Path
) -> None:
    collection = sharded.create_collection(
        "c", dimension=DIM, embedder=None, replicas=2, model=MODEL
    )
    collection.add(["a"], vectors=vectors(1), model=MODEL)
    shards = tmp_path / "sharded" / "shards"
    assert len(list(shards.glob("*/shard-*"))) == 4
    sharded.delete_collection("c")
    assert list(shards.glob("*/shard-*")) == []
    with pytest.raises(latentdb.CollectionNotFoundError):
        collection.count()


def test_replicas_each_hold_every_write(sharded: ShardedDatabase, tmp_path: Path) -> None:
    collection = sharded.create_collection(
        "c", dimension=DIM, embedder=None, replicas=2, model=MODEL
    )
    collection.add([str(i) for i in range(40)], vectors=vectors(40), model=MODEL)
    collection.delete(["0", "1"])
    collection.upsert(["new"], vectors=vectors(1), model=MODEL)
    folders = sorted((tmp_path / "sharded" / "shards").glob("*/shard-*"))
    assert len(folders) == 4
    for shard in (0, 1):
        first, second = (shard_records(f) for f in folders if f.name.startswith(f"shard-{shard}"))
        assert first == second and "0" not in first
    assert collection.count() == 39


def test_reopening_the_folder_finds_the_collections(ray_cluster: Any, tmp_path: Path) -> None:
    with distributed.connect(path=tmp_path / "db", shards=3) as database:
        collection = database.create_collection("c", dimension=DIM, embedder=None, model=MODEL)
        collection.add(["a", "b", "c"], vectors=vectors(3), model=MODEL)
        database.create_alias("current", "c")
    with distributed.connect(path=tmp_path / "db") as database:
        again = database.get_collection("current")
        assert isinstance(again, ShardedCollection) and again.shards == 3
        assert sorted(again.get(include=[]).ids) == ["a", "b", "c"]


def test_the_driver_requires_the_model_and_an_older_catalog_does_not(
    sharded: ShardedDatabase, tmp_path: Path
) -> None:
    collection = sharded.create_collection("c", dimension=DIM, embedder=None, model=MODEL)
    assert collection.require_model
    with pytest.raises(ModelRequiredError, match=f"model='{MODEL}'"):
        collection.add(["a", "b", "c"], vectors=vectors(3))
    assert collection.count() == 0  # refused before any shard was written to
    collection.add(["a", "b", "c"], vectors=vectors(3), model=MODEL)
    # The shards' own collections take what the driver checked.
    folders = sorted((tmp_path / "sharded" / "shards").glob("*/shard-*"))
    assert len(folders) == 2
    for folder in folders:
        with latentdb.connect(folder) as shard:
            assert not shard.get_collection("shard").require_model
    sharded.close()
    # A catalog written before the setting existed stores none: the collection accepts
    # vectors without a model name, as it did.
    with sqlite3.connect(tmp_path / "sharded" / "catalog" / "latentdb.sqlite3") as catalog:
        (config,) = catalog.execute("SELECT config FROM collections").fetchone()
        old = {k: v for k, v in json.loads(config).items() if k != "require_model"}
        catalog.execute("UPDATE collections SET config = ?", (json.dumps(old),))
    catalog.close()
    with distributed.connect(path=tmp_path / "sharded") as again:
        reopened = again.get_collection("c")
        assert not reopened.require_model
        reopened.add(["d"], vectors=vectors(1, seed=1))
        assert reopened.count() == 4
