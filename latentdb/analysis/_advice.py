"""The space report's advice: each item cites the report's figures, and none advises what
the engine would not build at the collection's size (the thresholds are the index
policy's own, :data:`latentdb.index.AUTO_MIN_ROWS`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from latentdb.index import AUTO_MIN_ROWS, EXACT_KIND

if TYPE_CHECKING:
    from latentdb.analysis._report import IndexMeasurement, SpaceReport

__all__ = ["Advice", "advise", "index_headline"]


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


def index_headline(index: IndexMeasurement) -> tuple[str, str]:
    """The index's line in the report: (figure, what it is). Recall on rows inside the
    index is never given as the index's recall: they find themselves (0.996 there against
    0.961 on held-out queries, issue 19)."""
    params = "".join(f" {name}={value}" for name, value in index.params.items())
    speeds = f"{index.qps:,.0f} q/s, exact scan {index.exact_qps:,.0f} q/s"
    if index.kind == EXACT_KIND:
        # One scan, which evaluate() times twice (as the index and as exact): one figure.
        return "exact", (
            f"flat scan of every row (index={index.spec!r}); "
            f"{index.exact_qps:,.0f} q/s one at a time"
        )
    setting = f"{index.kind}{params}, target {index.recall_target:.2f}"
    if index.live_recall is not None:
        setting += (
            f"; {index.live_recall:.3f} on {index.live_queries:,} queries users sent "
            "(recorded, live recall)"
        )
    if index.source != "indexed rows":
        return f"recall {index.recall:.3f}", f"{setting}, on {index.source}; {speeds}"
    if index.tuned_recall is not None:
        return f"recall {index.tuned_recall:.3f}", (
            f"{setting}, measured at tuning on rows held out of the build (none are out "
            f"now; rows inside the index read {index.recall:.3f}, high: they find "
            f"themselves); {speeds}"
        )
    return f"indexed-row recall {index.recall:.3f}", (
        f"{setting}; no held-out rows to measure on: rows inside the index find "
        "themselves, so this reads high and is not the recall of new queries "
        f"(evaluate(queries) with your own gives that); {speeds}"
    )


def advise(report: SpaceReport, agreement: float, target: float) -> list[Advice]:
    """The advice of ``report``: metric, index, reduction, and hubness and duplicates
    where they call for action. ``agreement``: the metric's top k against cosine's."""
    items = [_metric_advice(report, agreement)]
    if report.index is not None:
        items.append(_index_advice(report.index, report.count))
    items.append(_reduction_advice(report, target))
    if report.hubness_low > 1.0 and report.top_hubs:
        items.append(_hubness_advice(report))
    if report.near_duplicate_pairs:
        if report.near_duplicates_estimated:
            counted = (
                f"about {report.near_duplicate_pairs:,} (± {report.near_duplicate_error:,.0f}, "
                "estimated from the sampled queries)"
            )
        else:
            counted = f"{report.near_duplicate_pairs:,} (every pair counted)"
        items.append(
            Advice(
                "duplicates",
                f"{counted} near-duplicate pairs ({report.near_duplicate_rule}): they fill "
                "result lists with the same answer; deduplicate before adding, or filter "
                "them at query time",
                {
                    "pairs": report.near_duplicate_pairs,
                    "error": report.near_duplicate_error,
                    "radius": report.near_duplicate_radius,
                },
            )
        )
    return items


def _hubness_advice(report: SpaceReport) -> Advice:
    top = report.top_hubs[0]
    exact = report.hubness_queries >= report.count
    interval = (
        "" if exact else f" (95% interval {report.hubness_low:.2f}-{report.hubness_high:.2f})"
    )
    text = (
        f"hubs: record {top.id!r} is among the {report.k} nearest of {top.share:.2%} of "
        f"all rows (uniform would be {report.k / report.count:.3%}); k-occurrence "
        f"skewness {report.hubness_skewness:.2f}{interval} over all {report.count:,} rows, "
        f"against {report.gaussian_hubness_skewness:.2f} for Gaussian vectors of the "
        f"same dimension (every row a query among "
        f"{report.gaussian_hubness_rows or report.count:,})"
    )
    # Centering helps only where it clearly lowers the skewness: both intervals apart.
    if report.centered_hubness_high < report.hubness_low - 0.3:
        text += (
            f"; {report.centered_hubness_skewness:.2f} after subtracting the mean vector: "
            "centering the vectors before indexing spreads results more evenly"
        )
    return Advice(
        "hubness",
        text,
        {
            "skewness": report.hubness_skewness,
            "skewness_low": report.hubness_low,
            "skewness_high": report.hubness_high,
            "gaussian_skewness": report.gaussian_hubness_skewness,
            "centered_skewness": report.centered_hubness_skewness,
            "top_hub_share": top.share,
        },
    )


def _mib(size: float) -> str:
    return f"{size / 2**20:,.0f} MiB"


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
        "recall_source": index.source,
        "recall_target": index.recall_target,
        "qps": index.qps,
        "exact_qps": index.exact_qps,
        **{name: float(value) for name, value in index.params.items()},
    }
    if index.tuned_recall is not None:
        evidence["tuned_recall"] = index.tuned_recall
    if index.kind == EXACT_KIND:
        # One exact scan, timed twice by evaluate() (as "the index" and as "exact"):
        # only the second, warm figure is quoted.
        text = (
            f"exact search over {count:,} rows answers {index.exact_qps:,.0f} queries/s "
            f"one at a time at recall 1.0; {_why_exact(index.spec, count)}"
        )
        return Advice("index", text, evidence)
    params = ", ".join(f"{name}={value}" for name, value in index.params.items())
    recall = index.recall
    if index.source != "indexed rows":
        said = f"measured recall@10 {recall:.3f} on {index.source}"
    elif index.tuned_recall is not None:
        recall = index.tuned_recall
        said = (
            f"was tuned to recall@10 {recall:.3f} on rows held out of the build (rows "
            f"inside it read {index.recall:.3f}: they find themselves)"
        )
    else:
        said = (
            f"reads recall@10 {recall:.3f} on indexed rows only, which find themselves: "
            "not the recall of new queries; evaluate(queries) with your own measures it"
        )
    text = (
        f"{index.kind} ({params}) {said}, against target {index.recall_target:.2f}, at "
        f"{index.qps:,.0f} queries/s vs {index.exact_qps:,.0f} exact"
    )
    if recall < index.recall_target:
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
        if count >= AUTO_MIN_ROWS:
            return (
                "at this size an ANN index (index='auto' or 'hnsw', then optimize()) "
                "trades a little recall for far more speed"
            )
        return f"index='flat' keeps it so (below {AUTO_MIN_ROWS:,} rows a scan beats an ANN index)"
    if spec == "auto":
        if count < AUTO_MIN_ROWS:
            return (
                f"index='auto' stays exact below {AUTO_MIN_ROWS:,} rows (per shard when "
                "sharded), where a scan beats building an ANN index"
            )
        return (
            "index='auto' builds its ANN index when the growing segment seals (each "
            f"shard at {AUTO_MIN_ROWS:,} rows when sharded), or now with optimize()"
        )
    return f"no {spec} segment is built yet: optimize() builds one now"


def _dimension_note(report: SpaceReport) -> str:
    """The intrinsic dimension as the advice cites it: a range over scales, never one
    figure (it reads lower the more rows there are)."""
    low, high = report.dimension_range()
    curve = report.dimension_curve
    if not curve:
        return "intrinsic dimension not measured"
    scales = f"{curve[0].rows:,}-{curve[-1].rows:,} rows" if len(curve) > 1 else "all rows"
    settled = "" if report.dimension_settled else ", not settled at this size"
    return (
        f"intrinsic dimension {low:.1f}-{high:.1f} by TwoNN over {scales}{settled}, "
        f"of {report.dimension}"
    )


def _reduction_advice(report: SpaceReport, target: float) -> Advice:
    """What PCA to fewer dimensions would keep, and whether ``reduce=`` can use it now:
    it shrinks an ANN index, so a collection searched exactly (or that index='auto' keeps
    exact at this size) has nothing to reduce."""
    trials = report.reductions
    low, high = report.dimension_range()
    evidence: dict[str, float | str] = {
        "intrinsic_dimension_low": low,
        "intrinsic_dimension_high": high,
    }
    for trial in trials:
        evidence[f"recall_at_{trial.dimension}"] = trial.recall
        evidence[f"recall_reranked_at_{trial.dimension}"] = trial.recall_reranked
    if not trials:
        return Advice("reduction", "too few records or dimensions to try PCA", evidence)
    index = report.index
    exact_now = (index is not None and index.kind == EXACT_KIND) or (
        index is None and report.count < AUTO_MIN_ROWS
    )
    if exact_now:
        evidence["index_kind"] = EXACT_KIND
        text = _no_index_to_reduce(report, None if index is None else index.spec, target)
        return Advice("reduction", text, evidence)
    dimension = _dimension_note(report)
    plain = [t for t in trials if t.recall >= target]
    reranked = [t for t in trials if t.recall_reranked >= target]
    if not plain and not reranked:
        widest = max(trials, key=lambda t: t.dimension)
        text = (
            f"keep all {report.dimension} dimensions: PCA to {widest.dimension} gives "
            f"recall@{report.k} {widest.recall:.3f} ({widest.recall_reranked:.3f} "
            f"re-ranked), under the target {target:.2f} ({dimension})"
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
            f"db.migrate(name, reduce={best.dimension}) for this collection ({dimension})"
        )
    else:
        text = (
            f"PCA alone loses recall (to {best.dimension}: {best.recall:.3f}), but "
            f"re-ranking {best.rerank * report.k} candidates with the original vectors "
            f"gives {best.recall_reranked:.3f} (>= {target:.2f}), which is what "
            f"reduce={best.dimension} does (db.migrate(name, reduce={best.dimension}) for "
            f"this collection): its index of {best.dimension}-d vectors saves "
            f"{_mib(best.memory_saved)} of memory, the originals staying on disk "
            f"({dimension})"
        )
    return Advice("reduction", text, evidence)


def _no_index_to_reduce(report: SpaceReport, spec: str | None, target: float) -> str:
    """The reduction advice of a collection searched exactly: no ``reduce=`` now (it
    shrinks an ANN index, and there is none), and what the PCA trials found meanwhile.
    ``spec``: the index configured, None when not measured (the default, 'auto')."""
    if spec == "flat":
        when = "index='flat' never builds one"
    elif spec in ("auto", None):
        when = (
            f"index='auto' builds one from {AUTO_MIN_ROWS:,} rows; measure again then, "
            "as the PCA of a larger collection differs"
        )
    else:
        when = f"the {spec} index is not built yet (optimize() builds it)"
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
            f"{best.rerank * report.k} candidates re-ranked (target {target:.2f}; "
            f"{_dimension_note(report)})"
        )
    widest = max(report.reductions, key=lambda t: t.dimension)
    return text + (
        f". At this size PCA to {widest.dimension} dimensions gives recall@{report.k} "
        f"{widest.recall:.3f} ({widest.recall_reranked:.3f} re-ranked), under the target "
        f"{target:.2f} ({_dimension_note(report)})"
    )
