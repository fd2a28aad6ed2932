"""The space report's figures and advice, from build_report directly: the index line,
reduce= only where the engine builds an ANN index, hubness over the whole collection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from latentdb.analysis import (
    IndexMeasurement,
    SpaceReport,
    build_report,
    index_headline,
    nearest_others,
)
from latentdb.analysis import _report as report_module
from latentdb.index import AUTO_MIN_ROWS


def low_rank(n: int = 1500, dimension: int = 64, rank: int = 24) -> np.ndarray:
    """Rows that span ``rank`` directions: PCA to half the dimension keeps recall@10
    above 0.95 (to a quarter, with a re-rank), so the trials find reductions to advise."""
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((rank, dimension))
    return (rng.standard_normal((n, rank)) @ basis).astype(np.float32)


def measured(
    kind: str, spec: str = "auto", source: str = "held-out rows", tuned: float | None = None
) -> IndexMeasurement:
    ann = kind != "flat"
    return IndexMeasurement(
        kind=kind,
        spec=spec,
        params={"ef": 48} if ann else {},
        recall=0.97 if ann else 1.0,
        recall_target=0.95,
        qps=2400.0 if ann else 125.0,  # flat: the same scan as exact_qps, timed cold
        exact_qps=176.0,
        source=source,
        pending=0,
        tuned_recall=tuned,
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


def test_without_an_index_measurement_the_size_decides() -> None:
    """Not measured: index='auto' (the default) keeps 1,500 rows exact, so no reduce=."""
    text = advice(report_with(None), "reduction")
    assert text.startswith("no reduce= for now") and "create_collection" not in text
    assert f"index='auto' builds one from {AUTO_MIN_ROWS:,} rows" in text


def test_the_reduction_advice_cites_the_dimension_as_a_range() -> None:
    report = report_with(measured("hnsw"))
    low, high = report.dimension_range()
    assert low < high and len(report.dimension_curve) == 4
    assert f"intrinsic dimension {low:.1f}-{high:.1f} by TwoNN over 187-1,500 rows" in advice(
        report, "reduction"
    )
    (item,) = [a for a in report.advice if a.topic == "reduction"]
    assert item.evidence["intrinsic_dimension_low"] == low


def test_recall_on_indexed_rows_is_never_the_headline() -> None:
    held_out = measured("hnsw", source="held-out rows")
    assert index_headline(held_out)[0] == "recall 0.970"
    tuned = measured("hnsw", source="indexed rows", tuned=0.961)
    figure, note = index_headline(tuned)
    assert figure == "recall 0.961" and "held out of the build" in note and "0.970" in note
    text = advice(report_with(tuned), "index")
    assert "was tuned to recall@10 0.961" in text and "measured recall" not in text
    bare = measured("hnsw", source="indexed rows")
    figure, note = index_headline(bare)
    assert figure == "indexed-row recall 0.970" and "not the recall of new queries" in note
    assert "indexed rows only" in advice(report_with(bare), "index")


def test_the_index_line_gives_the_live_recall_of_the_queries_users_sent() -> None:
    live = dataclasses.replace(measured("hnsw"), live_recall=0.912, live_queries=1000)
    figure, note = index_headline(live)
    assert figure == "recall 0.970"
    assert "0.912 on 1,000 queries users sent (recorded, live recall)" in note
    assert "users sent" not in index_headline(measured("hnsw"))[1]
    assert SpaceReport.from_dict(report_with(live).to_dict()).index == live


def test_hubness_is_counted_over_every_row_with_the_hubs_from_the_same_counts() -> None:
    report = report_with(None)
    assert report.hubness_queries == report.count == 1500
    assert report.hubness_low == report.hubness_skewness == report.hubness_high
    shares = [hub.share for hub in report.top_hubs]
    assert shares == sorted(shares, reverse=True)
    assert all(hub.occurrences == pytest.approx(hub.share * 1500) for hub in report.top_hubs)
    assert all(float(hub.occurrences).is_integer() for hub in report.top_hubs)


def test_a_large_collection_estimates_hubness_from_sampled_queries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(report_module, "HUBNESS_PAIRS", 1500 * 500)
    report = report_with(None)
    assert report.hubness_queries == 500
    assert report.hubness_low < report.hubness_skewness < report.hubness_high
    # The baseline is counted, every Gaussian row a query: no interval to show.
    assert report.gaussian_hubness_rows == 1500
    assert report.gaussian_hubness_low == report.gaussian_hubness_high
    (line,) = [row for row in report.summary_rows() if row[0].startswith("hubness")]
    assert "500 queries against every row, estimated for all" in line[3]
    assert "every row a query among 1,500 rows" in line[3]


def test_the_hubness_queries_reuse_the_sampled_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 300 sampled queries' neighbours come from the scan, 200 more from their own
    search; the hubs are what counting all 500 queries' k nearest gives."""
    monkeypatch.setattr(report_module, "HUBNESS_PAIRS", 1500 * 500)
    rows = low_rank()
    report = report_with(None, rows)
    positions = report_module.sample_positions(1500, 300)
    order, reused = report_module._query_order(1500, positions, 200)
    assert sorted(order.tolist()) == list(range(1500))
    assert set(order[200:500].tolist()) == set(positions.tolist())
    assert np.array_equal(positions[reused], order[200:500])
    _, neighbours = nearest_others(rows, order[:500], k=10, metric="cosine")
    counts = np.bincount(neighbours.ravel(), minlength=1500)
    for hub in report.top_hubs:
        assert hub.occurrences == pytest.approx(counts[int(hub.id[1:])] * 1500 / 500)


@pytest.mark.parametrize(("narrow", "wide"), [(0.0, True), (100.0, False)])
def test_a_wide_hubness_interval_is_called_rough(
    monkeypatch: pytest.MonkeyPatch, narrow: float, wide: bool
) -> None:
    monkeypatch.setattr(report_module, "HUBNESS_PAIRS", 1500 * 500)
    monkeypatch.setattr(report_module, "_NARROW", narrow)
    (line,) = [row for row in report_with(None).summary_rows() if row[0].startswith("hubness")]
    assert ("a rough figure" in line[3]) is wide


def test_a_reduction_under_target_says_keep_every_dimension_or_wait() -> None:
    rows = np.random.default_rng(1).standard_normal((600, 64)).astype(np.float32)
    assert "keep all 64 dimensions" in advice(report_with(measured("hnsw"), rows), "reduction")
    exact = advice(report_with(measured("flat"), rows), "reduction")
    assert exact.startswith("no reduce= for now") and "under the target 0.95" in exact
