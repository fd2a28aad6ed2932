"""Tuning the search knob to the recall target: for every ANN kind, the knob it picks
meets the target on held-out rows and the next cheaper one does not (between two of the
ladder's rungs where the target lies there); a target out of reach keeps the widest
setting; a new target is read off the held-out curve, also after a re-open.

Runs on a small mixture of 32-d Gaussians with a sparse graph (M=8), hard enough that
the knob lands between the ladder's rungs.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from latentdb.index import ANN_KINDS, IndexSpec, _tuning, index_kind
from latentdb.index._segments import SegmentedIndex
from latentdb.index._tuning import Trial, TuningReport

ROWS = 6000
DIMENSION = 32


def mixture(rows: int, seed: int) -> np.ndarray:
    """Rows of one fixed mixture of 50 Gaussians (centres from seed 0)."""
    centres = np.random.default_rng(0).standard_normal((50, DIMENSION))
    rng = np.random.default_rng(seed)
    points = centres[rng.integers(0, 50, rows)] + rng.standard_normal((rows, DIMENSION))
    return points.astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, new queries from the same mixture, and their exact top-10 among the rows."""
    rows, queries = mixture(ROWS, 1), mixture(1000, 2)
    flat = faiss.IndexFlatL2(DIMENSION)
    flat.add(rows)
    return rows, queries, flat.search(queries, 10)[1]


def tuned(rows: np.ndarray, kind: str, target: float, folder: Path | None = None) -> SegmentedIndex:
    """An index of ``rows`` (keys 0..n-1), optimized: built and tuned to ``target``."""
    spec = IndexSpec(kind=kind, m=8, ef_construction=40, pq_bytes=8)
    index = SegmentedIndex(
        dimension=DIMENSION,
        metric="l2",
        spec=spec,
        folder=folder,
        lock=threading.RLock(),
        recall_target=target,
    )
    keys = np.arange(rows.shape[0], dtype=np.int64)
    with index.lock:
        index.apply(keys, rows, keys + 1, np.empty(0, np.int64), int(keys[-1]) + 1)
        index.optimize()
    return index


def recall(index: SegmentedIndex, queries: np.ndarray, truth: np.ndarray) -> float:
    with index.lock:
        found = index.search(queries, 10)[1]
    return float(
        np.mean([np.intersect1d(f, t).size / 10 for f, t in zip(found, truth, strict=True)])
    )


def bound(trial: Trial | TuningReport) -> float:
    return trial.recall - _tuning._CONFIDENCE_Z * trial.error


def report(index: SegmentedIndex) -> TuningReport:
    assert index.last_tuning is not None
    return index.last_tuning


@pytest.mark.parametrize(
    "kind",
    # ivf-pq: training its lists and 256-centroid quantizers takes most of this file's time.
    [
        pytest.param(kind, marks=pytest.mark.slow) if kind == "ivf-pq" else kind
        for kind in ANN_KINDS
    ],
)
def test_each_kind_meets_the_target_and_the_next_cheaper_knob_does_not(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], kind: str
) -> None:
    rows, queries, truth = data
    index = tuned(rows, kind, 0.95)
    tuning = report(index)
    knob = index_kind(kind).knob or ""
    assert tuning.source == "held-out rows" and tuning.reached
    assert tuning.queries == 600  # a tenth of the rows, held out of the build
    assert index.params == tuning.params and set(tuning.params) <= index_kind(kind).search_knobs
    assert bound(tuning) >= 0.95 and tuning.recall <= 0.95 + 0.03
    assert index.tuned_recall == tuning.recall
    # The next cheaper value measured on the chosen ladder fails, within bisection's step.
    chosen = tuning.params[knob]
    ladder = {name: value for name, value in tuning.params.items() if name != knob}
    cheaper = [
        trial.params[knob]
        for trial in tuning.trials
        if trial.params[knob] < chosen
        and all(trial.params.get(name) == value for name, value in ladder.items())
    ]
    assert len(tuning.trials) == len({tuple(sorted(t.params.items())) for t in tuning.trials})
    if kind == "hnsw":  # this data set's knob lies between two rungs
        assert chosen not in index_kind(kind).knob_ladder and cheaper
    if cheaper:  # else the ladder's cheapest rung met the target
        below = max(cheaper)
        assert chosen - below <= max(1, below // _tuning._BISECT_RESOLUTION)
        (failed,) = [t for t in tuning.trials if t.params == {**tuning.params, knob: below}]
        assert bound(failed) < 0.95
    # New queries from the same mixture land near the target too.
    assert 0.93 <= recall(index, queries, truth) <= 0.95 + 0.03


def test_a_target_out_of_reach_keeps_the_widest_setting(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    short = dataclasses.replace(index_kind("hnsw"), knob_ladder=(10, 12))
    monkeypatch.setattr(_tuning, "index_kind", lambda name: short)
    rows, _, _ = data
    index = tuned(rows, "hnsw", 0.999)
    tuning = report(index)
    assert index.params == {"ef": 12} and not tuning.reached
    assert index.tuned_recall is not None and index.tuned_recall < 0.999


def test_a_new_target_is_read_off_the_held_out_curve(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    rows, queries, truth = data
    index = tuned(rows, "hnsw", 0.95)
    assert not len(index.growing)  # the held-out rows joined the graph
    # Above where the curve stopped nothing was measured: it does not answer (indexed rows
    # are measured instead, with a margin).
    index.recall_target = 0.999
    assert not index._tune_from_curve(index_kind("hnsw").ladders(), "ef", 10)
    # A few rows written since are outside the graph too, but no sample to tune on (far
    # from the queries: the truth stays as it was).
    keys = np.arange(ROWS, ROWS + 60, dtype=np.int64)
    with index.lock:
        index.apply(keys, mixture(60, 3) + 100, keys + 1, np.empty(0, np.int64), ROWS + 61)
    knobs = {}
    for target in (0.9, 0.99):
        index.set_recall_target(target)
        tuning = report(index)
        assert tuning.source == "held-out curve" and tuning.reached
        assert bound(tuning) >= target - 1e-9 and tuning.recall <= target + 0.03
        assert target - 0.02 <= recall(index, queries, truth) <= target + 0.03
        knobs[target] = tuning.params["ef"]
    assert knobs[0.9] < 36 < knobs[0.99]


def test_the_curve_is_saved_with_the_index(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    rows, _, _ = data
    index = tuned(rows, "hnsw", 0.95, tmp_path)
    curve = index.tuning_curve
    assert curve and index.curve_rows == ROWS
    index.close(wait=True)
    again = SegmentedIndex(
        dimension=DIMENSION,
        metric="l2",
        spec=index.spec,
        folder=tmp_path,
        lock=threading.RLock(),
        recall_target=0.99,
    )
    again.load()
    assert again.tuning_curve == curve and again.params == index.params
    again.set_recall_target(0.99)
    assert report(again).source == "held-out curve" and again.params["ef"] > index.params["ef"]
    again.close(wait=True)


def test_a_curve_that_does_not_read_is_dropped() -> None:
    index = SegmentedIndex(
        dimension=4, metric="l2", spec=IndexSpec(kind="hnsw"), folder=None, lock=threading.RLock()
    )
    index.restore_curve({"rows": 10, "points": [[{"ef": "x"}, 0.9, 0.01]]})
    assert index.tuning_curve == () and index.curve_rows == 0
    index.restore_curve({"rows": 10, "points": [[{"ef": 16}, 0.9, 0.01]]})
    restored: tuple[Trial, ...] = index.tuning_curve
    assert restored == (Trial({"ef": 16}, 0.9, 0.01),) and index.curve_rows == 10
    index.restore_curve(None)
    assert index.tuning_curve == ()


def test_the_cheapest_passing_knob_is_bisected_to_the_integer() -> None:
    ladder = [{"ef": value} for value in (10, 16, 24, 32, 48, 64)]
    tried: list[int] = []

    def passes(params: dict[str, int]) -> bool:
        tried.append(params["ef"])
        return params["ef"] >= 37

    assert _tuning._cheapest(ladder, "ef", passes) == {"ef": 37}
    assert len(tried) <= 5 + 4  # the rungs to 48, then log2(16) halvings
    assert _tuning._cheapest(ladder, "ef", lambda params: True) == {"ef": 10}
    assert _tuning._cheapest(ladder, "ef", lambda params: False) is None


def test_recall_and_its_standard_error() -> None:
    truth = np.array([[1, 2], [3, 4]])
    found = np.array([[2, 1], [3, 9]])
    recall, error = _tuning._recall_and_error(found, truth)
    assert recall == pytest.approx(0.75)
    assert error == pytest.approx(np.std([1.0, 0.5], ddof=1) / np.sqrt(2))
    # Missing true neighbours (-1) do not count: the ratio over those that exist.
    assert _tuning._recall_and_error(np.array([[5, -1]]), np.array([[5, -1]]))[0] == 1.0


def test_the_knob_is_interpolated_in_its_logarithm() -> None:
    points = [Trial({"ef": 10}, 0.90, 0.0), Trial({"ef": 40}, 0.96, 0.0)]
    found = _tuning._interpolated(points, "ef", 0.93)  # halfway in log(ef): ef 20
    assert found is not None and found.params == {"ef": 20} and found.recall == pytest.approx(0.93)
    found = _tuning._interpolated(points, "ef", 0.931)  # a little more: the next integer up
    assert found is not None and found.params == {"ef": 21} and found.recall >= 0.931
    assert _tuning._interpolated(points, "ef", 0.97) is None
    assert _tuning._interpolated(points, "ef", 0.5) == points[0]


def test_a_selection_that_counts_rows_the_index_lacks_gets_padded_hits_not_an_error() -> None:
    """A filter's selection made after a write can count rows a snapshot of the index
    lacks (the lifecycle machine met one): the masked search comes up short, its exact
    fallback over the selection's keys finds fewer than counted, and the hits are padded
    with key -1 (which the engine answers again under the lock) instead of raising."""
    from latentdb.query._selection import KeySelection

    rows = np.random.default_rng(4).standard_normal((300, DIMENSION)).astype(np.float32)
    index = tuned(rows, "hnsw", 0.9)
    held = np.array([3, 7], dtype=np.int64)
    selection = KeySelection(np.concatenate([held, np.arange(10_000, 10_020)]))  # 22 counted
    with index.lock:
        (distances, keys), used = index.search_selected(rows[:2], 10, selection)
    assert keys.shape == distances.shape == (2, 10)
    assert used["exact_fallbacks"] == 2
    for row in keys:
        assert sorted(row[row >= 0].tolist()) == [3, 7] and (row[2:] == -1).all()
    assert np.isinf(distances[:, 2:]).all()
