"""Live recall (issue 20): queries users send are recorded, the index measures its recall
on them against an exact scan and tunes its knobs on them when it misses the target."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import latentdb
from latentdb.errors import InvalidArgumentError
from latentdb.index import IndexSpec, SegmentedIndex, _segments
from latentdb.index._live import RECORDED_FILE, UNKNOWN, QuerySampler
from latentdb.index._tuning import live_recall

DIMENSION = 32
ROWS = 8000


def clusters(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, DIMENSION)) * 2
    rows = centres[rng.integers(40, size=ROWS)] + rng.normal(scale=0.3, size=(ROWS, DIMENSION))
    return rows.astype(np.float32)


def between(rows: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Queries unlike the stored rows: points between two random rows (a passage store
    asked short questions is shifted so too)."""
    rng = np.random.default_rng(seed)
    first, second = rng.integers(len(rows), size=count), rng.integers(len(rows), size=count)
    noise = rng.normal(scale=0.05, size=(count, DIMENSION))
    return (0.6 * rows[first] + 0.4 * rows[second] + noise).astype(np.float32)


def built(folder: Path, rows: np.ndarray, **sampling: float) -> SegmentedIndex:
    spec = IndexSpec(kind="hnsw", m=8, ef_construction=40, **sampling)  # type: ignore[arg-type]
    index = SegmentedIndex(
        dimension=DIMENSION, metric="l2", spec=spec, folder=folder, lock=threading.RLock()
    )
    keys = np.arange(len(rows), dtype=np.int64)
    with index.lock:
        index.apply(keys, rows, keys + 1, np.empty(0, np.int64), len(rows) + 1)
    index.optimize()
    return index


def test_tuning_on_recorded_queries_meets_the_target_where_held_out_rows_mislead(
    tmp_path: Path,
) -> None:
    rows = clusters()
    index = built(tmp_path / "i", rows, sample_rate=1.0, sample_per_minute=100_000)
    tuned_on_rows = index.status()
    assert tuned_on_rows.tuned_recall is not None and tuned_on_rows.tuned_recall >= 0.95
    _, before = live_recall(index.view, between(rows, 500, seed=1), 10)
    assert before.recall < 0.9  # held-out rows said >= 0.95: the tuning was misled
    for query in between(rows, 300, seed=2):
        index.sampler.offer(query[None, :])
    index.measure_live()
    status = index.status()
    assert status.live_queries == 300 and status.live_recall is not None
    assert status.params["ef"] > tuned_on_rows.params["ef"]
    assert index.last_tuning is not None and index.last_tuning.source == "recorded queries"
    # New queries of the same kind, never recorded, now meet the target.
    _, after = live_recall(index.view, between(rows, 1000, seed=3), 10)
    assert after.recall >= 0.95 - 2 * after.error
    index.close(wait=True)


def test_measuring_alone_changes_no_setting(tmp_path: Path) -> None:
    rows = clusters()
    index = built(tmp_path / "i", rows, sample_rate=1.0, sample_per_minute=100_000)
    params = dict(index.status().params)
    # Queries like the rows: recall at the tuned knob is about what tuning measured.
    rng = np.random.default_rng(5)
    picked = rng.integers(ROWS, size=150)
    noise = rng.normal(scale=0.3, size=(150, DIMENSION)).astype(np.float32)
    for query in rows[picked] + noise:
        index.sampler.offer(query[None, :])
    index.measure_live(retune=False)
    status = index.status()
    assert status.live_queries == 150 and status.params == params
    assert status.live_recall is not None and 0.0 < status.live_recall <= 1.0
    index.close(wait=True)


def recording(db: latentdb.Database) -> latentdb.Collection:
    """A collection that records every unfiltered query."""
    return db.create_collection(
        "c", dimension=DIMENSION, metric="l2", embedder=None, model="test-model",
        require_model=False,
        index={"kind": "hnsw", "sample_rate": 1.0, "sample_per_minute": 1000},
    )  # fmt: skip


def test_queries_are_recorded_in_the_background_and_survive_a_reopen(tmp_path: Path) -> None:
    rows = clusters()
    with latentdb.connect(tmp_path / "db") as db:
        collection = recording(db)
        collection.add(ids=[str(i) for i in range(ROWS)], vectors=rows)
        collection.optimize()
        assert collection.index_status().live_recall is None
        for query in between(rows, 120, seed=7):
            collection.query(vectors=query, k=5, include=[])
        deadline = time.monotonic() + 60
        while collection.index_status().live_recall is None and time.monotonic() < deadline:
            time.sleep(0.05)
        status = collection.index_status()
        assert status.live_recall is not None and status.live_queries >= 100
    assert any((tmp_path / "db").rglob(RECORDED_FILE))  # saved when closed
    with latentdb.connect(tmp_path / "db") as db:
        collection = db.get_collection("c")
        collection.index_status()  # loads the index
        index = collection._state.index  # type: ignore[attr-defined]
        assert len(index.sampler) == 120
        assert collection.index_status().live_recall == status.live_recall  # saved too


def test_filtered_exact_and_tuned_queries_are_not_recorded(tmp_path: Path) -> None:
    rows = clusters()
    with latentdb.connect(tmp_path / "db") as db:
        collection = recording(db)
        collection.add(
            ids=[str(i) for i in range(ROWS)],
            vectors=rows,
            metadatas=[{"n": i % 2} for i in range(ROWS)],
        )
        collection.optimize()
        query = rows[0]
        collection.query(vectors=query, k=5, where={"n": 1})
        collection.query(vectors=query, k=5, exact=True)
        collection.query(vectors=query, k=5, params={"ef": 64})
        index = collection._state.index  # type: ignore[attr-defined]
        assert len(index.sampler) == 0
        collection.query(vectors=query, k=5)
        assert len(index.sampler) == 1


def sampler(tmp_path: Path, **settings: float) -> QuerySampler:
    options = {"rate": 1.0, "per_minute": 1000, "capacity": 100, **settings}
    return QuerySampler(4, folder=tmp_path, **options)  # type: ignore[arg-type]


def test_the_sampler_keeps_a_bounded_share_of_the_queries(tmp_path: Path) -> None:
    some = sampler(tmp_path, rate=0.05, per_minute=1_000_000, capacity=100_000)
    recorded = sum(some.offer(np.ones((1, 4), np.float32)) for _ in range(20_000))
    assert 800 <= recorded <= 1200 and len(some) == recorded  # 5% of 20,000
    assert (
        sum(sampler(tmp_path, rate=0.0).offer(np.ones((1, 4), np.float32)) for _ in range(500)) == 0
    )
    capped = sampler(tmp_path, per_minute=30)
    assert sum(capped.offer(np.ones((1, 4), np.float32)) for _ in range(100)) == 30
    bounded = sampler(tmp_path, capacity=10, per_minute=1000)
    for value in range(25):
        bounded.offer(np.full((1, 4), value, np.float32))
    assert bounded.queries()[:, 0].tolist() == list(range(15, 25))  # the newest kept


def test_saved_queries_come_back_and_clear_removes_them(tmp_path: Path) -> None:
    first = sampler(tmp_path)
    for value in range(7):
        first.offer(np.full((1, 4), value, np.float32))
    first.save()
    first.measured = (0.93, 0.01, 7)
    first.save()
    again = sampler(tmp_path)
    assert again.queries()[:, 0].tolist() == list(range(7)) and again.fresh == 7
    assert again.measured == (0.93, 0.01, 7)
    assert len(sampler(tmp_path, capacity=3)) == 3
    (tmp_path / RECORDED_FILE).write_bytes(b"not an array")
    assert len(sampler(tmp_path)) == 0  # a sample, not data: a bad file is ignored
    again.save()
    again.clear()
    assert not (tmp_path / RECORDED_FILE).exists() and len(again) == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sample_rate": 1.5}, "sample_rate must be from 0 to 1"),
        ({"sample_rate": "often"}, "sample_rate must be from 0 to 1"),
        ({"sample_per_minute": 0}, "sample_per_minute must be an integer"),
        ({"sample_capacity": 10**9}, "sample_capacity must be an integer"),
    ],
)
def test_bad_sampling_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        IndexSpec.parse({"kind": "hnsw", **settings})


def test_sampling_settings_do_not_rebuild_a_saved_index() -> None:
    plain, sampled = IndexSpec(kind="hnsw"), IndexSpec(kind="hnsw", sample_rate=0.5)
    assert plain.build_dict() == sampled.build_dict() and plain.to_dict() != sampled.to_dict()


def test_exact_answers_are_kept_and_only_new_queries_scanned_while_rows_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = clusters()
    index = built(tmp_path / "i", rows, sample_rate=1.0, sample_per_minute=100_000)
    scanned: list[int] = []
    real = _segments.exact_keys

    def counting(search: object, queries: np.ndarray, k: int) -> np.ndarray:
        scanned.append(len(queries))
        return real(search, queries, k)  # type: ignore[arg-type]

    monkeypatch.setattr(_segments, "exact_keys", counting)
    queries = between(rows, 130, seed=11)
    for query in queries[:120]:
        index.sampler.offer(query[None, :])
    index.measure_live(retune=False)
    for query in queries[120:]:
        index.sampler.offer(query[None, :])
    index.measure_live(retune=False)
    assert scanned == [120, 10]
    _, truth, _ = index.sampler.snapshot()
    assert truth is not None
    np.testing.assert_array_equal(truth, real(index.view, queries, 10))  # type: ignore[arg-type]
    with index.lock:  # a write: every answer is scanned again
        index.apply(
            np.array([ROWS]), rows[:1], np.array([ROWS + 1]), np.empty(0, np.int64), ROWS + 2
        )
    index.measure_live(retune=False)
    assert scanned == [120, 10, 130]
    index.close(wait=True)


def test_the_ring_keeps_order_and_known_answers_through_growth_and_wrapping(
    tmp_path: Path,
) -> None:
    ring = sampler(tmp_path, capacity=100, per_minute=10_000)
    for value in range(70):  # grows past its first 64 rows
        ring.offer(np.full((1, 4), value, np.float32))
    queries, truth, stamp = ring.snapshot()
    assert queries[:, 0].tolist() == list(range(70)) and truth is None
    ring.keep_truth(np.arange(70)[:, None].repeat(3, axis=1), applied=5, stamp=stamp)
    for value in range(70, 150):  # wraps: the oldest 50 go
        ring.offer(np.full((1, 4), value, np.float32))
    queries, truth, _ = ring.snapshot()
    assert queries[:, 0].tolist() == list(range(50, 150))
    assert truth is not None and truth[:, 0].tolist() == [*range(50, 70), *[UNKNOWN] * 80]
    ring.save()
    again = sampler(tmp_path, capacity=100, per_minute=10_000)
    again.offer(np.full((1, 4), 150, np.float32))
    assert again.queries()[:, 0].tolist() == list(range(51, 151))


def test_recorded_queries_are_filters_first_tuning_queries(tmp_path: Path) -> None:
    rows = clusters()
    with latentdb.connect(tmp_path / "db") as db:
        collection = recording(db)
        collection.add(ids=[str(i) for i in range(ROWS)], vectors=rows)
        pool = collection._state.filters.pool  # type: ignore[attr-defined]
        assert len(pool) == 0
        for query in between(rows, 40, seed=3):
            collection.query(vectors=query, k=5, include=[])
        assert len(pool) == 40  # each recorded query serves the filters too
    with latentdb.connect(tmp_path / "db") as db:  # and after a restart
        collection = db.get_collection("c")
        collection.index_status()  # loads the index
        assert len(collection._state.filters.pool) == 40  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("recall", "error", "queries", "due"),
    [
        (0.948, 0.005, 1000, True),  # below the target, within noise of it: tune again
        (0.90, 0.05, 1000, True),
        (0.955, 0.005, 1000, False),  # in the window
        (0.975, 0.004, 1000, True),  # far above the window: recall paid for, not asked
        (0.975, 0.01, 1000, False),  # above it, but not clearly
        (0.80, 0.05, 99, False),  # too few queries to decide on
    ],
)
def test_live_recall_below_the_target_is_tuned_again(
    recall: float, error: float, queries: int, due: bool
) -> None:
    assert _segments.LIVE_MIN_QUERIES == 100
    assert _segments.live_retune_due(recall, error, 0.95, queries) is due
