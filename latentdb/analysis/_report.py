"""The space report: a collection's geometry measured on a fixed-seed sample, and advice
that cites those measurements."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentdb.analysis import _estimators as estimators
from latentdb.analysis._estimators import DUPLICATE_FRACTION, FloatMatrix, IntMatrix, NormSummary
from latentdb.analysis._progress import Steps
from latentdb.analysis._reduction import Reduction, candidate_dimensions, reduction_trials
from latentdb.errors import InvalidArgumentError
from latentdb.index import EXACT_KIND

__all__ = [
    "Advice",
    "Hub",
    "IndexMeasurement",
    "NearDuplicate",
    "SpaceReport",
    "build_report",
    "sample_positions",
]

SEED = 0
# Queries for the PCA recall trials: 500 give recall@10 to about +-0.01.
_REDUCTION_QUERIES = 500
_TOP_HUBS = 5
_DUPLICATE_EXAMPLES = 5
# Rows from which index="auto" builds an ANN index: latentdb.index.AUTO_MIN_ROWS, which
# this layer (below index/) cannot import; tests/analysis/test_report.py checks they agree.
AUTO_ANN_ROWS = 20_000


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
        occurrences: Sampled queries whose k nearest neighbours include it.
        share: ``occurrences`` over the number of sampled queries.
    """

    id: str
    occurrences: int
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
        recall: recall@10 measured now against an exact scan.
        recall_target: The collection's target.
        qps: Queries per second of the default search, one at a time.
        exact_qps: Queries per second of an exact scan, one at a time.
        source: Where ``evaluate`` took its queries.
        pending: Rows outside the ANN index (in the exact growing segment).
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


@dataclass(frozen=True)
class Advice:
    """One recommendation and the measurements behind it.

    Attributes:
        topic: "metric", "index", "reduction", "hubness" or "duplicates".
        text: What to do, and why, in a sentence or two.
        evidence: The measured figures the text cites, by name.
    """

    topic: str
    text: str
    evidence: dict[str, float | str]


@dataclass(frozen=True)
class SpaceReport:
    """A collection's latent space, measured (:meth:`Collection.analyze`).

    Attributes:
        collection, model, metric, dimension, count: What was measured.
        sample: Rows used as queries (fixed seed ``seed``); ``k``: neighbours per query.
        norms: Lengths of all stored vectors.
        relative_contrast: Mean distance to the farthest row over mean distance to the
            nearest other row, over the sampled queries (Euclidean).
        gaussian_relative_contrast: The same for i.i.d. Gaussian vectors of the same
            dimension and count: how much structure the space has beyond noise.
        intrinsic_dimension: Estimate by ``intrinsic_dimension_estimator``.
        levina_bickel_dimension: A second opinion, Levina-Bickel MLE with k neighbours.
        hubness_skewness: Skewness of the k-occurrence among the sampled rows.
        gaussian_hubness_skewness: The same for Gaussian vectors of the same dimension.
        centered_hubness_skewness: The same after subtracting the sample's mean.
        top_hubs: Records most often among the sampled queries' k nearest neighbours.
        near_duplicate_pairs: Pairs within ``near_duplicate_rule``; counted exactly when
            the sample is every row, else estimated from the sample
            (``near_duplicates_estimated``).
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
    hubness_skewness: float
    gaussian_hubness_skewness: float
    centered_hubness_skewness: float
    top_hubs: list[Hub]
    near_duplicate_pairs: int
    near_duplicates_estimated: bool
    near_duplicate_rule: str
    near_duplicate_examples: list[NearDuplicate]
    index: IndexMeasurement | None
    reductions: list[Reduction]
    advice: list[Advice] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready dicts and lists (``inf`` and ``nan`` become None)."""
        return _finite(dataclasses.asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpaceReport:
        """Rebuild a report from :meth:`to_dict`'s output."""
        values: dict[str, Any] = {
            name: (float("nan") if data[name] is None else data[name])
            for name in data
            if name in {f.name for f in dataclasses.fields(cls)}
        }
        values["norms"] = NormSummary(**data["norms"])
        values["top_hubs"] = [Hub(**hub) for hub in data["top_hubs"]]
        values["near_duplicate_examples"] = [
            NearDuplicate(**pair) for pair in data["near_duplicate_examples"]
        ]
        values["index"] = None if data["index"] is None else IndexMeasurement(**data["index"])
        values["reductions"] = [Reduction(**trial) for trial in data["reductions"]]
        values["advice"] = [Advice(**item) for item in data["advice"]]
        return cls(**values)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
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
        sample: Rows used as queries (fixed seed).
        k: Neighbours per query (k-occurrence, hubs, recall).
        measure_index: Measures the collection's index now (``evaluate``), or None.
        recall_target: The recall the advice aims for.
        steps: Progress reporting, or None.

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
    steps.advance("norms")
    norms = estimators.norm_summary(rows)
    positions = sample_positions(n, sample)
    nq = positions.size
    steps.advance(f"neighbours of {nq:,} sampled rows among {n:,}")
    scan = estimators.scan_neighbours(rows, positions, k=k, metric=metric)
    steps.advance("Gaussian baseline")
    gaussian_contrast, gaussian_skew = estimators.gaussian_like(
        n, d, unit=norms.unit_length, queries=nq, seed=SEED
    )
    steps.advance("hubness")
    hub_k = min(k, nq - 1)
    sampled = np.ascontiguousarray(rows[positions])
    skew = estimators.hubness_skewness(estimators.k_occurrence(sampled, k=hub_k, metric=metric))
    centered = sampled - sampled.mean(axis=0, keepdims=True)
    centered_skew = estimators.hubness_skewness(
        estimators.k_occurrence(centered, k=hub_k, metric=metric)
    )
    counts = np.bincount(scan.neighbours.ravel(), minlength=n)
    top = np.argsort(-counts, kind="stable")[:_TOP_HUBS]
    top = top[counts[top] > 0]
    hub_ids = ids_of(top.astype(np.int64))
    hubs = [
        Hub(id=i, occurrences=int(counts[p]), share=float(counts[p] / nq))
        for i, p in zip(hub_ids, top, strict=True)
    ]
    # Near-duplicates: each pair is seen from both ends when both are sampled.
    found = int(scan.near_duplicates.sum())
    estimated = nq < n
    pairs = round(found * n / nq / 2) if estimated else found // 2
    close = np.flatnonzero(scan.nearest <= scan.radius)[:_DUPLICATE_EXAMPLES]
    example_ids = ids_of(positions[close]) if close.size else []
    partner_ids = ids_of(scan.euclidean_neighbours[close, 0]) if close.size else []
    examples = [
        NearDuplicate(
            a, b, _metric_distance(float(scan.nearest[p]) ** 2, metric, norms.unit_length)
        )
        for a, b, p in zip(example_ids, partner_ids, close, strict=True)
    ]
    if norms.unit_length:
        rule = f"cosine similarity >= {1 - DUPLICATE_FRACTION / 2:g}"
    else:
        rule = f"squared L2 distance <= {DUPLICATE_FRACTION:g} x mean squared norm"
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
        relative_contrast=estimators.relative_contrast(scan.nearest, scan.farthest),
        gaussian_relative_contrast=gaussian_contrast,
        intrinsic_dimension=estimators.two_nn(scan.nearest, scan.second),
        intrinsic_dimension_estimator="TwoNN (Facco et al. 2017)",
        levina_bickel_dimension=_levina_bickel(rows, positions, scan.euclidean_neighbours),
        hubness_skewness=skew,
        gaussian_hubness_skewness=gaussian_skew,
        centered_hubness_skewness=centered_skew,
        top_hubs=hubs,
        near_duplicate_pairs=pairs,
        near_duplicates_estimated=estimated,
        near_duplicate_rule=rule,
        near_duplicate_examples=examples,
        index=index,
        reductions=reductions,
    )
    advice = _advice(report, scan_agreement(scan), target)
    seconds = time.perf_counter() - started
    steps.advance("done")
    return dataclasses.replace(report, advice=advice, seconds=seconds)


def _levina_bickel(rows: FloatMatrix, positions: IntMatrix, neighbours: IntMatrix) -> float:
    if neighbours.shape[1] < 3:
        return float("nan")
    vectors = rows[neighbours]  # (nq, k, d)
    distances = np.sqrt(((vectors - rows[positions][:, None, :]) ** 2).sum(axis=2))
    return estimators.levina_bickel(distances)


def scan_agreement(scan: Any) -> float:
    """Mean overlap of each query's k nearest under the metric and under cosine."""
    a: IntMatrix = scan.neighbours
    b: IntMatrix = scan.cosine_neighbours
    overlap = sum(np.intersect1d(x, y).size for x, y in zip(a, b, strict=True))
    return overlap / a.size if a.size else 1.0


def _mib(size: float) -> str:
    return f"{size / 2**20:,.0f} MiB"


def _advice(report: SpaceReport, agreement: float, target: float) -> list[Advice]:
    items = [_metric_advice(report, agreement)]
    if report.index is not None:
        items.append(_index_advice(report.index, report.count))
    items.append(_reduction_advice(report, target))
    if report.hubness_skewness > 1.0 and report.top_hubs:
        top = report.top_hubs[0]
        expected = report.k / report.count * report.sample
        text = (
            f"hubs: record {top.id!r} is among the {report.k} nearest of "
            f"{top.share:.1%} of sampled queries (uniform would be "
            f"{expected / report.sample:.2%}); k-occurrence skewness "
            f"{report.hubness_skewness:.2f}"
        )
        if report.centered_hubness_skewness < report.hubness_skewness - 0.3:
            text += (
                f", {report.centered_hubness_skewness:.2f} after subtracting the mean "
                "vector: centering the vectors before indexing spreads results more evenly"
            )
        items.append(
            Advice(
                "hubness",
                text,
                {
                    "skewness": report.hubness_skewness,
                    "centered_skewness": report.centered_hubness_skewness,
                    "top_hub_share": top.share,
                },
            )
        )
    if report.near_duplicate_pairs:
        about = "about " if report.near_duplicates_estimated else ""
        items.append(
            Advice(
                "duplicates",
                f"{about}{report.near_duplicate_pairs:,} near-duplicate pairs "
                f"({report.near_duplicate_rule}): they fill result lists with the same "
                "answer; deduplicate before adding, or filter them at query time",
                {"pairs": report.near_duplicate_pairs},
            )
        )
    return items


def _metric_advice(report: SpaceReport, agreement: float) -> Advice:
    norms = report.norms
    evidence: dict[str, float | str] = {
        "norm_min": norms.min,
        "norm_max": norms.max,
        "top_k_agreement_with_cosine": agreement,
    }
    if norms.unit_length:
        text = (
            f"vectors are unit length (norms {norms.min:.4f}..{norms.max:.4f}): cosine, "
            "inner product and L2 rank alike"
        )
        if report.metric == "l2":
            text += "; metric='cosine' or 'ip' gives the same answers"
        return Advice("metric", text, evidence)
    spread = norms.std / norms.mean if norms.mean > 0 else 0.0
    evidence["norm_cv"] = spread
    text = (
        f"norms vary (mean {norms.mean:.3g}, std {norms.std:.3g}): under metric "
        f"{report.metric!r} the top {report.k} agree with cosine's on {agreement:.0%} "
        "of places"
    )
    if agreement < 0.9:
        text += (
            "; if the model was trained for cosine similarity (most sentence encoders "
            "are), use metric='cosine', which normalizes the vectors"
        )
    return Advice("metric", text, evidence)


def _index_advice(index: IndexMeasurement, count: int) -> Advice:
    evidence: dict[str, float | str] = {
        "kind": index.kind,
        "spec": index.spec,
        "recall": index.recall,
        "recall_target": index.recall_target,
        "qps": index.qps,
        "exact_qps": index.exact_qps,
        **{name: float(value) for name, value in index.params.items()},
    }
    if index.kind == EXACT_KIND:
        # One exact scan, timed twice by evaluate() (as "the index" and as "exact"):
        # only the second, warm figure is quoted.
        text = (
            f"exact search over {count:,} rows answers {index.exact_qps:,.0f} queries/s "
            f"one at a time at recall 1.0; {_why_exact(index.spec, count)}"
        )
        return Advice("index", text, evidence)
    params = ", ".join(f"{name}={value}" for name, value in index.params.items())
    text = (
        f"{index.kind} ({params}) measured recall@10 {index.recall:.3f} on "
        f"{index.source} against target {index.recall_target:.2f}, at "
        f"{index.qps:,.0f} queries/s vs {index.exact_qps:,.0f} exact"
    )
    if index.recall < index.recall_target:
        text += (
            "; below target: set_recall_target() again to re-tune, or pass "
            "params= with a wider search"
        )
    if index.pending:
        text += f"; {index.pending:,} rows wait outside the index (optimize() adds them)"
    return Advice("index", text, evidence)


def _why_exact(spec: str, count: int) -> str:
    """Why a collection whose index is "flat" has no ANN index, and when it gets one."""
    if spec == "flat":
        if count >= AUTO_ANN_ROWS:
            return (
                "at this size an ANN index (index='auto' or 'hnsw', then optimize()) "
                "trades a little recall for far more speed"
            )
        return f"index='flat' keeps it so (below {AUTO_ANN_ROWS:,} rows a scan beats an ANN index)"
    if spec == "auto":
        if count < AUTO_ANN_ROWS:
            return (
                f"index='auto' stays exact below {AUTO_ANN_ROWS:,} rows (per shard when "
                "sharded), where a scan beats building an ANN index"
            )
        return (
            "index='auto' builds its ANN index when the growing segment seals (each "
            f"shard at {AUTO_ANN_ROWS:,} rows when sharded), or now with optimize()"
        )
    return f"no {spec} segment is built yet: optimize() builds one now"


def _reduction_advice(report: SpaceReport, target: float) -> Advice:
    """What PCA to fewer dimensions would keep, and whether ``reduce=`` can use it now:
    it shrinks an ANN index, so a collection searched exactly has nothing to reduce."""
    trials = report.reductions
    evidence: dict[str, float | str] = {"intrinsic_dimension": report.intrinsic_dimension}
    for trial in trials:
        evidence[f"recall_at_{trial.dimension}"] = trial.recall
        evidence[f"recall_reranked_at_{trial.dimension}"] = trial.recall_reranked
    if not trials:
        return Advice("reduction", "too few records or dimensions to try PCA", evidence)
    index = report.index
    if index is not None and index.kind == "flat":
        evidence["index_kind"] = index.kind
        return Advice("reduction", _no_index_to_reduce(report, index, target), evidence)
    plain = [t for t in trials if t.recall >= target]
    reranked = [t for t in trials if t.recall_reranked >= target]
    if not plain and not reranked:
        widest = max(trials, key=lambda t: t.dimension)
        text = (
            f"keep all {report.dimension} dimensions: PCA to {widest.dimension} gives "
            f"recall@{report.k} {widest.recall:.3f} ({widest.recall_reranked:.3f} "
            f"re-ranked), under the target {target:.2f}"
        )
        return Advice("reduction", text, evidence)
    # The fewest dimensions that reach the target, without re-ranking if any do.
    best = min(plain or reranked, key=lambda t: t.dimension)
    if plain:
        full = report.count * report.dimension * 4
        text = (
            f"PCA to {best.dimension} dimensions keeps recall@{report.k} "
            f"{best.recall:.3f} (>= {target:.2f}) and saves {_mib(best.memory_saved)} of "
            f"{_mib(full)} of vectors: create_collection(..., reduce={best.dimension}), or "
            f"db.migrate(name, reduce={best.dimension}) for this collection"
        )
    else:
        text = (
            f"PCA alone loses recall (to {best.dimension}: {best.recall:.3f}), but "
            f"re-ranking {best.rerank * report.k} candidates with the original vectors "
            f"gives {best.recall_reranked:.3f} (>= {target:.2f}), which is what "
            f"reduce={best.dimension} does (db.migrate(name, reduce={best.dimension}) for "
            f"this collection): its index of {best.dimension}-d vectors saves "
            f"{_mib(best.memory_saved)} of memory, the originals staying on disk"
        )
    return Advice("reduction", text, evidence)


def _no_index_to_reduce(report: SpaceReport, index: IndexMeasurement, target: float) -> str:
    """The reduction advice of a collection searched exactly: no ``reduce=`` now (it
    shrinks an ANN index, and there is none), and what the PCA trials found meanwhile."""
    if index.spec == "flat":
        when = "index='flat' never builds one"
    elif index.spec == "auto":
        when = (
            f"index='auto' builds one from {AUTO_ANN_ROWS:,} rows; measure again then, "
            "as the PCA of a larger collection differs"
        )
    else:
        when = f"the {index.spec} index is not built yet (optimize() builds it)"
    text = (
        f"no reduce= for now: the {report.count:,} rows are searched exactly, and reduce= "
        f"only shrinks an ANN index ({when})"
    )
    good = [t for t in report.reductions if max(t.recall, t.recall_reranked) >= target]
    if good:
        best = min(good, key=lambda t: t.dimension)
        return text + (
            f". At this size PCA to {best.dimension} dimensions keeps recall@{report.k} "
            f"{best.recall:.3f} alone, {best.recall_reranked:.3f} with "
            f"{best.rerank * report.k} candidates re-ranked (target {target:.2f})"
        )
    widest = max(report.reductions, key=lambda t: t.dimension)
    return text + (
        f". At this size PCA to {widest.dimension} dimensions gives recall@{report.k} "
        f"{widest.recall:.3f} ({widest.recall_reranked:.3f} re-ranked), under the target "
        f"{target:.2f}"
    )
