"""Queries read a snapshot and take no lock: they go on while a writer holds the store,
never see a row deleted before they started, see every write acknowledged before they
started (here or through another connection), and return rows' current documents and
metadata (the hot-row cache forgets what writes change)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

import latentdb
from latentdb import IndexSpec
from latentdb.engine import EmbeddedCollection, _collection
from latentdb.engine._rows import _ROW_OVERHEAD, RowCache
from latentdb.index import _segments

MODEL = "test/vectors"
DIMENSION = 8


def make(db: latentdb.Database, rows: int = 400, *, seal_rows: int = 10_000) -> EmbeddedCollection:
    collection = db.create_collection(
        "c", dimension=DIMENSION, metric="l2", embedder=None, model=MODEL,
        index=IndexSpec(kind="hnsw", seal_rows=seal_rows),
    )  # fmt: skip
    vectors = np.random.default_rng(0).normal(size=(rows, DIMENSION))
    collection.add(
        [f"r{i}" for i in range(rows)], vectors=vectors, model=MODEL,
        documents=[f"doc {i}" for i in range(rows)], metadatas=[{"n": i} for i in range(rows)],
    )  # fmt: skip
    assert isinstance(collection, EmbeddedCollection)
    return collection


def answered_while_locked(db: latentdb.Database, call: Callable[[], object]) -> object:
    """``call``'s answer, run in a thread while this one holds the store's lock (as a
    writer does for its whole transaction); fails if it waited for the lock."""
    store = db.store  # type: ignore[attr-defined]
    out: list[object] = []
    with store.lock:
        thread = threading.Thread(target=lambda: out.append(call()))
        thread.start()
        thread.join(30)
        finished = not thread.is_alive()
    thread.join()
    assert finished, "the query waited for the writer's lock"
    return out[0]


def test_filtered_queries_do_not_wait_for_a_writer(db: latentdb.Database) -> None:
    """Once a filter's columns are built, a query filtered on metadata runs on the
    snapshot too, and a write's changes reach the next one."""
    collection = make(db)
    collection.optimize()
    query = np.random.default_rng(2).normal(size=DIMENSION)
    where = {"n": {"$lt": 100}}
    expected = collection.query(vectors=query, k=5, where=where, exact=True)
    assert collection.query(vectors=query, k=5, where=where).ids == expected.ids  # columns
    result = answered_while_locked(
        db, lambda: collection.query(vectors=query, k=5, where=where, include=["metadatas"])
    )
    assert result.ids == expected.ids  # type: ignore[attr-defined]
    assert all(m["n"] < 100 for m in result.metadatas[0])  # type: ignore[attr-defined]
    first = expected.ids[0][0]
    collection.update([first], metadatas=[{"n": 500}])  # out of the filter now
    after = answered_while_locked(db, lambda: collection.query(vectors=query, k=5, where=where))
    assert first not in after.ids[0]  # type: ignore[attr-defined]
    assert after.ids[0][:4] == expected.ids[0][1:]  # type: ignore[attr-defined]


def test_queries_do_not_wait_for_a_writer(db: latentdb.Database) -> None:
    collection = make(db)
    query = np.random.default_rng(1).normal(size=DIMENSION)
    expected = collection.query(vectors=query, k=5)
    collection.optimize()
    for include in ([], ["distances", "documents", "metadatas"]):
        result = answered_while_locked(
            db, lambda include=include: collection.query(vectors=query, k=5, include=include)
        )
        assert result.ids == expected.ids  # type: ignore[attr-defined]
    result = answered_while_locked(db, lambda: collection.query(vectors=query, k=5))
    assert result.documents == expected.documents  # type: ignore[attr-defined]
    assert result.metadatas == expected.metadatas  # type: ignore[attr-defined]


def test_a_query_sees_every_acknowledged_write_and_nothing_deleted(
    db: latentdb.Database,
) -> None:
    collection = make(db, 300, seal_rows=200)  # sealing in the background meanwhile
    rng = np.random.default_rng(2)
    deleted: set[str] = set()
    written: list[str] = []
    failures: list[BaseException] = []
    done = threading.Event()
    lock = threading.Lock()

    def write() -> None:
        try:
            for batch in range(40):
                ids = [f"w{batch}-{i}" for i in range(10)]
                collection.add(ids, vectors=rng.normal(size=(10, DIMENSION)), model=MODEL)
                gone = [f"r{batch * 5 + i}" for i in range(5)]
                collection.delete(gone)
                with lock:
                    written.extend(ids)
                    deleted.update(gone)
        except BaseException as error:
            failures.append(error)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set():
                with lock:
                    gone_before, seen_before = set(deleted), list(written)
                ids = collection.query(vectors=np.zeros(DIMENSION), k=1000, include=[]).ids[0]
                returned = set(ids)
                assert not returned & gone_before, sorted(returned & gone_before)[:5]
                assert set(seen_before) <= returned
                assert len(ids) == len(returned)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert collection.count() == 300 + len(written) - len(deleted)


def test_writes_through_another_connection_are_seen(
    open_db: Callable[[], latentdb.Database],
) -> None:
    here = open_db()
    collection = make(here)
    collection.optimize()
    query = np.full(DIMENSION, 9.0)
    assert "far" not in collection.query(vectors=query, k=1, include=[]).ids[0]
    there = open_db()  # its own SQLite connection, as another process has
    other = there.get_collection("c")
    other.add(["far"], vectors=query[None, :], model=MODEL, metadatas=[{"n": -1}])
    assert collection.query(vectors=query, k=1, include=[]).ids[0] == ["far"]
    other.update(["far"], metadatas=[{"n": -2}], documents=["changed"])
    result = collection.query(vectors=query, k=1)
    assert result.metadatas == [[{"n": -2}]] and result.documents == [["changed"]]
    other.delete(["far"])
    assert "far" not in collection.query(vectors=query, k=3, include=[]).ids[0]


def test_documents_and_metadata_are_current_and_the_caller_s_own(db: latentdb.Database) -> None:
    collection = make(db)
    query = np.random.default_rng(3).normal(size=DIMENSION)
    first = collection.query(vectors=query, k=3)
    hit = first.ids[0][0]
    first.metadatas[0][0]["n"] = "changed by the caller"  # type: ignore[index]
    again = collection.query(vectors=query, k=3)
    assert again.metadatas == [collection.get(first.ids[0]).metadatas]
    assert again.metadatas[0][0] != {"n": "changed by the caller"}
    collection.update([hit], metadatas=[{"n": 1234}], documents=["updated"])
    updated = collection.query(vectors=query, k=3)
    assert updated.metadatas[0][0] == {"n": 1234} and updated.documents[0][0] == "updated"
    collection.upsert([hit], vectors=query[None, :], model=MODEL, documents=["upserted"])
    upserted = collection.query(vectors=query, k=1)
    assert upserted.ids == [[hit]] and upserted.documents == [["upserted"]]
    assert upserted.metadatas == [[None]]


def test_the_row_cache_keeps_no_row_read_before_a_write_and_stays_in_budget() -> None:
    cache = RowCache(budget=_ROW_OVERHEAD * 10 + 100)
    epoch = cache.epoch
    cache.drop([1])  # a write lands while a query reads row 1 from SQLite
    assert cache.fill({1: ("old", '{"n": 1}')}, epoch) == {1: ("old", {"n": 1})}
    assert cache.lookup([1]) == ({}, [1])  # the possibly stale row was not kept
    cache.fill({key: ("d", None) for key in range(30)}, cache.epoch)
    assert 0 < len(cache) <= 10 and cache.lookup([29])[0]  # the newest stay
    found, missing = cache.lookup([0, 29])
    assert missing == [0] and found == {29: ("d", None)}
    cache.fill({40: (None, '{"a": [1]}')}, cache.epoch)
    mine = cache.lookup([40])[0][40][1]
    assert mine == {"a": [1]}
    mine["b"] = 2  # type: ignore[index]
    assert cache.lookup([40])[0][40][1] == {"a": [1]}
    cache.clear()
    assert len(cache) == 0


def test_a_process_adopts_the_segments_another_one_built(
    open_db: Callable[[], latentdb.Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_segments, "_SEAL_QUIET_SECONDS", 0.05)
    monkeypatch.setattr(_segments, "DELTA_SEAL_ROWS", 200)
    here, there = open_db(), open_db()  # two connections, as two server workers have
    builder = make(here, 1000, seal_rows=400)
    builder.optimize()
    follower = there.get_collection("c")
    query = np.random.default_rng(4).normal(size=DIMENSION)
    follower.query(vectors=query, k=5)  # loads the optimized segment
    # The follower seals nothing itself here (either connection may claim a due seal).
    follower._state.index.sealing.quiet_seconds = 60.0  # type: ignore[attr-defined]
    vectors = np.random.default_rng(5).normal(size=(300, DIMENSION))
    builder.add([f"n{i}" for i in range(300)], vectors=vectors, model=MODEL)
    index = builder._state.index  # type: ignore[attr-defined]
    for _ in range(200):  # the delta is sealed in the background once the writes pause
        index.wait()
        if index.status().segments == 2:
            break
        time.sleep(0.05)
    assert index.status().segments == 2
    found = follower.query(vectors=vectors[:3], k=1, include=[]).ids
    assert found == [["n0"], ["n1"], ["n2"]]
    status = follower.index_status()
    assert (status.segments, status.indexed + status.pending) == (2, 1300)
    assert status.pending < 300  # the delta's rows come from its segment, not the store
    names = {name for name, _ in follower._state.index.sealed}  # type: ignore[attr-defined]
    assert names == {name for name, _ in index.sealed}


def test_adopting_another_process_segment_keeps_the_writes_made_since(
    open_db: Callable[[], latentdb.Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower reconciles the builder's new delta against its own caught-up rows,
    not the store's: rows deleted or replaced after the delta was built stay so, on both
    sides, and every row is held once."""
    monkeypatch.setattr(_segments, "_SEAL_QUIET_SECONDS", 0.05)
    monkeypatch.setattr(_segments, "DELTA_SEAL_ROWS", 200)
    here, there = open_db(), open_db()
    builder = make(here, 1000, seal_rows=400)
    builder.optimize()
    follower = there.get_collection("c")
    follower.query(vectors=np.zeros(DIMENSION), k=5)
    follower._state.index.sealing.quiet_seconds = 60.0  # type: ignore[attr-defined]
    vectors = np.random.default_rng(5).normal(size=(300, DIMENSION))
    builder.add([f"n{i}" for i in range(300)], vectors=vectors, model=MODEL)
    index = builder._state.index  # type: ignore[attr-defined]
    for _ in range(200):
        index.wait()
        if index.status().segments == 2:
            break
        time.sleep(0.05)
    assert index.status().segments == 2
    moved = -vectors[1] * 10
    builder.delete(ids=["n0"])  # after the delta holds n0...
    follower.upsert(["n1"], vectors=moved, model=MODEL)  # ...and n1, written elsewhere
    follower.delete(ids=["r5"])  # a row of the optimized segment
    for collection in (follower, builder):
        assert collection.get(ids=["n0", "r5"]).ids == []
        assert collection.query(vectors=moved, k=1, include=[]).ids == [["n1"]]
        assert collection.query(vectors=vectors[2], k=1, include=[]).ids == [["n2"]]
        exact = collection.query(vectors=vectors[:50], k=3, include=[], exact=True).ids
        assert (
            collection.query(vectors=vectors[:50], k=3, include=[], params={"ef": 400}).ids == exact
        )
        status = collection.index_status()
        assert status.indexed + status.pending == 1298 == collection.count()
    names = {name for name, _ in follower._state.index.sealed}  # type: ignore[attr-defined]
    assert names == {name for name, _ in index.sealed}


def test_a_write_waits_while_the_index_is_far_behind(
    open_db: Callable[[], latentdb.Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backpressure: with more rows waiting for a graph than the engine allows and a seal
    due, a write of vectors waits (here until the stall's end, as the seal check is far
    off); other writes and a short backlog do not wait."""
    monkeypatch.setattr(_segments, "_SEAL_QUIET_SECONDS", 30.0)
    monkeypatch.setattr(_segments, "DELTA_SEAL_ROWS", 100)
    collection = make(open_db(), 1000, seal_rows=400)
    collection.optimize()
    monkeypatch.setattr(_collection, "WRITE_BACKLOG_ROWS", 150)
    monkeypatch.setattr(_collection, "WRITE_STALL_SECONDS", 1.0)
    rng = np.random.default_rng(6)
    started = time.monotonic()
    collection.add(
        [f"a{i}" for i in range(120)], vectors=rng.normal(size=(120, DIMENSION)), model=MODEL
    )
    collection.add(
        [f"b{i}" for i in range(60)], vectors=rng.normal(size=(60, DIMENSION)), model=MODEL
    )
    assert time.monotonic() - started < 0.4  # 120 rows behind before the second: no wait
    index = collection._state.index  # type: ignore[attr-defined]
    assert index.backlog() == 180 and index.sealing.pending
    started = time.monotonic()
    collection.update(["a0"], metadatas=[{"n": -1}])  # no vectors: nothing to index
    assert time.monotonic() - started < 1.0
    collection.add(["c0"], vectors=rng.normal(size=DIMENSION), model=MODEL)
    assert time.monotonic() - started >= 1.0  # waited the stall out, then wrote
    assert collection.count() == 1181
    index.sealing.stop()
