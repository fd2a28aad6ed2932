"""Snapshots (SearchView): what a query took keeps answering the same, whatever the
index does after (writes, deletes, compaction, builds, optimize)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from latentdb.index import IndexSpec, SegmentedIndex
from latentdb.index._flat import FlatIndex
from latentdb.index._sealed import SealedSegment
from latentdb.index._spec import ANN_KINDS
from tests._segments import clustered

NO_KEYS = np.empty(0, np.int64)


def every_key(view: object, dimension: int = 16) -> list[int]:
    """Every key a view's exact search returns (k = all)."""
    query = np.ones((1, dimension), np.float32) / np.sqrt(dimension)
    if isinstance(view, FlatIndex):
        return sorted(view.search(query, 10_000)[1][0].tolist())
    _, keys = view.search(query, 10_000, exact=True)  # type: ignore[attr-defined]
    return sorted(keys[0].tolist())


def flat(rows: int, start: int = 0) -> FlatIndex:
    index = FlatIndex(16, "cosine")
    index.upsert(np.arange(start, start + rows, dtype=np.int64), clustered(rows, seed=start))
    return index


def test_a_frozen_flat_index_sees_none_of_the_writes_after_it() -> None:
    index = flat(100)
    query = clustered(1, seed=7)
    view = index.frozen()
    before = view.search(query, 100)
    index.upsert(np.arange(100, 150, dtype=np.int64), clustered(50, seed=1))  # appends
    index.upsert(np.arange(0, 10, dtype=np.int64), clustered(10, seed=2))  # overwrites
    index.remove(np.arange(10, 20, dtype=np.int64))
    index.compact()
    after = view.search(query, 100)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    assert len(view) == 100 and len(index) == 140
    assert sorted(index.search(query, 200)[1][0].tolist()) == [*range(10), *range(20, 150)]


def test_a_frozen_flat_index_refuses_writes() -> None:
    view = flat(10).frozen()
    with pytest.raises(RuntimeError, match="read-only"):
        view.remove(np.arange(3, dtype=np.int64))
    with pytest.raises(RuntimeError, match="read-only"):
        view.upsert(np.arange(20, 22, dtype=np.int64), clustered(2))


def test_rows_out_of_key_order_are_sorted_in_a_copy() -> None:
    index = flat(50, start=100)
    view = index.frozen()
    index.upsert(np.arange(0, 5, dtype=np.int64), clustered(5, seed=3))  # keys below all
    assert every_key(view) == list(range(100, 150))
    assert every_key(index.frozen()) == [*range(5), *range(100, 150)]


def sealed(rows: int) -> SealedSegment:
    keys = np.arange(rows, dtype=np.int64)
    return SealedSegment.build(
        kind="hnsw", spec=IndexSpec(kind="hnsw"), metric="cosine", keys=keys,
        vectors=clustered(rows), sequences=keys + 1,
    )  # fmt: skip


def test_a_frozen_sealed_segment_keeps_its_tombstones_and_graph() -> None:
    segment = sealed(500)
    query = clustered(1, seed=5)
    view = segment.frozen()
    before = view.search(query, 10, {"ef": 64})
    segment.remove(before[1][0, :5])
    assert segment.shared is False  # the delete copied the mask
    np.testing.assert_array_equal(view.search(query, 10, {"ef": 64})[1], before[1])
    assert not np.isin(segment.search(query, 10, {"ef": 64})[1], before[1][0, :5]).any()


def test_a_shared_segment_is_extended_as_a_copy() -> None:
    segment = sealed(500)
    view = segment.frozen()
    with pytest.raises(RuntimeError, match="detached"):
        segment.extend(
            np.arange(500, 510, dtype=np.int64), clustered(10, seed=9), sequences=NO_KEYS
        )
    twin = segment.detached()
    twin.extend(
        np.arange(500, 510, dtype=np.int64), clustered(10, seed=9),
        sequences=np.arange(501, 511, dtype=np.int64),
    )  # fmt: skip
    assert (view.live, twin.live) == (500, 510)
    assert view.index.ntotal == 500 and twin.index.ntotal == 510
    query = clustered(10, seed=9)[:1]
    assert twin.search(query, 1, {"ef": 64})[1][0, 0] == 500
    assert view.search(query, 1, {"ef": 64})[1][0, 0] < 500


@pytest.mark.parametrize("kind", ANN_KINDS)
@pytest.mark.parametrize("reduce", [None, 8])
def test_every_kind_detaches_a_copy_that_extends_alone(kind: str, reduce: int | None) -> None:
    keys = np.arange(2000, dtype=np.int64)
    segment = SealedSegment.build(
        kind=kind, spec=IndexSpec(kind=kind), metric="l2", keys=keys,
        vectors=clustered(2000), sequences=keys + 1, reduce=reduce,
    )  # fmt: skip
    view = segment.frozen()
    query = clustered(1, seed=4)
    before = view.search(query, 10, {})
    twin = segment.detached()
    twin.extend(
        np.arange(2000, 2100, dtype=np.int64), query.repeat(100, axis=0),
        sequences=np.arange(2001, 2101, dtype=np.int64),
    )  # fmt: skip
    np.testing.assert_array_equal(view.search(query, 10, {})[1], before[1])
    assert (twin.live, view.live, view.index.ntotal) == (2100, 2000, 2000)
    assert set(twin.search(query, 10, {})[1][0].tolist()) <= set(range(2000, 2100))


def segmented(folder: Path, *, seal_rows: int = 100_000) -> SegmentedIndex:
    return SegmentedIndex(
        dimension=16,
        metric="cosine",
        spec=IndexSpec(kind="hnsw", seal_rows=seal_rows),
        folder=folder,
        lock=threading.RLock(),
    )


def write(index: SegmentedIndex, keys: np.ndarray, *, deleted: np.ndarray = NO_KEYS) -> None:
    with index.lock:
        sequence = int(max(keys.max(initial=0), deleted.max(initial=0))) + 1
        index.apply(keys, clustered(keys.size, seed=int(keys[0]) if keys.size else 0),
                    keys + 1, deleted, sequence)  # fmt: skip


def test_every_change_publishes_a_view_and_old_views_stay_as_they_were(tmp_path: Path) -> None:
    index = segmented(tmp_path / "i")
    first = index.view
    assert first is not None and every_key(first) == []
    write(index, np.arange(1000, dtype=np.int64))
    after_add = index.view
    assert after_add is not first and every_key(after_add) == list(range(1000))
    write(index, NO_KEYS, deleted=np.arange(0, 1000, 2, dtype=np.int64))
    assert every_key(after_add) == list(range(1000))
    assert every_key(index.view) == list(range(1, 1000, 2))
    index.optimize()  # rebuilds: the rows move into a graph
    optimized = index.view
    assert optimized is not None and optimized.sealed and not len(optimized.growing)
    assert every_key(after_add) == list(range(1000))
    write(index, NO_KEYS, deleted=np.arange(1, 100, 2, dtype=np.int64))
    write(index, np.arange(1000, 1100, dtype=np.int64))
    index.optimize()  # few dead rows: the segment is extended, as a copy
    assert optimized.sealed[0][1].index.ntotal < index.sealed[0][1].index.ntotal
    assert every_key(optimized) == list(range(1, 1000, 2))
    assert every_key(index.view) == [*range(101, 1000, 2), *range(1000, 1100)]
    index.close(wait=True)


def test_queries_on_views_run_while_the_lock_is_held(tmp_path: Path) -> None:
    index = segmented(tmp_path / "i")
    write(index, np.arange(2000, dtype=np.int64))
    index.optimize()
    answered = threading.Event()

    def query() -> None:
        view = index.view
        assert view is not None
        view.search(clustered(1, seed=3), 10)
        answered.set()

    with index.lock:  # a writer in the middle of a transaction
        thread = threading.Thread(target=query)
        thread.start()
        assert answered.wait(30)
    thread.join()
    index.close(wait=True)


def test_a_bulk_load_build_withdraws_the_view_and_waits_for_its_readers(tmp_path: Path) -> None:
    index = segmented(tmp_path / "i")
    keys = np.arange(3000, dtype=np.int64)
    with index.lock:  # one big write, as a bulk load's catch-up gives it
        index.apply(keys, clustered(3000), keys + 1, NO_KEYS, 3001, adopt=True)
    index.readers.append(None)  # a query searching the view now
    views: list[object] = []
    builder = threading.Thread(target=lambda: (index.optimize(), views.append(index.view)))
    builder.start()
    builder.join(0.5)
    assert builder.is_alive() and index.view is None  # waits for the query to end
    index.readers.pop()
    builder.join(60)
    assert not builder.is_alive() and views and views[0] is not None
    assert every_key(index.view) == list(range(3000))
    index.close(wait=True)


def test_a_segment_whose_rows_are_all_gone_is_no_longer_searched(tmp_path: Path) -> None:
    index = segmented(tmp_path / "i", seal_rows=300)
    write(index, np.arange(600, dtype=np.int64))
    index.optimize()
    write(index, np.arange(1000, 1300, dtype=np.int64))
    with index.lock:
        index._maybe_seal()  # a delta of 300 rows
    index.wait()
    assert len(index.sealed) == 2
    write(index, NO_KEYS, deleted=np.arange(1000, 1300, dtype=np.int64))
    assert [segment.live for _, segment in index.sealed] == [600]
    assert every_key(index.view) == list(range(600))
    index.close(wait=True)


@pytest.mark.parametrize("kind", ANN_KINDS)
@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_a_view_of_one_segment_answers_one_query_as_the_general_path(
    tmp_path: Path, kind: str, metric: str
) -> None:
    index = SegmentedIndex(
        dimension=16, metric=metric, spec=IndexSpec(kind=kind), folder=tmp_path / "i",
        lock=threading.RLock(),
    )  # fmt: skip
    write(index, np.arange(600, dtype=np.int64))
    index.optimize()
    write(index, NO_KEYS, deleted=np.arange(0, 600, 3, dtype=np.int64))  # masked rows
    view = index.view
    assert view is not None and len(view.sealed) == 1 and not len(view.growing)
    assert view.one is not None and index.one is None
    settings = dict(view.search_settings())  # the same knobs, given: the general path
    answered = 0
    for seed in range(20):
        query = clustered(1, seed=100 + seed)
        general = view.search(query, 10, params=settings)
        fast = view.search(query, 10)
        np.testing.assert_array_equal(fast[1], general[1])
        np.testing.assert_allclose(fast[0], general[0], rtol=1e-6, atol=1e-6)
        assert not np.isin(fast[1], np.arange(0, 600, 3)).any()
        # The distances left out: the same answer (None: the general path answers).
        bare, whole = view.one(query, 10, False), view.one(query, 10)
        assert (bare is None) == (whole is None)
        if whole is not None:
            answered += 1
            assert bare is not None and bare[0] is None
            np.testing.assert_array_equal(bare[1], general[1])
    # Re-ranked kinds always take the general path; the others mostly answer here.
    assert answered == 0 if view.sealed[0][1].reranks else answered >= 10
    query = clustered(1, seed=1)
    # More hits asked than rows live: the general path.
    assert view.search(query, 1000)[1].shape == (1, 400)
    index.close(wait=True)
