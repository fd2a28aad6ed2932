"""Drift between two latent spaces: how much the neighbourhoods of the same records
change from one collection to another (a collection and its re-embedded version,
before the alias switches).

Every figure is measured on the records both collections hold (matched by id):

- overlap@k: a fixed-seed sample of the shared records are queries; each one's exact
  top-k among the shared records in A and in B, and the share they have in common;
- Spearman rank correlation of each sampled record's distances in A and in B, to the
  union of its top-k in A and in B (does the neighbourhood keep its order?) and to
  a fixed set of random shared records (does the space keep its large-scale shape?);
- linear CKA (Kornblith et al. 2019) of the two spaces over all shared records: 1 when
  one is a rotation and scaling of the other;
- the residual of an orthogonal Procrustes fit of A onto B (both centred and scaled to
  unit Frobenius norm, the disparity of ``scipy.spatial.procrustes``): 0 when one is a
  rotation and scaling of the other, 1 when nothing of one explains the other;
- the sampled records whose neighbourhoods change most, with their documents.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.analysis._progress import Steps
from latentdb.analysis._report import json_safe
from latentdb.errors import InvalidArgumentError
from latentdb.index import distance_matrix, exact_search, pair_distances
from latentdb.space import Metric

__all__ = [
    "ChangedRecord",
    "ComparedSpace",
    "SpaceComparison",
    "compare_spaces",
    "shared_positions",
]

FloatMatrix = npt.NDArray[np.float32]
IntMatrix = npt.NDArray[np.int64]

SEED = 0
# Records listed as changing most.
_CHANGED = 10
# Random shared records every sampled record's distances are ranked against for the
# global rank correlation: 256 give each record's Spearman to about +-0.06 and the
# mean over 2,000 records to well under 0.01.
_REFERENCES = 256
# Query x candidate x dimension floats gathered at a time for the neighbourhoods'
# distances (16 MiB).
_GATHER_FLOATS = 1 << 22
# Rows per block of the Gram products (float64: 8,192 x 384 is 25 MB).
_GRAM_BLOCK = 8192


@dataclass(frozen=True)
class ChangedRecord:
    """A sampled record whose neighbourhood changes much between the two spaces.

    Attributes:
        id: The record's id.
        overlap: Share of its top-k in A that is also its top-k in B.
        distance_correlation: Spearman correlation of its distances in A and in B to
            the union of its two top-k lists.
        document: Its document in A (in B when A has none), or None.
        neighbours_a, neighbours_b: The ids of its top-k in A and in B, nearest first.
    """

    id: str
    overlap: float
    distance_correlation: float
    document: str | None
    neighbours_a: list[str]
    neighbours_b: list[str]


@dataclass(frozen=True)
class ComparedSpace:
    """One side of a comparison (:func:`compare_spaces`).

    Attributes:
        collection, model, metric: What the vectors are; ``metric`` decides the
            neighbours and distances on this side.
        count: Records in the collection, shared with the other side or not.
        rows: float32 (shared, d): the vectors of the shared records, in the order of
            the ids given to :func:`compare_spaces`.
    """

    collection: str
    model: str
    metric: Metric
    count: int
    rows: FloatMatrix


@dataclass(frozen=True)
class SpaceComparison:
    """How much neighbourhoods change from collection ``a`` to collection ``b``
    (:meth:`Database.compare`).

    Attributes:
        a, b: The collections compared (their own names).
        model_a, model_b, dimension_a, dimension_b, metric_a, metric_b: Their spaces.
        count_a, count_b: Records in each.
        shared: Records both hold (by id); every figure is measured among them.
        sample: Shared records used as queries (fixed seed ``seed``); ``k``: neighbours.
        overlap: Mean overlap@k: the share of a sampled record's k nearest shared
            records in A that are also among its k nearest in B (1 = same top-k).
        overlap_error: Half-width of the overlap's 95% confidence interval over the
            sample (1.96 standard errors).
        overlap_counts: ``overlap_counts[j]``: sampled records with exactly j of k
            neighbours in common (k + 1 entries).
        distance_correlation: Mean Spearman correlation of each sampled record's
            distances in A and in B to the union of its top-k in A and in B.
        global_distance_correlation: Mean Spearman correlation of each sampled record's
            distances in A and in B to ``references`` fixed random shared records.
        references: Records of that fixed set.
        cka: Linear CKA of A and B over all shared records (1 = same up to rotation
            and scale; Kornblith et al. 2019).
        procrustes_residual: Sum of squared residuals of the best rotation (and
            scaling) of A onto B, both centred and scaled to unit Frobenius norm, over
            all shared records (0 = same up to rotation and scale, at most 1).
        padding: How unequal dimensions were matched for the fit, or None.
        changed: The sampled records whose neighbourhoods change most, least overlap
            first.
        verdict: The overlap in one sentence.
        seconds: Time the comparison took.
    """

    a: str
    b: str
    model_a: str
    model_b: str
    dimension_a: int
    dimension_b: int
    metric_a: str
    metric_b: str
    count_a: int
    count_b: int
    shared: int
    sample: int
    k: int
    seed: int
    overlap: float
    overlap_error: float
    overlap_counts: list[int]
    distance_correlation: float
    global_distance_correlation: float
    references: int
    cka: float
    procrustes_residual: float
    padding: str | None
    changed: list[ChangedRecord] = field(default_factory=list)
    verdict: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The comparison as JSON-ready dicts and lists (``nan`` becomes None)."""
        return json_safe(dataclasses.asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpaceComparison:
        """Rebuild a comparison from :meth:`to_dict`'s output."""
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {name: data[name] for name in data if name in names}
        for name in _FIGURES:
            values[name] = _number(values[name])
        values["changed"] = [
            ChangedRecord(
                **{**record, "distance_correlation": _number(record["distance_correlation"])}
            )
            for record in data.get("changed", [])
        ]
        return cls(**values)

    def to_markdown(self) -> str:
        """The comparison as a markdown section: the verdict, the figures, and the
        records that change most."""
        k = self.k
        kept_all = self.overlap_counts[k] / self.sample if self.sample else 0.0
        lines = [
            f"## {self.a} -> {self.b}: {self.verdict}",
            "",
            f"| | {self.a} | {self.b} |",
            "|---|---|---|",
            f"| model | {self.model_a} | {self.model_b} |",
            f"| dimension | {self.dimension_a} | {self.dimension_b} |",
            f"| metric | {self.metric_a} | {self.metric_b} |",
            f"| records | {self.count_a:,} | {self.count_b:,} |",
            "",
            f"{self.shared:,} ids in both; {self.sample:,} of them (seed {self.seed}) are "
            f"queries, each one's exact top-{k} taken among the shared records in each "
            f"space. Measured in {self.seconds:.1f} s.",
            "",
            "| measure | value | meaning |",
            "|---|---|---|",
            f"| overlap@{k} | {self.overlap:.3f} +- {self.overlap_error:.3f} | share of a "
            f"record's top-{k} in {self.a} that stays in its top-{k} in {self.b} |",
            f"| whole top-{k} kept | {kept_all:.1%} | sampled records with all {k} "
            "neighbours in common |",
            f"| Spearman, neighbourhood | {_shown(self.distance_correlation)} | rank "
            f"correlation of its distances to the union of its top-{k} in both spaces |",
            f"| Spearman, global | {_shown(self.global_distance_correlation)} | rank "
            f"correlation of its distances to {self.references} fixed random shared records |",
            f"| linear CKA | {_shown(self.cka)} | 1: the same space up to rotation and scale |",
            f"| Procrustes residual | {_shown(self.procrustes_residual)} | 0: a rotation "
            "(and scaling) maps one onto the other"
            + (f"; {self.padding}" if self.padding else "")
            + " |",
        ]
        if self.changed:
            lines += [
                "",
                "### Records whose neighbourhoods change most",
                "",
                f"| id | overlap@{k} | document |",
                "|---|---|---|",
            ]
            for record in self.changed:
                document = _cell(record.document)
                lines.append(f"| {_cell(record.id)} | {record.overlap:.2f} | {document} |")
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.to_markdown()


# The fields that may be nan (sent as None).
_FIGURES = (
    "overlap",
    "overlap_error",
    "distance_correlation",
    "global_distance_correlation",
    "cka",
    "procrustes_residual",
)


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _shown(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _cell(text: str | None, width: int = 80) -> str:
    """Text fit for one markdown table cell."""
    if text is None:
        return ""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _sample(count: int, sample: int, *, seed: int) -> IntMatrix:
    """``sample`` distinct positions of ``count``, ascending, by ``seed`` (all of them
    when ``sample >= count``): the space report's sampling, kept here so that the two
    analyses do not depend on each other's modules."""
    if sample >= count:
        return np.arange(count, dtype=np.int64)
    picked = np.random.default_rng(seed).choice(count, size=sample, replace=False)
    return np.sort(picked).astype(np.int64)


def shared_positions(
    ids_a: Sequence[str], ids_b: Sequence[str]
) -> tuple[list[str], IntMatrix, IntMatrix]:
    """The ids both lists hold, sorted (so that the sample does not depend on the
    order a transport lists records in), and their positions in each list.

    Returns:
        (ids, positions in ``ids_a`` (m,), positions in ``ids_b`` (m,)).
    """
    where_b = {record_id: position for position, record_id in enumerate(ids_b)}
    pairs = sorted(
        (record_id, position, where_b[record_id])
        for position, record_id in enumerate(ids_a)
        if record_id in where_b
    )
    ids = [record_id for record_id, _, _ in pairs]
    positions_a = np.array([p for _, p, _ in pairs], dtype=np.int64)
    positions_b = np.array([p for _, _, p in pairs], dtype=np.int64)
    return ids, positions_a, positions_b


def compare_spaces(
    a: ComparedSpace,
    b: ComparedSpace,
    *,
    ids: Sequence[str],
    sample: int = 2000,
    k: int = 10,
    seed: int = SEED,
    documents_of: Callable[[list[str]], list[str | None]] | None = None,
    steps: Steps | None = None,
) -> SpaceComparison:
    """Measure how much neighbourhoods change from space ``a`` to space ``b``.

    Args:
        a, b: The two sides; ``a.rows`` and ``b.rows`` hold the same records, row i
            being ``ids[i]`` in both (their dimensions may differ).
        ids: The shared records' ids (m,).
        sample: Shared records used as queries (all of them when fewer).
        k: Neighbours per query.
        seed: Seed of the sample and of the reference records.
        documents_of: The documents of records by id, for the records that change
            most; None leaves them out.
        steps: Progress reporting, or None.

    Returns:
        A :class:`SpaceComparison`.

    Raises:
        InvalidArgumentError: fewer than k + 1 shared records (none at all is named
            as such), rows that do not match ``ids``, sample or k under 1.
    """
    started = time.perf_counter()
    steps = steps or Steps.silent()
    shared = len(ids)
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise InvalidArgumentError(f"sample must be an integer >= 1; got {sample!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidArgumentError(f"k must be an integer >= 1; got {k!r}")
    if shared == 0:
        raise InvalidArgumentError(
            f"collections {a.collection!r} and {b.collection!r} share no ids: compare "
            "needs the same records in both (e.g. a collection and its re-embedded version)"
        )
    if shared < k + 1:
        raise InvalidArgumentError(
            f"compare needs more than k = {k} records in both collections to find each "
            f"one's {k} nearest; {a.collection!r} and {b.collection!r} share {shared}"
        )
    for side in (a, b):
        if side.rows.ndim != 2 or side.rows.shape[0] != shared:
            raise InvalidArgumentError(
                f"the rows of {side.collection!r} must be ({shared}, d), one per shared "
                f"id; got shape {tuple(side.rows.shape)}"
            )
    rows_a = np.ascontiguousarray(a.rows, dtype=np.float32)
    rows_b = np.ascontiguousarray(b.rows, dtype=np.float32)
    positions = _sample(shared, sample, seed=seed)
    nq = positions.size

    steps.advance(f"neighbours of {nq:,} sampled records among {shared:,}")
    neighbours_a = _neighbours(rows_a, positions, k, a.metric)
    neighbours_b = _neighbours(rows_b, positions, k, b.metric)
    # Neither list repeats a row: a row in both meets itself once in the sorted pair.
    together = np.sort(np.concatenate([neighbours_a, neighbours_b], axis=1), axis=1)
    common = (together[:, 1:] == together[:, :-1]).sum(axis=1)
    overlaps = common / k
    overlap = float(overlaps.mean())
    error = float(1.96 * overlaps.std(ddof=1) / math.sqrt(nq)) if nq > 1 else float("nan")
    counts = np.bincount(common, minlength=k + 1).tolist()

    steps.advance("rank correlation of distances")
    local = _local_correlations(rows_a, rows_b, positions, neighbours_a, neighbours_b, a, b)
    references = _sample(shared, _REFERENCES, seed=seed + 1)
    global_correlation = _global_correlation(rows_a, rows_b, positions, references, a, b)

    steps.advance(f"CKA and Procrustes over {shared:,} records")
    cka, residual = _cka_and_procrustes(rows_a, rows_b)
    da, db = rows_a.shape[1], rows_b.shape[1]
    padding = None
    if da != db:
        smaller, larger = (a, b) if da < db else (b, a)
        padding = (
            f"{smaller.collection}'s {min(da, db)} dimensions padded with zeros to "
            f"{larger.collection}'s {max(da, db)} for the fit"
        )

    steps.advance("records that change most")
    order = np.lexsort((np.arange(nq), np.nan_to_num(local, nan=2.0), overlaps))[:_CHANGED]
    changed_ids = [ids[p] for p in positions[order].tolist()]
    documents: list[str | None] = (
        documents_of(changed_ids) if documents_of is not None else [None] * len(changed_ids)
    )
    changed = [
        ChangedRecord(
            id=record_id,
            overlap=float(overlaps[row]),
            distance_correlation=float(local[row]),
            document=document,
            neighbours_a=[ids[p] for p in neighbours_a[row].tolist()],
            neighbours_b=[ids[p] for p in neighbours_b[row].tolist()],
        )
        for record_id, row, document in zip(changed_ids, order.tolist(), documents, strict=True)
    ]
    steps.advance("done")
    return SpaceComparison(
        a=a.collection,
        b=b.collection,
        model_a=a.model,
        model_b=b.model,
        dimension_a=da,
        dimension_b=db,
        metric_a=a.metric,
        metric_b=b.metric,
        count_a=a.count,
        count_b=b.count,
        shared=shared,
        sample=nq,
        k=k,
        seed=seed,
        overlap=overlap,
        overlap_error=error,
        overlap_counts=counts,
        distance_correlation=_mean(local),
        global_distance_correlation=global_correlation,
        references=references.size,
        cka=cka,
        procrustes_residual=residual,
        padding=padding,
        changed=changed,
        verdict=_verdict(overlap, counts, nq, k),
        seconds=time.perf_counter() - started,
    )


def _verdict(overlap: float, counts: list[int], nq: int, k: int) -> str:
    kept = counts[k] / nq
    fewer_than_half = sum(counts[: (k + 1) // 2]) / nq
    return (
        f"queries will see about {overlap:.0%} of the same top-{k} "
        f"({kept:.0%} of sampled records keep all {k}, {fewer_than_half:.0%} keep fewer "
        "than half)"
    )


def _neighbours(rows: FloatMatrix, positions: IntMatrix, k: int, metric: Metric) -> IntMatrix:
    """Exact top-k of each sampled row among all rows, itself left out: (nq, k)."""
    _, hits = exact_search(rows[positions], rows, k + 1, metric)
    found: IntMatrix = hits.astype(np.int64)
    keep = found != positions[:, None]
    # A row tied with a duplicate may rank it first and itself out of the k + 1.
    keep[keep.all(axis=1), -1] = False
    neighbours: IntMatrix = found[keep].reshape(positions.size, k)
    return neighbours


def _ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each row's ranks from 0, ties sharing their mean rank (as Spearman's rho wants)."""
    count = values.shape[1]
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    place = np.broadcast_to(np.arange(count), values.shape)
    starts = np.ones(values.shape, dtype=bool)  # a tie group starts here
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(values.shape, dtype=bool)  # a tie group ends here
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, place, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, place, count - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(values.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0, axis=1)
    return ranks


def _spearman(
    x: npt.NDArray[np.floating[Any]],
    y: npt.NDArray[np.floating[Any]],
    valid: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """Spearman's rho of each row of x against the same row of y, over the entries
    ``valid`` marks (nq,); nan where fewer than two or either side is constant."""
    # Left-out entries rank last on both sides, so the others keep their ranks.
    rx = _ranks(np.where(valid, x, np.inf).astype(np.float64))
    ry = _ranks(np.where(valid, y, np.inf).astype(np.float64))
    weight = valid.astype(np.float64)
    count = weight.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = (rx - (rx * weight).sum(axis=1, keepdims=True) / count) * weight
        dy = (ry - (ry * weight).sum(axis=1, keepdims=True) / count) * weight
        scale = np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
        rho: npt.NDArray[np.float64] = np.where(scale > 0, (dx * dy).sum(axis=1) / scale, np.nan)
    return rho


def _local_correlations(
    rows_a: FloatMatrix,
    rows_b: FloatMatrix,
    positions: IntMatrix,
    neighbours_a: IntMatrix,
    neighbours_b: IntMatrix,
    a: ComparedSpace,
    b: ComparedSpace,
) -> npt.NDArray[np.float64]:
    """Each sampled record's Spearman over the union of its top-k in A and in B."""
    candidates = np.sort(np.concatenate([neighbours_a, neighbours_b], axis=1), axis=1)
    first = np.ones(candidates.shape, dtype=bool)
    first[:, 1:] = candidates[:, 1:] != candidates[:, :-1]
    widest = max(rows_a.shape[1], rows_b.shape[1])
    step = max(1, _GATHER_FLOATS // (candidates.shape[1] * widest))
    parts = []
    for start in range(0, positions.size, step):
        rows = slice(start, start + step)
        queries, gathered = positions[rows], candidates[rows]
        in_a = pair_distances(rows_a[queries], rows_a[gathered], a.metric)
        in_b = pair_distances(rows_b[queries], rows_b[gathered], b.metric)
        parts.append(_spearman(in_a, in_b, first[rows]))
    return np.concatenate(parts)


def _global_correlation(
    rows_a: FloatMatrix,
    rows_b: FloatMatrix,
    positions: IntMatrix,
    references: IntMatrix,
    a: ComparedSpace,
    b: ComparedSpace,
) -> float:
    """Mean Spearman of each sampled record's distances to the reference records."""
    # A BLAS product: these distances only rank, and need not be pair_distances' bits.
    in_a = distance_matrix(rows_a[positions], rows_a[references], a.metric)
    in_b = distance_matrix(rows_b[positions], rows_b[references], b.metric)
    return _mean(_spearman(in_a, in_b, positions[:, None] != references[None, :]))


def _cka_and_procrustes(rows_a: FloatMatrix, rows_b: FloatMatrix) -> tuple[float, float]:
    """Linear CKA and the Procrustes disparity of two aligned (n, da), (n, db) sets.

    Both come from the Gram products of the centred rows, accumulated in float64 by
    blocks: CKA = ||A'B||^2 / (||A'A|| ||B'B||) (Frobenius norms); the best rotation
    of A onto B (the smaller padded with zeros: its singular values are those of the
    da x db product) leaves 1 - (sum of singular values of A'B)^2 / (|A|^2 |B|^2).
    """
    mean_a = rows_a.mean(axis=0, dtype=np.float64)
    mean_b = rows_b.mean(axis=0, dtype=np.float64)
    da, db = rows_a.shape[1], rows_b.shape[1]
    gram_a = np.zeros((da, da))
    gram_b = np.zeros((db, db))
    cross = np.zeros((da, db))
    for start in range(0, rows_a.shape[0], _GRAM_BLOCK):
        block_a = rows_a[start : start + _GRAM_BLOCK].astype(np.float64) - mean_a
        block_b = rows_b[start : start + _GRAM_BLOCK].astype(np.float64) - mean_b
        gram_a += block_a.T @ block_a
        gram_b += block_b.T @ block_b
        cross += block_a.T @ block_b
    scale_a, scale_b = float(np.trace(gram_a)), float(np.trace(gram_b))
    if scale_a <= 0 or scale_b <= 0:  # every record at one point: no shape to compare
        return float("nan"), float("nan")
    cka = float((cross**2).sum() / math.sqrt(float((gram_a**2).sum()) * float((gram_b**2).sum())))
    singular = np.linalg.svd(cross, compute_uv=False)
    residual = 1.0 - float(singular.sum()) ** 2 / (scale_a * scale_b)
    return min(cka, 1.0), min(max(residual, 0.0), 1.0)


def _mean(values: npt.NDArray[np.float64]) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
