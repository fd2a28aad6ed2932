"""The space report's advice on the index and on reduce=, from build_report directly."""

from __future__ import annotations

import numpy as np
import pytest

from latentdb.analysis import IndexMeasurement, SpaceReport, build_report
from latentdb.analysis._report import AUTO_ANN_ROWS
from latentdb.index import AUTO_MIN_ROWS


def low_rank(n: int = 1500, dimension: int = 64, rank: int = 24) -> np.ndarray:
    """Rows that span ``rank`` directions: PCA to half the dimension keeps recall@10
    above 0.95 (to a quarter, with a re-rank), so the trials find reductions to advise."""
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((rank, dimension))
    return (rng.standard_normal((n, rank)) @ basis).astype(np.float32)


def measured(kind: str, spec: str = "auto") -> IndexMeasurement:
    ann = kind != "flat"
    return IndexMeasurement(
        kind=kind,
        spec=spec,
        params={"ef": 48} if ann else {},
        recall=0.97 if ann else 1.0,
        recall_target=0.95,
        qps=2400.0 if ann else 125.0,  # flat: the same scan as exact_qps, timed cold
        exact_qps=176.0,
        source="held-out rows",
        pending=0,
    )


def report_with(index: IndexMeasurement | None, rows: np.ndarray | None = None) -> SpaceReport:
    rows = low_rank() if rows is None else rows
    return build_report(
        rows,
        lambda positions: [f"r{p}" for p in positions.tolist()],
        collection="c",
        model="m",
        metric="cosine",
        sample=300,
        measure_index=(lambda: index) if index is not None else None,
    )


def advice(report: SpaceReport, topic: str) -> str:
    (item,) = [a for a in report.advice if a.topic == topic]
    return item.text


def test_the_auto_threshold_is_the_index_layers() -> None:
    assert AUTO_ANN_ROWS == AUTO_MIN_ROWS


def test_an_ann_index_gets_the_reduce_advice() -> None:
    report = report_with(measured("hnsw"))
    assert report.reductions[0].recall >= 0.95  # the trials found a reduction that holds
    text = advice(report, "reduction")
    assert "create_collection(..., reduce=32)" in text and "db.migrate(name, reduce=32)" in text


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("auto", "index='auto' builds one from 20,000 rows"),
        ("flat", "index='flat' never builds one"),
        ("hnsw", "the hnsw index is not built yet (optimize() builds it)"),
    ],
)
def test_an_exact_collection_is_not_advised_to_reduce(spec: str, why: str) -> None:
    """A 4,700-row collection under index='auto' stays exact: there is no ANN index
    for reduce= to shrink, so the report advised it in vain (issue 16)."""
    report = report_with(measured("flat", spec))
    text = advice(report, "reduction")
    assert text.startswith("no reduce= for now: the 1,500 rows are searched exactly")
    assert why in text
    assert "create_collection" not in text and "migrate" not in text
    assert "At this size PCA to 16 dimensions keeps recall@10" in text  # still informs
    (item,) = [a for a in report.advice if a.topic == "reduction"]
    assert item.evidence["index_kind"] == "flat" and "recall_at_32" in item.evidence


def test_an_exact_collection_quotes_one_scan_speed() -> None:
    """evaluate() times the one scan twice for a flat index (125 and 176 q/s): the
    advice quotes one figure, the warm one."""
    text = advice(report_with(measured("flat")), "index")
    assert "176 queries/s" in text and "125" not in text
    assert "index='auto' stays exact below 20,000 rows" in text


def test_without_an_index_measurement_the_trials_decide() -> None:
    text = advice(report_with(None), "reduction")
    assert "create_collection(..., reduce=32)" in text


def test_a_reduction_under_target_says_keep_every_dimension_or_wait() -> None:
    rows = np.random.default_rng(1).standard_normal((600, 64)).astype(np.float32)
    assert "keep all 64 dimensions" in advice(report_with(measured("hnsw"), rows), "reduction")
    exact = advice(report_with(measured("flat"), rows), "reduction")
    assert exact.startswith("no reduce= for now") and "under the target 0.95" in exact
