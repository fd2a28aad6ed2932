"""One Database shared by threads: writes and queries at once lose nothing and crash
nothing (each commit is mirrored into the index before another thread touches it)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentdb
from latentdb import Database, IndexSpec

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"


def test_threads_writing_and_querying_one_database(db: Database) -> None:
    writers, batches, rows, dim = 8, 30, 10, 8
    collection = db.create_collection(
        "c",
        dimension=dim,
        metric="l2",
        embedder=None,
        index=IndexSpec(kind="hnsw", seal_rows=300),
        model=MODEL,
    )
    failures: list[BaseException] = []
    written: list[str] = []
    done = threading.Event()

    def write(writer: int) -> None:
        try:
            rng = np.random.default_rng(writer)
            for batch in range(batches):
                ids = [f"w{writer}-{batch}-{i}" for i in range(rows)]
                collection.add(ids, vectors=rng.normal(size=(rows, dim)), model=MODEL)
                if batch % 3 == 0:
                    collection.update(ids[:2], metadatas=[{"b": batch}] * 2)
                written.extend(ids)
        except BaseException as error:
            failures.append(error)

    def read() -> None:
        queries = np.random.default_rng(99).normal(size=(3, dim))
        try:
            while not done.is_set():
                assert len(collection.query(vectors=queries, k=5).ids) == 3
                collection.query(vectors=queries[0], k=5, where={"b": {"$gte": 0}})
        except BaseException as error:
            failures.append(error)

    readers = [threading.Thread(target=read) for _ in range(3)]
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in readers + threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    for thread in readers:
        thread.join()
    assert not failures, failures
    assert collection.count() == len(written) == writers * batches * rows
    collection.optimize()
    status = collection.index_status()
    assert (status.indexed, status.pending) == (len(written), 0)
    found = collection.query(vectors=np.zeros(dim), k=len(written), include=[]).ids[0]
    assert sorted(found) == sorted(written)


def test_a_query_while_the_index_loads_sees_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index loading on first use reads the rows no segment holds into it: a query
    from another thread meanwhile (taking no lock) must not be answered from the index
    before those rows are in (a sharded alias test once got an empty answer so)."""
    vectors = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    with latentdb.connect(tmp_path) as db:
        c = db.create_collection("c", dimension=8, embedder=None, model=MODEL)
        c.add([f"r{i}" for i in range(40)], vectors=vectors, model=MODEL)
    answers: list[list[str]] = []
    with latentdb.connect(tmp_path) as db:
        c = db.get_collection("c")
        store = c._database.store  # type: ignore[attr-defined]
        reading = store.changes_since

        def slow_read(*args: Any, **kwargs: Any) -> Any:
            changes = reading(*args, **kwargs)
            other = threading.Thread(
                target=lambda: answers.append(c.query(vectors=vectors[7], k=1).ids[0])
            )
            other.start()
            other.join(0.3)  # it runs now, while the rows are on their way
            return changes

        monkeypatch.setattr(store, "changes_since", slow_read)
        assert c.query(vectors=vectors[3], k=1).ids == [["r3"]]
        monkeypatch.undo()
        deadline = time.monotonic() + 10
        while not answers and time.monotonic() < deadline:
            time.sleep(0.01)
    assert answers == [["r7"]]
