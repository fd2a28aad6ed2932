"""Aliases: second names for collections, switched atomically, followed by handles."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import latentdb
from latentdb import (
    CollectionExistsError,
    CollectionNotFoundError,
    Database,
    InvalidArgumentError,
)

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

# Each test that uses db or open_db runs embedded and over HTTP (tests/conftest.py).
pytestmark = pytest.mark.transports

DIM = 8


def two_versions(db: Database, rows: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Collections v1 and v2 with the same vectors under different id prefixes."""
    vectors = np.random.default_rng(3).normal(size=(rows, DIM)).astype(np.float32)
    for name in ("v1", "v2"):
        collection = db.create_collection(name, dimension=DIM, embedder=None, model=MODEL)
        collection.add(
            [f"{name}-{i}" for i in range(rows)],
            vectors=vectors,
            documents=[f"{name} doc {i}" for i in range(rows)],
            model=MODEL,
        )
    return vectors, vectors[:5]


def test_alias_is_a_second_name(db: Database) -> None:
    two_versions(db)
    db.create_alias("live", "v1")
    assert db.list_aliases() == {"live": "v1"}
    assert db.list_collections() == ["v1", "v2"]  # aliases are not collections
    live = db.get_collection("live")
    assert (live.name, live.alias) == ("v1", "live")
    assert live.get(["v1-3"]).documents == ["v1 doc 3"]
    live.add(["new"], vectors=np.ones(DIM), model=MODEL)  # writes go to the target too
    assert db.get_collection("v1").count() == 51
    again = db.get_or_create_collection("live", dimension=DIM, embedder=None, model=MODEL)
    assert again.name == "v1"


def test_alias_names_are_checked(db: Database) -> None:
    two_versions(db)
    db.create_alias("live", "v1")
    with pytest.raises(CollectionExistsError, match="a collection named 'v2'"):
        db.create_alias("v2", "v1")
    with pytest.raises(CollectionExistsError, match="an alias named 'live'"):
        db.create_alias("live", "v2")
    with pytest.raises(CollectionExistsError, match="an alias named 'live'"):
        db.create_collection("live", dimension=DIM, embedder=None, model=MODEL)
    with pytest.raises(CollectionNotFoundError, match="an alias must name a collection"):
        db.create_alias("other", "live")
    with pytest.raises(CollectionNotFoundError, match="'nope'"):
        db.create_alias("other", "nope")
    with pytest.raises(InvalidArgumentError, match="name"):
        db.create_alias("bad name!", "v1")
    with pytest.raises(CollectionNotFoundError, match="no alias named 'ghost'"):
        db.switch_alias("ghost", "v2")
    with pytest.raises(CollectionNotFoundError, match="no alias named 'ghost'"):
        db.delete_alias("ghost")
    with pytest.raises(InvalidArgumentError, match="'live' is an alias"):
        db.delete_collection("live")
    with pytest.raises(InvalidArgumentError, match="target of alias 'live'"):
        db.delete_collection("v1")
    assert db.list_aliases() == {"live": "v1"}  # nothing changed by the refusals
    db.delete_alias("live")
    db.delete_collection("v1")
    with pytest.raises(CollectionNotFoundError):
        db.get_collection("live")


def test_handles_follow_a_switch_here_and_from_another_process(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    with latentdb.connect(folder) as db, latentdb.connect(folder) as other:
        _, queries = two_versions(db)
        db.create_alias("live", "v1")
        live = db.get_collection("live")
        assert live.query(vectors=queries[0], k=1).ids == [["v1-0"]]
        db.switch_alias("live", "v2")
        assert live.query(vectors=queries[0], k=1).ids == [["v2-0"]]
        assert live.name == "v2"
        other.switch_alias("live", "v1")  # another connection: seen on the next call
        assert live.query(vectors=queries[0], k=1).ids == [["v1-0"]]
        other.delete_alias("live")
        with pytest.raises(CollectionNotFoundError, match="alias 'live' was deleted"):
            live.count()


def test_switching_under_concurrent_queries_never_mixes_collections(db: Database) -> None:
    _, queries = two_versions(db, rows=200)
    db.create_alias("live", "v1")
    live = db.get_collection("live")
    seen: list[set[str]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                result = live.query(vectors=queries, k=10)
                prefixes = {record_id.split("-")[0] for row in result.ids for record_id in row}
                documents = {doc.split()[0] for row in result.documents or [] for doc in row}
                seen.append(prefixes | documents)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for round_ in range(40):
        db.switch_alias("live", "v2" if round_ % 2 == 0 else "v1")
        time.sleep(0.005)  # let the readers see this version
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures
    assert seen and all(len(names) == 1 for names in seen)  # ids and documents of one version
    assert {next(iter(names)) for names in seen} == {"v1", "v2"}
    assert live.name == "v1"
