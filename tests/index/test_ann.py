"""ANN collections: each index kind, sealing, tombstones, save/load, recovery, tuning.

Runs on 3,000 real MiniLM vectors of the PyPI data set (tests/data/, enough that 300 rows are
held out for tuning, then added to the index) and its held-out test queries.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import latentdb
from latentdb import Collection, IndexSpec, InvalidArgumentError, LatentDBWarning
from latentdb.index._flat import FlatIndex
from latentdb.index._sealed import SealedSegment
from tests._data import pypi_minilm

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

ROWS = 3000
QUERIES = 100


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return pypi_minilm(ROWS, QUERIES)


def true_neighbours(train: np.ndarray, queries: np.ndarray, alive: np.ndarray, k: int = 10):
    scores = queries @ train[alive].T
    return alive[np.argsort(-scores, axis=1)[:, :k]]


def recall(found: list[list[str]], truth: np.ndarray) -> float:
    hits = [
        len({int(i) for i in row} & set(want.tolist()))
        for row, want in zip(found, truth, strict=True)
    ]
    return sum(hits) / truth.size


def build(folder: Path, kind: str | IndexSpec, train: np.ndarray, **options: Any) -> Collection:
    db = latentdb.connect(folder)
    collection = db.create_collection(
        "c", dimension=384, embedder=None, model=MODEL, index=kind, **options
    )
    collection.add([str(i) for i in range(train.shape[0])], vectors=train, model=MODEL)
    collection.optimize()
    return collection


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        IndexSpec(kind="hnsw"),
        IndexSpec(kind="hnsw-sq8"),
        IndexSpec(kind="ivf"),
        IndexSpec(kind="ivf-pq", pq_bytes=16),  # 48 sub-quantizers train 3x longer
    ],
    ids=lambda spec: spec.kind,
)
def test_each_kind_meets_the_recall_target_on_held_out_queries(
    tmp_path: Path, data: Any, spec: IndexSpec
) -> None:
    train, test = data
    kind = spec.kind
    collection = build(tmp_path, spec, train)
    status = collection.index_status()
    assert status.kind == kind and status.segments == 1
    # Tuned on 300 rows held out of the build, which then joined the segment.
    assert (status.indexed, status.pending) == (ROWS, 0)
    assert status.tuned_recall is not None and status.tuned_recall >= 0.95
    result = collection.query(vectors=test, k=10, include=["distances"])
    truth = true_neighbours(train, test, np.arange(ROWS))
    assert recall(result.ids, truth) >= 0.93  # tuned on 300 rows, measured on 100 others
    exact = collection.query(vectors=test, k=10, exact=True)
    assert recall(exact.ids, truth) > 0.999
    report = collection.evaluate(test)
    assert report.kind == kind and 0.9 <= report.recall <= 1.0 and report.qps > 0
    assert report.source == "given queries"
    collection._database.close()


@pytest.fixture(scope="module")
def hnsw_folder(tmp_path_factory: pytest.TempPathFactory, data: Any) -> Path:
    """One optimized hnsw collection on disk; tests copy it."""
    folder = tmp_path_factory.mktemp("hnsw")
    build(folder, "hnsw", data[0])._database.close()
    return folder


@pytest.fixture
def hnsw(tmp_path: Path, hnsw_folder: Path, databases: list[latentdb.Database]) -> Collection:
    shutil.copytree(hnsw_folder, tmp_path / "db")
    databases.append(latentdb.connect(tmp_path / "db"))
    return databases[-1].get_collection("c")


def test_reopen_loads_the_saved_index_without_rebuilding(
    hnsw: Collection, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_build(**_: Any) -> None:
        raise AssertionError("the saved index must be loaded, not rebuilt")

    monkeypatch.setattr(SealedSegment, "build", no_build)
    status = hnsw.index_status()
    assert (status.kind, status.indexed, status.pending) == ("hnsw", ROWS, 0)
    assert status.params["ef"] >= 10
    train, test = data
    truth = true_neighbours(train, test, np.arange(ROWS))
    assert recall(hnsw.query(vectors=test, k=10).ids, truth) >= 0.93


def test_rows_written_after_the_save_are_replayed(
    hnsw: Collection, data: Any, databases: list[latentdb.Database]
) -> None:
    train, _ = data
    hnsw.add(["new"], vectors=-train[0], model=MODEL)
    hnsw.update(["5"], vectors=-train[1], model=MODEL)
    hnsw.delete(["7"])
    folder = hnsw._database.path
    hnsw._database.close()
    databases.append(latentdb.connect(folder))
    again = databases[-1].get_collection("c")
    assert again.query(vectors=-train[0], k=1).ids == [["new"]]
    assert again.query(vectors=-train[1], k=1).ids == [["5"]]
    assert "7" not in again.query(vectors=train[7], k=5).ids[0]
    assert again.query(vectors=train[1], k=1).ids[0] != ["5"]  # the old vector is gone
    status = again.index_status()
    assert status.deleted == 2  # "5" replaced, "7" deleted: masked in the segment


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_damaged_index_files_are_rebuilt_with_a_warning(
    hnsw: Collection, data: Any, databases: list[latentdb.Database], damage: str
) -> None:
    folder = hnsw._database.path
    hnsw._database.close()
    (segment,) = [p for p in (folder / "indexes").glob("*/seg-*")]
    index_file = segment / "index.faiss"
    if damage == "garbage":
        index_file.write_bytes(b"not a faiss index" * 100)
    elif damage == "truncated":
        index_file.write_bytes(index_file.read_bytes()[:5000])
    else:
        shutil.rmtree(segment)
    databases.append(latentdb.connect(folder))
    collection = databases[-1].get_collection("c")
    train, test = data
    with pytest.warns(LatentDBWarning, match="rebuilding"):
        result = collection.query(vectors=test, k=10)
    truth = true_neighbours(train, test, np.arange(ROWS))
    assert recall(result.ids, truth) > 0.999  # exact until rebuilt: never wrong
    collection.optimize()
    assert collection.index_status().kind == "hnsw"


def test_deleted_and_replaced_rows_are_never_returned(hnsw: Collection, data: Any) -> None:
    train, test = data
    rng = np.random.default_rng(3)
    doomed = rng.choice(ROWS, size=ROWS * 3 // 10, replace=False)
    hnsw.delete([str(i) for i in doomed])
    fresh = rng.choice(np.setdiff1d(np.arange(ROWS), doomed), size=ROWS // 10, replace=False)
    hnsw.upsert([str(i) for i in fresh], vectors=train[fresh][:, ::-1].copy(), model=MODEL)
    alive = np.setdiff1d(np.arange(ROWS), np.concatenate([doomed, fresh]))
    result = hnsw.query(vectors=test, k=10)
    assert all(len(row) == 10 for row in result.ids)
    returned = {int(i) for row in result.ids for i in row}
    assert not returned & set(doomed.tolist())
    truth = true_neighbours(train, test, alive)
    # Replaced rows now hold reversed vectors, far from every query: truth ignores them.
    assert recall(result.ids, truth) >= 0.93
    status = hnsw.index_status()
    # Masked in the segment; each replaced row's new version waits in the growing one.
    assert (status.deleted, status.pending) == (len(doomed) + len(fresh), len(fresh))
    assert status.indexed + status.pending == hnsw.count()
    hnsw.optimize()  # compaction: a rebuild without the dead rows
    assert hnsw.index_status().deleted == 0
    assert not {int(i) for row in hnsw.query(vectors=test, k=10).ids for i in row} & set(
        doomed.tolist()
    )


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25)
@given(
    deletes=st.lists(st.integers(0, ROWS - 1), min_size=1, max_size=200),
    row=st.integers(0, QUERIES - 1),
)
def test_no_deleted_id_is_ever_returned(
    hnsw: Collection, data: Any, deletes: list[int], row: int
) -> None:
    hnsw.delete([str(i) for i in deletes])
    gone = {str(i) for i in deletes}
    for query in (data[1][row], data[0][deletes[0]]):  # a test query, a deleted row itself
        found = hnsw.query(vectors=query, k=10, include=[]).ids[0]
        assert not gone & set(found)
        assert len(found) == min(10, hnsw.count())


def test_query_params_and_exact(hnsw: Collection, data: Any) -> None:
    train, test = data
    truth = true_neighbours(train, test, np.arange(ROWS))
    narrow = recall(hnsw.query(vectors=test, k=10, params={"ef": 10}).ids, truth)
    wide = recall(hnsw.query(vectors=test, k=10, params={"ef": 512}).ids, truth)
    assert wide >= narrow and wide > 0.99
    with pytest.raises(InvalidArgumentError, match="nprobe"):
        hnsw.query(vectors=test[0], params={"nprobe": 4})
    with pytest.raises(InvalidArgumentError, match="ef"):
        hnsw.query(vectors=test[0], params={"ef": 0})


def test_filtered_query_on_an_ann_collection_is_exact(
    tmp_path: Path, data: Any, databases: list[latentdb.Database]
) -> None:
    train, test = data
    databases.append(latentdb.connect(tmp_path))
    collection = databases[-1].create_collection(
        "f", dimension=384, embedder=None, index="hnsw", model=MODEL
    )
    collection.add(
        [str(i) for i in range(ROWS)],
        vectors=train,
        metadatas=[{"b": i % 10} for i in range(ROWS)],
        model=MODEL,
    )
    collection.optimize()
    result = collection.query(vectors=test, k=10, where={"b": 3})
    truth = true_neighbours(train, test, np.arange(3, ROWS, 10))
    assert recall(result.ids, truth) == 1.0


def test_recall_target_is_stored_and_retunes(
    hnsw: Collection, data: Any, databases: list[latentdb.Database]
) -> None:
    low = hnsw.index_status()
    hnsw.set_recall_target(0.99)
    high = hnsw.index_status()
    assert high.recall_target == 0.99 and hnsw.recall_target == 0.99
    assert high.params["ef"] >= low.params["ef"]
    assert high.tuned_recall is not None and high.tuned_recall >= 0.99
    folder = hnsw._database.path
    hnsw._database.close()
    databases.append(latentdb.connect(folder))
    assert databases[-1].get_collection("c").recall_target == 0.99
    with pytest.raises(InvalidArgumentError, match="recall_target"):
        databases[-1].get_collection("c").set_recall_target(1.5)


def test_auto_stays_exact_while_small(tmp_path: Path, data: Any) -> None:
    collection = build(tmp_path, "auto", data[0][:500])
    status = collection.index_status()
    assert (status.kind, status.spec, status.pending, status.segments) == ("flat", "auto", 500, 0)
    collection._database.close()


def test_bad_index_settings(tmp_path: Path, databases: list[latentdb.Database]) -> None:
    databases.append(latentdb.connect(tmp_path))
    db = databases[-1]
    with pytest.raises(InvalidArgumentError, match="index kind"):
        db.create_collection("x", dimension=4, embedder=None, index="annoy", model=MODEL)
    with pytest.raises(InvalidArgumentError, match="recall_target"):
        db.create_collection("x", dimension=4, embedder=None, recall_target=0, model=MODEL)
    with pytest.raises(InvalidArgumentError, match="m must"):
        db.create_collection(
            "x", dimension=4, embedder=None, index=IndexSpec(kind="hnsw", m=1), model=MODEL
        )
    assert db.list_collections() == []


def test_evaluate_says_where_its_sampled_queries_come_from(hnsw: Collection, data: Any) -> None:
    # After optimize() every row is in the graph: sampled rows read high, and say so.
    report = hnsw.evaluate(sample=100)
    assert (report.source, report.queries) == ("indexed rows", 100)
    train, _ = data
    hnsw.add([f"new{i}" for i in range(60)], vectors=train[:60, ::-1].copy(), model=MODEL)
    report = hnsw.evaluate(sample=100)  # fresh rows, outside the graph: a fair test
    assert (report.source, report.queries) == ("held-out rows", 60)
    assert 0.5 <= report.recall <= 1.0


def added_not_optimized(
    folder: Path, databases: list[latentdb.Database], train: np.ndarray
) -> Collection:
    """An hnsw collection holding the train rows, its index not loaded yet."""
    databases.append(latentdb.connect(folder))
    collection = databases[-1].create_collection(
        "c", dimension=384, embedder=None, index="hnsw", model=MODEL
    )
    collection.add([str(i) for i in range(ROWS)], vectors=train, model=MODEL)
    return collection


def test_a_build_failing_after_it_freed_the_growing_rows_reloads_from_the_store(
    tmp_path: Path, data: Any, monkeypatch: pytest.MonkeyPatch, databases: list[latentdb.Database]
) -> None:
    train, test = data
    collection = added_not_optimized(tmp_path, databases, train)
    collection.query(vectors=test[0], k=1)  # loads the rows into the growing segment
    calls = {"consumed": 0}
    real_build = SealedSegment.build

    def failing_build(**kwargs: Any) -> SealedSegment:
        calls["consumed"] += kwargs["consumed"] is not None  # the bulk-load path
        for chunk in np.array_split(kwargs["rows"], 2):
            kwargs["consumed"](chunk)  # the growing rows' memory is handed back ...
        raise MemoryError("no room for the graph")  # ... and then the build fails

    monkeypatch.setattr(SealedSegment, "build", failing_build)
    with pytest.raises(MemoryError):
        collection.optimize()
    assert calls["consumed"] == 1
    monkeypatch.setattr(SealedSegment, "build", real_build)
    # Loaded again from the store: exact answers, nothing zeroed.
    truth = true_neighbours(train, test, np.arange(ROWS))
    assert recall(collection.query(vectors=test, k=10, exact=True).ids, truth) > 0.999
    collection.optimize()
    assert collection.index_status().indexed == ROWS


def test_a_bulk_load_is_built_from_the_store_without_loading_it_first(
    tmp_path: Path, data: Any, monkeypatch: pytest.MonkeyPatch, databases: list[latentdb.Database]
) -> None:
    train, test = data
    collection = added_not_optimized(tmp_path, databases, train)
    loads: list[int] = []
    real_upsert = FlatIndex.upsert

    def counting_upsert(self: FlatIndex, keys: Any, vectors: Any, **kwargs: Any) -> None:
        loads.append(len(keys))
        real_upsert(self, keys, vectors, **kwargs)

    monkeypatch.setattr(FlatIndex, "upsert", counting_upsert)
    collection.optimize()
    assert max(loads) == 300  # only the tuning sample ever sat in the growing segment
    status = collection.index_status()
    assert (status.kind, status.indexed, status.pending, status.segments) == ("hnsw", ROWS, 0, 1)
    truth = true_neighbours(train, test, np.arange(ROWS))
    assert recall(collection.query(vectors=test, k=10).ids, truth) >= 0.93
    collection.add(["late"], vectors=train[:1], model=MODEL)  # the index is live: writes reach it
    assert collection.query(vectors=train[0], k=2).ids[0][:2] in (["0", "late"], ["late", "0"])


def test_auto_keeps_its_index_when_deletes_shrink_it(
    tmp_path: Path, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("latentdb.index._spec.AUTO_MIN_ROWS", 1000)
    train, test = data
    collection = build(tmp_path, "auto", train[:1200])
    assert collection.index_status().kind == "hnsw"
    collection.delete([str(i) for i in range(600)])  # 600 left: under the threshold
    collection.optimize()  # still compacts the graph's tombstones
    status = collection.index_status()
    assert (status.kind, status.indexed, status.deleted, status.pending) == ("hnsw", 600, 0, 0)
    truth = true_neighbours(train, test, np.arange(600, 1200))
    assert recall(collection.query(vectors=test, k=10).ids, truth) >= 0.9
    collection._database.close()
