"""Tuning and evaluation: the cheapest search knobs whose recall@k meets the target,
measured against exact search on rows held out of the ANN build.

Tuning climbs each ladder of the kind (:meth:`IndexKindDescriptor.ladders`) to the first
rung that meets the target, then bisects between that rung and the one below it over
every integer value, so the knob lands where the target is met, not on the next rung: on
the PyPI MiniLM set (100k, M=32) the ladder's rungs 32 and 48 gave recall 0.947 and
0.969 on the test queries, and the old ladder-only tuner's ef 48 cost ~30% of qps1 for
recall nobody asked for (issue 18). A knob passes when the lower confidence bound of its
held-out recall, mean - ``_CONFIDENCE_Z`` standard errors, is at least the target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.index._kinds import index_kind
from latentdb.index._sealed import merge_hits
from latentdb.index._search import FloatMatrix, KeyArray, SegmentSearch

__all__ = [
    "Trial",
    "Tuning",
    "TuningReport",
    "built_rows",
    "exact_keys",
    "holdout",
    "live_recall",
    "tune_on_queries",
]

# Tuning queries: rows held out of the ANN build, kept in the growing segment until the
# parameters are tuned, so they stand for new queries; then they join the segment (a
# growing segment scanned beside the graph cost ~50 us a query, bench/ann.py).
# Queries that are rows of the graph find themselves and their graph neighbours too
# easily: tuned on them, ef=10 measured recall@10 0.97 but gave 0.87 on the data set's
# held-out test queries (30k pypi rows, hnsw). So parameters are only ever tuned on
# held-out rows, except for a first tuning with none to hand.
# 1,000: the standard error of recall@10 ~0.95 over n queries is ~0.1 / sqrt(n): 0.006
# with 300 queries, 0.0035 with 1,000 (PyPI MiniLM, 100k): the margin it asks for must fit
# the target's window of 0.015 (issue 18). Held-out rows read like the data set's test
# queries there: 0.952 vs 0.948 at ef 32, 0.971 vs 0.969 at ef 48 (bench/tuning.py).
_TUNE_SAMPLE = 1000
_TUNE_MIN_QUERIES = 50
# A knob meets the target when its held-out recall minus this many standard errors
# does (a one-sided 97.7% bound): the recall of new queries then lands within about 0.01
# above the target (bench/results/tuning.md).
_CONFIDENCE_Z = 2.0
# Tuned on the collection's own rows (no held-out rows to hand), recall runs higher than
# on new queries: tune for the target plus this margin as well.
_INDEXED_MARGIN = 0.01
# Bisection between two rungs stops once the knob is known within 1/32 of its value (a
# ~3% difference in search cost; ef 32-63 are tuned to the integer).
_BISECT_RESOLUTION = 32
# The held-out curve is measured up to this recall (or until recall stops rising), so a
# later target up to it is read off measured points. On the PyPI set (100k) that is ef
# 192; going on to 0.998 took ef 384 and doubled the tuning time (to ~40 s of a 350 s
# build on a loaded 2-core machine, bench/results/tuning.md). A target above it is
# measured on indexed rows.
_CURVE_TOP = 0.995
# Queries timed to choose between re-rank depths read off the curve.
_TIMING_QUERIES = 50
# Re-tune once the collection has grown by this factor since the last tuning.
_RETUNE_GROWTH = 2.0


@dataclass(frozen=True)
class Trial:
    """One search setting measured on the tuning queries.

    Attributes:
        params: The search knobs tried.
        recall: Mean recall@k of the tuning queries with them.
        error: The standard error of ``recall`` over the queries.
    """

    params: dict[str, int]
    recall: float
    error: float


@dataclass(frozen=True)
class TuningReport:
    """What the last :meth:`Tuning.tune` measured and chose.

    Attributes:
        target: The recall target tuned for.
        source: Where the recall figures come from: "held-out rows" (rows outside the
            ANN segments, measured now), "held-out curve" (the last held-out
            measurements, interpolated: no held-out rows were left to measure) or
            "indexed rows" (rows inside the segments, on which recall reads high, so
            tuned with ``_INDEXED_MARGIN`` more).
        queries: Tuning queries measured (0 for the curve).
        params: The knobs chosen.
        recall: Their recall on the tuning queries, and its standard ``error``.
        reached: Whether the target was met (else ``params`` are the widest tried).
        trials: Every setting measured, in the order tried (the curve's points when
            interpolated).
    """

    target: float
    source: str
    queries: int
    params: dict[str, int]
    recall: float
    error: float
    reached: bool
    trials: tuple[Trial, ...]


class Tuning(SegmentSearch):
    """Tuning the search knobs of the sealed segments, and measuring their recall."""

    # The last tuning's measurements (None after a re-open until tuned again).
    last_tuning: TuningReport | None = None
    # The settings measured on held-out rows by the last tuning that had them, from the
    # cheapest rung to recall ``_CURVE_TOP``, and the live rows then: a re-tune with no
    # held-out rows left (a new target after optimize() folded them into the graph)
    # reads the knob off them while the collection is within ``_RETUNE_GROWTH`` of that.
    tuning_curve: tuple[Trial, ...] = ()
    curve_rows: int = 0

    def _needs_tuning(self) -> bool:
        return not self.params or self.live >= _RETUNE_GROWTH * max(self.tuned_rows, 1)

    def tune(self, *, k: int = 10) -> None:
        """Pick the cheapest search parameters whose recall@k meets the target.

        For each ladder of the kind (one per re-rank depth) the cheapest knob value that
        meets the target is found (climb the rungs, then bisect below the first that
        passes); of those, the one fastest one query at a time wins. A value passes
        when its recall on the tuning queries, less ``_CONFIDENCE_Z`` standard errors,
        reaches the target. When none does, the widest setting tried is kept and
        :attr:`tuned_recall` (below the target) says so.

        The tuning queries are rows held out of the build, searched on the sealed
        segments and compared with an exact scan of them. With fewer left than a build
        holds out (they join the segment once tuned; a few rows written since are no
        sample), the knob is interpolated on the curve the last held-out tuning
        measured (:attr:`tuning_curve`); only without one are indexed rows measured
        (leave-one-out: a query's own row does not count), with a margin for the recall
        they overstate.
        """
        descriptor = index_kind(self.kind())
        if descriptor.exact or descriptor.knob is None:
            return
        ladders = descriptor.ladders(reduced=self.reduce is not None)
        queries, query_keys, held_out = self._tuning_queries(_TUNE_SAMPLE)
        enough = query_keys.size >= min(_TUNE_SAMPLE, held_out_count(self.live))
        if not (held_out and enough) and self._tune_from_curve(ladders, descriptor.knob, k):
            return
        if not query_keys.size:
            return
        truth = self._tuning_truth(queries, query_keys, k, held_out=held_out)
        margin = 0.0 if held_out else _INDEXED_MARGIN
        required = min(self.recall_target + margin, 1.0)
        trials: dict[tuple[tuple[str, int], ...], Trial] = {}

        def trial(params: dict[str, int]) -> Trial:
            key = tuple(sorted(params.items()))
            if key not in trials:
                found = self._tuning_hits(queries, query_keys, k, params, held_out=held_out)
                recall, error = _recall_and_error(found, truth)
                trials[key] = Trial(dict(params), recall, error)
            return trials[key]

        def passes(params: dict[str, int]) -> bool:
            return _lower_bound(trial(params)) >= required

        chosen, reached = _pick(
            self, queries, k, ladders, descriptor.knob, trial, passes, curve=held_out
        )
        if held_out and enough:  # not a curve of a few rows written since the last
            self.tuning_curve, self.curve_rows = tuple(trials.values()), self.live
        source = "held-out rows" if held_out else "indexed rows"
        self._install_tuning(chosen, source, int(query_keys.size), reached, trials.values())

    def _tune_from_curve(self, ladders: list[list[dict[str, int]]], knob: str, k: int) -> bool:
        """Tune on :attr:`tuning_curve`: per ladder, the cheapest knob whose recall,
        interpolated between the measured settings, meets the target; the fastest of
        those. False when there is no curve for these ladders, it was measured when
        the collection was under half or over twice its size now, or it stops short of
        a target above ``_CURVE_TOP``."""
        rows = self.curve_rows
        if not rows * _RETUNE_GROWTH > self.live > rows / _RETUNE_GROWTH:
            return False
        winners: list[tuple[float, Trial]] = []
        tops: list[Trial] = []
        for ladder in ladders:
            fixed = {name: value for name, value in ladder[0].items() if name != knob}
            points = sorted(
                (
                    point
                    for point in self.tuning_curve
                    if set(point.params) == set(ladder[0])
                    and all(point.params[name] == value for name, value in fixed.items())
                ),
                key=lambda point: point.params[knob],
            )
            if not points:
                continue
            found = _interpolated(points, knob, self.recall_target)
            if found is None:
                tops.append(max(points, key=lambda point: point.recall))
            else:
                winners.append((0.0, found))
        if not winners and (not tops or self.recall_target > _CURVE_TOP):
            return False  # no curve, or one that stopped short of the target: measure
        if len(winners) > 1:  # time them on stored rows: timing needs no held-out rows
            queries, _ = self._sample_rows(_TIMING_QUERIES)
            winners = [(_seconds_per_query(self, queries, k, w.params), w) for _, w in winners]
        chosen = (
            min(winners, key=lambda winner: winner[0])[1]
            if winners
            else max(tops, key=lambda top: top.recall)
        )
        self._install_tuning(chosen, "held-out curve", 0, bool(winners), self.tuning_curve)
        return True

    def saved_curve(self) -> dict[str, Any]:
        """:attr:`tuning_curve` as the manifest stores it (JSON: read back by
        :meth:`restore_curve`)."""
        points = [[point.params, point.recall, point.error] for point in self.tuning_curve]
        return {"rows": self.curve_rows, "points": points}

    def restore_curve(self, saved: Mapping[str, Any] | None) -> None:
        """Take back a curve from :meth:`saved_curve`; one that does not read as such
        (an older manifest has none) leaves no curve: re-tunes measure indexed rows."""
        self.tuning_curve, self.curve_rows = (), 0
        if not saved:
            return
        try:
            points = tuple(
                Trial({str(name): int(value) for name, value in params.items()}, float(r), float(e))
                for params, r, e in saved["points"]
            )
            self.tuning_curve, self.curve_rows = points, int(saved["rows"])
        except (KeyError, TypeError, ValueError, AttributeError):
            return

    def _install_tuning(
        self, chosen: Trial, source: str, queries: int, reached: bool, trials: Iterable[Trial]
    ) -> None:
        self._set_params(dict(chosen.params))
        self.tuned_recall, self.tuned_rows = chosen.recall, self.live
        self.last_tuning = TuningReport(
            target=self.recall_target, source=source, queries=queries,
            params=dict(chosen.params), recall=chosen.recall, error=chosen.error,
            reached=reached, trials=tuple(trials),
        )  # fmt: skip

    def _tuning_truth(
        self, queries: FloatMatrix, query_keys: KeyArray, k: int, *, held_out: bool
    ) -> KeyArray:
        """Each tuning query's exact top-k among the rows :meth:`_tuning_hits` searches:
        (nq, k), -1 where fewer exist."""
        if not held_out:
            return _without_self(self.search(queries, k + 1, exact=True)[1], query_keys, k)
        parts = [segment.exact(queries, k) for _, segment in self.sealed]
        return _padded(merge_hits(parts, k, queries.shape[0])[1], k)

    def _tuning_hits(
        self,
        queries: FloatMatrix,
        query_keys: KeyArray,
        k: int,
        params: dict[str, int],
        *,
        held_out: bool,
    ) -> KeyArray:
        """Each tuning query's top-k with ``params``: (nq, k), -1 where missing.

        Held-out queries search the sealed segments alone, for k, as a user's query
        does once they are folded in: the growing segment, which holds the held-out rows
        themselves (a tenth of a small collection), would find their neighbours among
        them exactly and read high; a search for k + 1 would have a quantized kind
        re-score ``rerank * (k + 1)`` candidates and read high too. Indexed rows search
        everything for k + 1, less the query's own row.
        """
        if not held_out:
            return _without_self(self.search(queries, k + 1, params=params)[1], query_keys, k)
        settings = self._settings_for(params)
        parts = [segment.search(queries, k, settings) for _, segment in self.sealed]
        return _padded(merge_hits(parts, k, queries.shape[0])[1], k)

    def evaluate(
        self, queries: FloatMatrix | None, *, k: int, sample: int
    ) -> tuple[float, float, float, int, str, float | None]:
        """Recall@k of the default search against exact search over the same rows.

        Args:
            queries: float32 (nq, d), or None to sample ``sample`` stored rows
                (leave-one-out: a row's own key does not count).

        Returns:
            (recall, ANN queries per second, exact queries per second, queries used,
            where the queries came from: "given queries", "held-out rows" (rows outside
            the ANN segments, a fair test) or "indexed rows" (rows inside them, which
            find themselves and their graph neighbours easily: recall reads high),
            recall with no candidates beyond the k re-scored (reduced indexes: what the
            reduction alone costs; else None)), speeds timed one query at a time.
        """
        query_keys: KeyArray | None = None
        if queries is None:
            queries, query_keys, held_out = self._tuning_queries(sample)
            source = "held-out rows" if held_out else "indexed rows"
        else:
            source = "given queries"
        reduced = self.reduce is not None and bool(self.sealed)
        if queries.shape[0] == 0:
            return 1.0, 0.0, 0.0, 0, source, 1.0 if reduced else None
        width = k if query_keys is None else k + 1
        truth = self.search(queries, width, exact=True)[1]
        found = self.search(queries, width)[1]
        plain = self.search(queries, width, params={"rerank": 1})[1] if reduced else None
        if query_keys is not None:
            truth = _without_self(truth, query_keys, k)
            found = _without_self(found, query_keys, k)
            if plain is not None:
                plain = _without_self(plain, query_keys, k)
        ann = _seconds_per_query(self, queries, k, {}, count=queries.shape[0])
        exact = _seconds_per_query(
            self, queries, k, {}, count=min(50, queries.shape[0]), exact=True
        )
        unranked = None if plain is None else _recall(plain, truth)
        count = int(queries.shape[0])
        return _recall(found, truth), 1.0 / ann, 1.0 / exact, count, source, unranked

    def _tuning_queries(self, count: int) -> tuple[FloatMatrix, KeyArray, bool]:
        """Rows to use as queries, and whether they are outside the ANN segments: those
        outside (held out of the build) when there are enough, else a sample of all."""
        keys, vectors = self.growing.live_rows()
        if keys.size >= min(_TUNE_MIN_QUERIES, count):
            return np.ascontiguousarray(vectors[:count]), keys[:count], True
        # Too few rows outside the graph: sample indexed rows, an easier test (a row
        # finds itself and its graph neighbours), so recall here reads high.
        return *self._sample_rows(count), False

    def _sample_rows(self, count: int) -> tuple[FloatMatrix, KeyArray]:
        keys, vectors = self._live_rows()
        if keys.size == 0:
            return vectors, keys
        rng = np.random.default_rng(len(keys))
        picked = np.sort(rng.choice(keys.size, size=min(count, keys.size), replace=False))
        return np.ascontiguousarray(vectors[picked], dtype=np.float32), keys[picked]


def _seconds_per_query(
    search: SegmentSearch,
    queries: FloatMatrix,
    k: int,
    params: dict[str, int],
    *,
    count: int = 50,
    exact: bool = False,
) -> float:
    """Time of one-at-a-time queries with ``params`` (how users mostly query)."""
    count = int(min(count, queries.shape[0]))
    started = time.perf_counter()
    for row in range(count):
        search.search(queries[row : row + 1], k, params=params, exact=exact)
    elapsed: float = time.perf_counter() - started
    return elapsed / count


def _pick(
    search: SegmentSearch,
    queries: FloatMatrix,
    k: int,
    ladders: list[list[dict[str, int]]],
    knob: str,
    trial: Callable[[dict[str, int]], Trial],
    passes: Callable[[dict[str, int]], bool],
    *,
    curve: bool,
) -> tuple[Trial, bool]:
    """Per ladder the cheapest setting that ``passes``; of those the fastest, one query
    at a time. With none, the setting of highest recall tried (search as wide as we
    know). ``curve``: go on measuring each ladder above its winner (for re-tuning to a
    higher target). Returns (the choice, whether it passes)."""
    winners: list[tuple[float, Trial]] = []
    tops: list[Trial] = []
    for ladder in ladders:
        params = _cheapest(ladder, knob, passes)
        if params is None:
            tops.append(trial(ladder[-1]))
            continue
        winners.append((_seconds_per_query(search, queries, k, params), trial(params)))
        if curve:
            _climb_on(ladder, knob, params[knob], trial)
    if winners:
        return min(winners, key=lambda winner: winner[0])[1], True
    return max(tops, key=lambda top: top.recall), False


# Recorded queries answered per exact or ANN batch (an exact batch's distances to 1M
# rows take 4 MB a query).
_LIVE_BLOCK = 64


def exact_keys(search: SegmentSearch, queries: FloatMatrix, k: int) -> KeyArray:
    """Each query's exact top-k keys over ``search``'s rows: (nq, k), padded with -1."""
    return _in_blocks(search, queries, k, None, exact=True)


def live_recall(
    search: SegmentSearch, queries: FloatMatrix, k: int, truth: KeyArray | None = None
) -> tuple[KeyArray, Trial]:
    """Recall@k of ``search`` at its settings on ``queries`` (recorded user queries)
    against an exact scan of the same rows (``truth``, :func:`exact_keys`, when known):
    (the exact top-k, (nq, k) padded with -1; the measurement)."""
    if truth is None:
        truth = exact_keys(search, queries, k)
    found = _in_blocks(search, queries, k, None, exact=False)
    recall, error = _recall_and_error(found, truth)
    return truth, Trial(dict(search.search_settings()), recall, error)


def tune_on_queries(
    search: SegmentSearch, queries: FloatMatrix, truth: KeyArray, k: int, target: float
) -> tuple[Trial, bool, list[Trial]] | None:
    """The cheapest search settings whose recall on ``queries`` (with their exact
    ``truth``) meets ``target`` at its lower bound, as :meth:`Tuning.tune` picks them;
    None for a kind without a knob. Returns (the choice, whether it meets the target,
    every setting measured)."""
    descriptor = index_kind(search.kind())
    if descriptor.exact or descriptor.knob is None:
        return None
    trials: dict[tuple[tuple[str, int], ...], Trial] = {}

    def trial(params: dict[str, int]) -> Trial:
        key = tuple(sorted(params.items()))
        if key not in trials:
            found = _in_blocks(search, queries, k, params, exact=False)
            trials[key] = Trial(dict(params), *_recall_and_error(found, truth))
        return trials[key]

    def passes(params: dict[str, int]) -> bool:
        return _lower_bound(trial(params)) >= target

    ladders = descriptor.ladders(reduced=search.reduce is not None)
    chosen, reached = _pick(
        search, queries, k, ladders, descriptor.knob, trial, passes, curve=False
    )
    return chosen, reached, list(trials.values())


def _in_blocks(
    search: SegmentSearch,
    queries: FloatMatrix,
    k: int,
    params: dict[str, int] | None,
    *,
    exact: bool,
) -> KeyArray:
    parts = [
        search.search(queries[start : start + _LIVE_BLOCK], k, params=params, exact=exact)[1]
        for start in range(0, queries.shape[0], _LIVE_BLOCK)
    ]
    return np.concatenate([_padded(part, k) for part in parts])


def held_out_count(rows: int) -> int:
    """How many of ``rows`` rows :func:`holdout` keeps out of a build."""
    count = min(_TUNE_SAMPLE, rows // 10)
    return count if count >= _TUNE_MIN_QUERIES else 0


def built_rows(rows: int) -> int:
    """How many of ``rows`` rows a build indexes (the rest are tuning queries)."""
    return rows - held_out_count(rows)


def holdout(rows: int) -> npt.NDArray[np.bool_]:
    """Which of ``rows`` rows to keep out of an ANN build as tuning queries (fixed seed):
    a tenth of them, at most ``_TUNE_SAMPLE``; none if that is under ``_TUNE_MIN_QUERIES``.
    """
    mask = np.zeros(rows, dtype=bool)
    count = held_out_count(rows)
    if count:
        mask[np.random.default_rng(rows).choice(rows, count, replace=False)] = True
    return mask


def _cheapest(
    ladder: list[dict[str, int]], knob: str, passes: Callable[[dict[str, int]], bool]
) -> dict[str, int] | None:
    """The cheapest setting of ``ladder`` (cheapest first, each naming ``knob``) that
    ``passes``: climb to the first rung that does, then bisect between it and the rung
    below over the knob's integer values, to within 1/``_BISECT_RESOLUTION``. None when
    no rung passes."""
    below: dict[str, int] | None = None
    for rung in ladder:
        if passes(rung):
            break
        below = rung
    else:
        return None
    if below is None:  # the cheapest rung passes: nothing cheaper is tried
        return rung
    low, high = below[knob], rung[knob]
    while high - low > max(1, low // _BISECT_RESOLUTION):
        middle = (low + high) // 2
        if passes({**rung, knob: middle}):
            high = middle
        else:
            low = middle
    return {**rung, knob: high}


def _climb_on(
    ladder: list[dict[str, int]], knob: str, start: int, trial: Callable[[dict[str, int]], Trial]
) -> None:
    """Measure the rungs of ``ladder`` above ``start`` until recall reaches
    ``_CURVE_TOP`` (its lower bound) or stops rising by more than its standard error."""
    previous: Trial | None = None
    for rung in ladder:
        if rung[knob] <= start:
            continue
        measured = trial(rung)
        if _lower_bound(measured) >= _CURVE_TOP:
            return
        if previous is not None and measured.recall - previous.recall < measured.error:
            return
        previous = measured


def _interpolated(points: list[Trial], knob: str, required: float) -> Trial | None:
    """The cheapest knob whose lower bound, interpolated between ``points`` (one
    ladder's, by rising knob) linearly in the knob's logarithm, reaches ``required``;
    None when none does.

    Recall rises about linearly in log(ef) between two rungs, a little less than that:
    on 1,000 held-out rows of the PyPI set (an M=32 graph of the other 99k rows) ef 20
    read 0.913 and ef 40 0.964, where the line in log(ef) between the rungs around them
    gives 0.912 and 0.963 (the line in ef: 0.910 and 0.962). The line lies under the
    curve, so the knob read off it errs high, not low.
    """
    below: Trial | None = None
    for point in points:
        bound = _lower_bound(point)
        if bound < required:
            below = point
            continue
        if below is None or bound <= _lower_bound(below):
            return point
        low, high = below.params[knob], point.params[knob]
        fraction = (required - _lower_bound(below)) / (bound - _lower_bound(below))
        exact = low * (high / low) ** fraction
        value = min(high, max(low + 1, math.ceil(exact - 1e-9)))  # not 16 for 15.0000001
        share = math.log(value / low) / math.log(high / low)
        return Trial(
            {**point.params, knob: value},
            below.recall + share * (point.recall - below.recall),
            below.error + share * (point.error - below.error),
        )
    return None


def _lower_bound(trial: Trial) -> float:
    """The recall a setting is credited with: its mean less ``_CONFIDENCE_Z`` standard
    errors."""
    return trial.recall - _CONFIDENCE_Z * trial.error


def _padded(keys: KeyArray, k: int) -> KeyArray:
    """``keys`` (nq, <= k) padded with -1 to k columns."""
    if keys.shape[1] >= k:
        return keys[:, :k]
    return np.pad(keys, ((0, 0), (0, k - keys.shape[1])), constant_values=-1)


def _without_self(found: KeyArray, query_keys: KeyArray, k: int) -> KeyArray:
    """Each row's hits minus the query's own key, first k (padded with -1)."""
    kept = (found != query_keys[:, None]) & (found >= 0)
    order = np.argsort(~kept, axis=1, kind="stable")[:, :k]  # kept hits first, in order
    out = np.take_along_axis(found, order, axis=1)
    out[~np.take_along_axis(kept, order, axis=1)] = -1
    return _padded(out, k)


def _recall_and_error(found: KeyArray, truth: KeyArray) -> tuple[float, float]:
    """Recall (true, non-missing neighbours found over all of them) and its standard
    error over the queries (the ratio estimator's; with k true neighbours each, the
    standard deviation of the queries' recalls over sqrt(queries))."""
    wanted = truth >= 0
    hits = ((found[:, :, None] == truth[:, None, :]) & wanted[:, None, :]).any(axis=1)
    per_hits = hits.sum(axis=1).astype(np.float64)
    per_total = wanted.sum(axis=1).astype(np.float64)
    total = per_total.sum()
    if not total:
        return 1.0, 0.0
    recall = float(per_hits.sum() / total)
    count = per_hits.shape[0]
    if count < 2:
        return recall, 0.0
    residuals = per_hits - recall * per_total
    spread = float(np.sum(residuals**2)) / (count * (count - 1))
    return recall, math.sqrt(spread) / float(per_total.mean())


def _recall(found: KeyArray, truth: KeyArray) -> float:
    """Mean fraction of each row's true (non-missing) neighbours that were found."""
    return _recall_and_error(found, truth)[0]
