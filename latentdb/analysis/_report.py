"""The space report: a collection's geometry measured over all its rows (or, where that
costs too much, estimated from large samples with their uncertainty), and advice that
cites those measurements and agrees with what the engine builds at this size."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentdb.analysis import _estimators as estimators
from latentdb.analysis._advice import Advice, advise, index_headline
from latentdb.analysis._duplicates import count_near_duplicates
from latentdb.analysis._estimators import (
    DUPLICATE_FRACTION,
    DimensionPoint,
    FloatMatrix,
    IntMatrix,
    NeighbourScan,
    NormSummary,
)
from latentdb.analysis._progress import Steps
from latentdb.analysis._reduction import Reduction, candidate_dimensions, reduction_trials
from latentdb.errors import InvalidArgumentError

__all__ = [
    "REPORT_STEPS",
    "Advice",
    "Hub",
    "IndexMeasurement",
    "NearDuplicate",
    "SpaceReport",
    "build_report",
    "index_headline",
    "sample_positions",
]

SEED = 0
# Steps build_report announces (a bar drawn around it adds its own before them).
REPORT_STEPS = 8
# Queries for the PCA recall trials: 500 give recall@10 to about +-0.01.
_REDUCTION_QUERIES = 500
_TOP_HUBS = 5
_DUPLICATE_EXAMPLES = 5
# Query x row pairs of the exact k-nearest scan behind hubness: every row is a query up
# to sqrt of it (20,000 rows), else this many pairs' worth of queries (8,000 of 100,000
# rows, 2,000 of them the sampled queries' scan), whose counts estimate the whole
# collection's (estimators.occurrence_skewness). Against every row's k-occurrence
# counted at 100k PyPI rows (skewness 4.32), 60 samples of 8,000 queries read 4.27 on
# average, standard deviation 0.17, 20-group jackknife intervals of median +-0.50,
# covering it every time; 4,000 queries: +-0.33 and +-0.77 (with 5 groups +-1.13)
# (issue 19).
HUBNESS_PAIRS = 800_000_000
# The Gaussian baseline's hubness: every row a query among this many Gaussian rows of
# the collection's dimension. Estimated from 4,000 queries at 100k, the same way as the
# collection's, it read -0.26 (95% -4.97-4.45): a near-Poisson k-occurrence (skewness
# ~0.3) is all noise to deconvolve. Counted on unit 384-d rows it does not move with
# the rows: 0.32 and 0.30 (two draws) at 10,000, 0.30 and 0.32 at 20,000, 0.32 at
# 40,000 (issue 19).
GAUSSIAN_HUBNESS_ROWS = 10_000
# Gaussian queries of the baseline's relative contrast: noise varies little from one
# query to the next.
_GAUSSIAN_CONTRAST_QUERIES = 200
# Queries of the centered hubness when the collection's is estimated from a sample.
_CENTERED_QUERIES = 1000
# Queries of each intrinsic-dimension scale, and query x row pairs the curve may scan:
# scales above it are left out (the full scale comes with the hubness scan).
_DIMENSION_QUERIES = 1000
_DIMENSION_PAIRS = 100_000_000
# The curve has settled when its last two scales differ by at most this fraction.
_SETTLED = 0.1
# Off the unit sphere, near-duplicates lie within this fraction of the median distance
# to the nearest distinct row: on a uniform 5-d set about 0.05^5 * ln 2 ~ 2e-7 of rows
# are that close by chance, against 37,012 "pairs" of the old rule, relative to the mean
# norm (issue 19).
NEAR_DUPLICATE_SHARE = 0.05
# A hubness interval wider than twice this reads as wide in the report: the figure is
# then a rough one, and it says so.
_NARROW = 0.5
_WIDE = "too wide to rank collections by: a rough figure"
# Exact near-duplicate counts up to this many rows (_duplicates: PCA, then k-means cells
# compared only across bisectors within the radius: 2.2 s on one core at 100k PyPI rows,
# where a range scan of every pair took 79 s; the cost still grows as about n^2 / 512
# cells); beyond, an estimate from the sampled queries with its standard error.
EXACT_DUPLICATE_ROWS = 100_000


def sample_positions(count: int, sample: int, *, seed: int = SEED) -> IntMatrix:
    """``sample`` distinct positions of ``count`` rows, ascending, by a fixed seed (all of
    them when ``sample >= count``)."""
    if sample >= count:
        return np.arange(count, dtype=np.int64)
    picked = np.random.default_rng(seed).choice(count, size=sample, replace=False)
    return np.sort(picked).astype(np.int64)


@dataclass(frozen=True)
class Hub:
    """A record that turns up in many result lists.

    Attributes:
        id: The record's id.
        occurrences: Rows of the collection whose k nearest neighbours include it
            (counted with every row as a query, or estimated from a sample of queries:
            the same k-occurrence as the report's hubness skewness).
        share: ``occurrences`` over the number of rows: the share of result lists it is
            in.
    """

    id: str
    occurrences: float
    share: float


@dataclass(frozen=True)
class NearDuplicate:
    """Two records closer than the near-duplicate radius.

    Attributes:
        first, second: Their ids.
        distance: Their distance in the collection's metric.
    """

    first: str
    second: str
    distance: float


@dataclass(frozen=True)
class IndexMeasurement:
    """The collection's index as ``index_status()`` and ``evaluate()`` measured it.

    Attributes:
        kind: Kind in use ("flat" when everything is exact).
        spec: Kind configured ("auto", "hnsw", ...).
        params: Search parameters in use.
        recall: recall@10 measured now against an exact scan, on ``source``.
        recall_target: The collection's target.
        qps: Queries per second of the default search, one at a time.
        exact_qps: Queries per second of an exact scan, one at a time.
        source: Where ``evaluate`` took its queries: "held-out rows" (outside the index,
            like new queries), "given queries", or "indexed rows" (inside it: they find
            themselves, so recall reads high).
        pending: Rows outside the ANN index (in the exact growing segment).
        tuned_recall: The recall the search parameters were tuned to, measured on rows
            held out of the build when the index was tuned; None when not tuned.
        live_recall: Recall@10 on the queries users sent, as the index recorded and
            measured them (``IndexStatus.live_recall``); None until measured.
        live_queries: The recorded queries it was measured on.
    """

    kind: str
    spec: str
    params: dict[str, int]
    recall: float
    recall_target: float
    qps: float
    exact_qps: float
    source: str
    pending: int
    tuned_recall: float | None = None
    live_recall: float | None = None
    live_queries: int = 0


@dataclass(frozen=True)
class SpaceReport:
    """A collection's latent space, measured (:meth:`Collection.analyze`).

    Attributes:
        collection, model, metric, dimension, count: What was measured.
        sample: Rows used as queries of the per-query figures (relative contrast, PCA
            trials, the metric's agreement with cosine; fixed seed ``seed``).
        k: Neighbours per query.
        norms: Lengths of all stored vectors.
        relative_contrast: He et al.'s (2012): mean distance of a query to the rows
            over its distance to the nearest other row, means over the sampled queries
            (Euclidean).
        gaussian_relative_contrast: The same for i.i.d. Gaussian vectors of the same
            dimension and count: how much structure the space has beyond noise.
        intrinsic_dimension: TwoNN at the largest scale of ``dimension_curve``.
        intrinsic_dimension_estimator: Its estimator, named.
        levina_bickel_dimension: Levina-Bickel MLE (k neighbours) at that scale.
        dimension_curve: Both estimators on nested subsamples (n/8, n/4, n/2, n), since
            they read lower the more rows there are.
        dimension_settled: Whether the last two scales agree within 10%.
        hubness_skewness: Skewness of the k-occurrence of every row, over the whole
            collection: exact when every row was a query (``hubness_queries`` =
            ``count``), else estimated from that many queries against every row.
        hubness_low, hubness_high: Its 95% interval (delete-a-group jackknife over 20
            disjoint query groups; both equal it when every row was a query).
        gaussian_hubness_skewness: The same figure for Gaussian vectors of the same
            dimension, every row a query among ``gaussian_hubness_rows`` of them (a
            figure estimated from sampled queries, as the collection's, is mostly
            noise there); ``gaussian_hubness_low`` and ``gaussian_hubness_high`` its
            interval (equal to it: counted, not estimated).
        centered_hubness_skewness: The same figure after subtracting the mean vector
            (from at most 1,000 of the queries when sampling), ``centered_hubness_low``
            and ``centered_hubness_high`` its interval.
        top_hubs: Records with the largest k-occurrence (the same counts).
        near_duplicate_pairs: Pairs within ``near_duplicate_rule``: counted exactly
            (every pair checked), else estimated from the sampled queries
            (``near_duplicates_estimated``, with standard error
            ``near_duplicate_error``).
        near_duplicate_radius: The rule as a Euclidean distance.
        near_duplicate_examples: A few such pairs.
        index: The index as measured now.
        reductions: Recall@k after PCA to fewer dimensions.
        advice: Recommendations, each citing its measurements.
        seconds: Time the analysis took.
    """

    collection: str
    model: str
    metric: str
    dimension: int
    count: int
    sample: int
    k: int
    seed: int
    norms: NormSummary
    relative_contrast: float
    gaussian_relative_contrast: float
    intrinsic_dimension: float
    intrinsic_dimension_estimator: str
    levina_bickel_dimension: float
    dimension_curve: list[DimensionPoint]
    dimension_settled: bool
    hubness_skewness: float
    hubness_low: float
    hubness_high: float
    hubness_queries: int
    gaussian_hubness_skewness: float
    gaussian_hubness_low: float
    gaussian_hubness_high: float
    centered_hubness_skewness: float
    top_hubs: list[Hub]
    near_duplicate_pairs: int
    near_duplicates_estimated: bool
    near_duplicate_error: float
    near_duplicate_radius: float
    near_duplicate_rule: str
    near_duplicate_examples: list[NearDuplicate]
    index: IndexMeasurement | None
    reductions: list[Reduction]
    advice: list[Advice] = field(default_factory=list)
    seconds: float = 0.0
    gaussian_hubness_rows: int = 0
    centered_hubness_low: float = float("nan")
    centered_hubness_high: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready dicts and lists (``inf`` and ``nan`` become None)."""
        return json_safe(dataclasses.asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpaceReport:
        """Rebuild a report from :meth:`to_dict`'s output."""
        values: dict[str, Any] = {
            name: (float("nan") if data[name] is None else data[name])
            for name in data
            if name in {f.name for f in dataclasses.fields(cls)}
        }
        values["norms"] = NormSummary(**data["norms"])
        values["dimension_curve"] = [
            DimensionPoint(**{k: float("nan") if v is None else v for k, v in point.items()})  # type: ignore[arg-type]
            for point in data["dimension_curve"]
        ]
        values["top_hubs"] = [Hub(**hub) for hub in data["top_hubs"]]
        values["near_duplicate_examples"] = [
            NearDuplicate(**pair) for pair in data["near_duplicate_examples"]
        ]
        values["index"] = None if data["index"] is None else IndexMeasurement(**data["index"])
        values["reductions"] = [Reduction(**trial) for trial in data["reductions"]]
        values["advice"] = [Advice(**item) for item in data["advice"]]
        return cls(**values)

    def dimension_range(self) -> tuple[float, float]:
        """Lowest and highest TwoNN reading over the curve's scales."""
        readings = [p.two_nn for p in self.dimension_curve if math.isfinite(p.two_nn)]
        if not readings:
            return float("nan"), float("nan")
        return min(readings), max(readings)

    def summary_rows(self) -> list[tuple[str, str, str, str]]:
        """The figures as (measure, this collection, Gaussian of the same shape, note)
        lines: what the CLI's table shows."""
        norms = self.norms
        rows = [
            (
                "norms",
                f"{norms.mean:.4g} ± {norms.std:.2g}",
                "",
                f"min {norms.min:.4g}, max {norms.max:.4g}; "
                + ("unit length" if norms.unit_length else "not unit length"),
            ),
            (
                "relative contrast",
                f"{self.relative_contrast:.3f}",
                f"{self.gaussian_relative_contrast:.3f}",
                "mean distance / nearest distance, He et al. 2012 (1: all points "
                f"equidistant); {self.sample:,} sampled queries",
            ),
        ]
        low, high = self.dimension_range()
        curve = ", ".join(f"{p.two_nn:.1f} at {p.rows:,}" for p in self.dimension_curve)
        lb = ", ".join(f"{p.levina_bickel:.1f}" for p in self.dimension_curve)
        rows.append(
            (
                "intrinsic dimension",
                f"{low:.1f}-{high:.1f}",
                "",
                f"{self.intrinsic_dimension_estimator} by rows: {curve}; Levina-Bickel "
                f"(k={self.k}) {lb}; "
                + ("settled" if self.dimension_settled else "not settled: still moving with n"),
            )
        )
        exact = self.hubness_queries >= self.count
        how = (
            "every row a query"
            if exact
            else f"{self.hubness_queries:,} queries against every row, estimated for all; "
            f"95% interval {self.hubness_low:.2f}-{self.hubness_high:.2f}"
            + (f", {_WIDE}" if self.hubness_high - self.hubness_low > 2 * _NARROW else "")
        )
        gaussian = f"{self.gaussian_hubness_skewness:.2f}"
        if self.gaussian_hubness_high > self.gaussian_hubness_low:
            gaussian += f" ({self.gaussian_hubness_low:.2f}-{self.gaussian_hubness_high:.2f})"
        gaussian_rows = self.gaussian_hubness_rows or self.count
        centered = f"{self.centered_hubness_skewness:.2f}"
        if self.centered_hubness_high > self.centered_hubness_low:
            centered += f" (95% {self.centered_hubness_low:.2f}-{self.centered_hubness_high:.2f})"
        rows.append(
            (
                f"hubness (k={self.k}-occurrence skew)",
                f"{self.hubness_skewness:.2f}",
                gaussian,
                f"over all {self.count:,} rows ({how}); Gaussian: every row a query among "
                f"{gaussian_rows:,} rows; {centered} after centering; top hubs (share "
                "of result lists): "
                + ", ".join(f"{hub.id} ({hub.share:.2%})" for hub in self.top_hubs[:3]),
            )
        )
        if self.near_duplicates_estimated:
            pairs = f"~{self.near_duplicate_pairs:,}"
            note = f"{self.near_duplicate_rule}; estimated ± {self.near_duplicate_error:,.0f}"
        else:
            pairs = f"{self.near_duplicate_pairs:,}"
            note = f"{self.near_duplicate_rule}; every pair counted"
        rows.append(("near-duplicate pairs", pairs, "", note))
        if self.index is not None:
            figure, note = index_headline(self.index)
            rows.append(("index", figure, "", note))
        return rows


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN or inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _metric_distance(squared_euclidean: float, metric: str, unit: bool) -> float:
    """A Euclidean distance, squared, in the metric's own terms where they convert."""
    if unit and metric == "cosine":
        return squared_euclidean / 2.0
    if unit and metric == "ip":
        return squared_euclidean / 2.0 - 1.0
    return squared_euclidean


def build_report(
    rows: FloatMatrix,
    ids_of: Callable[[IntMatrix], list[str]],
    *,
    collection: str,
    model: str,
    metric: str,
    sample: int = 2000,
    k: int = 10,
    measure_index: Callable[[], IndexMeasurement] | None = None,
    recall_target: float = 0.95,
    steps: Steps | None = None,
) -> SpaceReport:
    """Measure a latent space from all its rows.

    Args:
        rows: float32 (n, d), every live vector of the collection, n >= 3.
        ids_of: The ids of rows at the given positions.
        collection, model, metric: What the rows are.
        sample: Rows used as queries of the per-query figures (fixed seed).
        k: Neighbours per query (k-occurrence, hubs, recall).
        measure_index: Measures the collection's index now (``evaluate``), or None.
        recall_target: The recall the advice aims for.
        steps: Progress reporting (:data:`REPORT_STEPS` steps), or None.

    Returns:
        A :class:`SpaceReport`.

    Raises:
        InvalidArgumentError: fewer than k + 2 rows, or a sample under 3.
    """
    started = time.perf_counter()
    steps = steps or Steps.silent()
    n, d = rows.shape
    if n < k + 2:
        raise InvalidArgumentError(
            f"analyze needs more than k + 1 = {k + 1} records to measure neighbours; "
            f"the collection has {n}"
        )
    if sample < 3:
        raise InvalidArgumentError(f"sample must be at least 3; got {sample}")
    norms = estimators.norm_summary(rows)
    positions = sample_positions(n, sample)
    nq = positions.size
    steps.advance(f"neighbours of {nq:,} sampled rows among {n:,}")
    radius, rule = _duplicate_rule(rows, positions, norms.unit_length)
    scan = estimators.scan_neighbours(rows, positions, k=k, metric=metric, duplicate_radius=radius)
    # One random order of the rows: its first m rows are the hubness queries (the
    # sampled ones among them, whose neighbours the scan found), its first s rows the
    # subsample of each intrinsic-dimension scale.
    queries = max(_hubness_queries(n), nq)
    order, reused = _query_order(n, positions, queries - nq)
    steps.advance(f"hubness: {queries:,} queries against all {n:,} rows")
    distances, found = np.empty((0, k)), np.empty((0, k), dtype=np.int64)
    if queries > nq:
        distances, found = estimators.nearest_others(
            rows, order[: queries - nq], k=k, metric=metric
        )
    neighbours = np.concatenate([found, scan.neighbours[reused]])
    hubness = estimators.hubness(neighbours, n)
    centered = _centered_hubness(rows, order[:queries], k, metric, hubness)
    steps.advance("Gaussian baseline")
    gaussian_contrast, gaussian_hubness = _gaussian_baseline(
        n, d, norms.unit_length, positions, k, metric
    )
    steps.advance("intrinsic dimension by scale")
    curve = _dimension_curve(rows, order, k, metric, norms.unit_length, queries, distances)
    steps.advance("near-duplicates")
    pairs, error, examples = _near_duplicates(rows, ids_of, scan, positions, metric, norms)
    steps.advance("PCA trials")
    trial_queries = positions[:: max(1, nq // _REDUCTION_QUERIES)][:_REDUCTION_QUERIES]
    truth = scan.neighbours[np.searchsorted(positions, trial_queries)]
    reductions = reduction_trials(
        rows,
        trial_queries,
        truth,
        metric=metric,
        # n rows span at most n - 1 directions: faiss refuses more components.
        dimensions=[dim for dim in candidate_dimensions(d) if dim < n],
    )
    steps.advance("index recall")
    index = measure_index() if measure_index is not None else None
    target = index.recall_target if index is not None else recall_target
    last = curve[-1]
    report = SpaceReport(
        collection=collection,
        model=model,
        metric=metric,
        dimension=d,
        count=n,
        sample=nq,
        k=k,
        seed=SEED,
        norms=norms,
        relative_contrast=estimators.relative_contrast(scan.nearest, scan.mean),
        gaussian_relative_contrast=gaussian_contrast,
        intrinsic_dimension=last.two_nn,
        intrinsic_dimension_estimator="TwoNN (Facco et al. 2017)",
        levina_bickel_dimension=last.levina_bickel,
        dimension_curve=curve,
        dimension_settled=_settled(curve),
        hubness_skewness=hubness.skewness,
        hubness_low=hubness.low,
        hubness_high=hubness.high,
        hubness_queries=hubness.queries,
        gaussian_hubness_skewness=gaussian_hubness.skewness,
        gaussian_hubness_low=gaussian_hubness.low,
        gaussian_hubness_high=gaussian_hubness.high,
        gaussian_hubness_rows=gaussian_hubness.rows,
        centered_hubness_skewness=centered.skewness,
        centered_hubness_low=centered.low,
        centered_hubness_high=centered.high,
        top_hubs=_top_hubs(hubness, ids_of),
        near_duplicate_pairs=pairs,
        near_duplicates_estimated=error is not None,
        near_duplicate_error=0.0 if error is None else error,
        near_duplicate_radius=radius,
        near_duplicate_rule=rule,
        near_duplicate_examples=examples,
        index=index,
        reductions=reductions,
    )
    advice = advise(report, scan_agreement(scan), target)
    seconds = time.perf_counter() - started
    steps.advance("done")
    return dataclasses.replace(report, advice=advice, seconds=seconds)


def _hubness_queries(count: int) -> int:
    """Rows that are queries of the hubness scan: all of them while the scan costs at
    most :data:`HUBNESS_PAIRS` pairs, else that many pairs' worth."""
    if count * count <= HUBNESS_PAIRS:
        return count
    return max(HUBNESS_PAIRS // count, 100)


def _query_order(count: int, positions: IntMatrix, extra: int) -> tuple[IntMatrix, IntMatrix]:
    """A random order of ``count`` rows whose first ``extra`` rows are not sampled and
    whose next ``positions.size`` rows are the sampled ones, shuffled; and where each of
    those sits in ``positions`` (ascending). The sampled rows are a uniform sample, so
    the order is a uniform random permutation, and its first ``extra + positions.size``
    rows a uniform sample of queries."""
    rng = np.random.default_rng(SEED)
    rest = np.ones(count, dtype=bool)
    rest[positions] = False
    others = rng.permutation(np.flatnonzero(rest))
    sampled = rng.permutation(positions)
    order = np.concatenate([others[:extra], sampled, others[extra:]]).astype(np.int64)
    return order, np.searchsorted(positions, sampled).astype(np.int64)


def _gaussian_baseline(
    count: int,
    dimension: int,
    unit: bool,
    positions: IntMatrix,
    k: int,
    metric: str,
) -> tuple[float, estimators.Hubness]:
    """Relative contrast and hubness of Gaussian vectors of the collection's shape: the
    contrast over ``count`` rows from the sampled positions' first few, the hubness with
    every row a query among the first :data:`GAUSSIAN_HUBNESS_ROWS` of them."""
    rows = estimators.gaussian_rows(count, dimension, unit=unit, seed=SEED)
    some = positions[:: max(1, positions.size // _GAUSSIAN_CONTRAST_QUERIES)]
    some = some[:_GAUSSIAN_CONTRAST_QUERIES]
    contrast = estimators.relative_contrast(*estimators.distance_profile(rows, some))
    size = min(count, GAUSSIAN_HUBNESS_ROWS)  # build_report checked count > k + 1
    _, neighbours = estimators.nearest_others(rows[:size], np.arange(size), k=k, metric=metric)
    return contrast, estimators.hubness(neighbours, size)


def _centered_hubness(
    rows: FloatMatrix,
    queries: IntMatrix,
    k: int,
    metric: str,
    uncentered: estimators.Hubness,
) -> estimators.Hubness:
    """The hubness after subtracting the mean vector, the same way (on at most
    :data:`_CENTERED_QUERIES` of the queries when sampling): Euclidean distances do not
    change (the same figure), cosine and inner products do."""
    if metric == "l2":
        return uncentered
    centered = rows - rows.mean(axis=0, dtype=np.float64).astype(np.float32)
    some = queries if queries.size >= rows.shape[0] else queries[:_CENTERED_QUERIES]
    _, neighbours = estimators.nearest_others(centered, some, k=k, metric=metric)
    return estimators.hubness(neighbours, rows.shape[0])


def _top_hubs(hubness: estimators.Hubness, ids_of: Callable[[IntMatrix], list[str]]) -> list[Hub]:
    top = np.argsort(-hubness.counts, kind="stable")[:_TOP_HUBS]
    top = top[hubness.counts[top] > 0].astype(np.int64)
    occurrences = hubness.occurrences(top)
    ids = ids_of(top) if top.size else []
    return [
        Hub(id=i, occurrences=float(count), share=float(count / hubness.rows))
        for i, count in zip(ids, occurrences.tolist(), strict=True)
    ]


def _dimension_curve(
    rows: FloatMatrix,
    order: IntMatrix,
    k: int,
    metric: str,
    unit: bool,
    queries: int,
    distances: Any,
) -> list[DimensionPoint]:
    """TwoNN and Levina-Bickel at n/8, n/4, n/2 and n rows (scales of k rows or fewer
    left out), on the first rows of ``order``; scales whose scan would pass
    :data:`_DIMENSION_PAIRS` are left out, except the full one, which the hubness scan
    measured (its ``distances``, when its metric ranks as Euclidean distance)."""
    n = rows.shape[0]
    count = min(_DIMENSION_QUERIES, queries)
    neighbours = max(min(k, n - 1), 2)  # TwoNN needs two
    known: dict[int, Any] = {}
    if distances.shape[1] >= neighbours and (
        metric == "l2" or (unit and metric in ("cosine", "ip"))
    ):
        if metric == "l2":
            squared = distances[:count]
        elif metric == "cosine":
            squared = 2.0 * distances[:count]
        else:  # -<x, y> on unit rows: |x - y|^2 = 2 + 2 (-<x, y>)
            squared = 2.0 + 2.0 * distances[:count]
        known[n] = np.sqrt(np.maximum(squared, 0.0))
    scales = []
    budget = _DIMENSION_PAIRS
    for scale in (n // 8, n // 4, n // 2):
        cost = min(_DIMENSION_QUERIES, scale) * scale
        if scale > neighbours and scale not in scales and cost <= budget:
            scales.append(scale)
            budget -= cost
    scales.append(n)
    return estimators.dimension_curve(
        rows, order, scales=scales, queries=_DIMENSION_QUERIES, k=neighbours, known=known
    )


def _settled(curve: list[DimensionPoint]) -> bool:
    """Whether the TwoNN readings at the two largest scales agree within :data:`_SETTLED`."""
    if len(curve) < 2:
        return False
    before, last = curve[-2].two_nn, curve[-1].two_nn
    if not (math.isfinite(before) and math.isfinite(last)) or last <= 0:
        return False
    return abs(before - last) <= _SETTLED * last


def _duplicate_rule(rows: FloatMatrix, positions: IntMatrix, unit: bool) -> tuple[float, str]:
    """The near-duplicate radius (Euclidean) and the rule in words: on unit vectors the
    exact cosine, else a fixed share of the median distance to the nearest distinct row
    (the data's own scale, not its norms)."""
    if unit:
        similarity = 1 - DUPLICATE_FRACTION / 2
        return math.sqrt(DUPLICATE_FRACTION), f"cosine similarity >= {similarity:g}"
    sampled = positions[: min(positions.size, 1000)]
    squared, _ = estimators.nearest_others(rows, sampled, k=1, metric="l2")
    nearest = np.sqrt(np.maximum(squared[:, 0], 0.0))
    distinct = nearest[nearest > 0]
    median = float(np.median(distinct)) if distinct.size else 0.0
    radius = NEAR_DUPLICATE_SHARE * median
    return radius, (
        f"Euclidean distance <= {radius:.3g}, {NEAR_DUPLICATE_SHARE:g} x the median "
        f"nearest-neighbour distance {median:.3g}"
    )


def _near_duplicates(
    rows: FloatMatrix,
    ids_of: Callable[[IntMatrix], list[str]],
    scan: NeighbourScan,
    positions: IntMatrix,
    metric: str,
    norms: NormSummary,
) -> tuple[int, float | None, list[NearDuplicate]]:
    """(pairs, standard error or None when counted exactly, a few examples)."""
    n = rows.shape[0]
    counted = count_near_duplicates(rows, scan.radius) if n <= EXACT_DUPLICATE_ROWS else None
    if counted is not None:
        # The closest pairs: the most duplicate-like.
        picked = np.argsort(counted.distance, kind="stable")[:_DUPLICATE_EXAMPLES]
        firsts, seconds, lengths = (
            counted.first[picked],
            counted.second[picked],
            counted.distance[picked],
        )
        pairs, error = counted.pairs, None
    else:
        # Each sampled query's near-duplicates among all rows: n / (2 nq) times their sum
        # estimates the pairs (each pair has two ends), with the finite-population error.
        found = scan.near_duplicates.astype(np.float64)
        nq = found.size
        pairs = round(float(found.mean()) * n / 2)
        spread = float(found.std(ddof=1)) if nq > 1 else 0.0
        error = n / 2 * spread / math.sqrt(nq) * math.sqrt(max(0.0, 1 - nq / n))
        close = np.flatnonzero(scan.nearest <= scan.radius)[:_DUPLICATE_EXAMPLES]
        firsts, seconds = positions[close], scan.euclidean_neighbours[close, 0]
        lengths = scan.nearest[close]
    if not firsts.size:
        return pairs, error, []
    examples = [
        NearDuplicate(a, b, _metric_distance(float(length) ** 2, metric, norms.unit_length))
        for a, b, length in zip(ids_of(firsts), ids_of(seconds), lengths, strict=True)
    ]
    return pairs, error, examples


def scan_agreement(scan: Any) -> float:
    """Mean overlap of each query's k nearest under the metric and under cosine."""
    a: IntMatrix = scan.neighbours
    b: IntMatrix = scan.cosine_neighbours
    overlap = sum(np.intersect1d(x, y).size for x, y in zip(a, b, strict=True))
    return overlap / a.size if a.size else 1.0
