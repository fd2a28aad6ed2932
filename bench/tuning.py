"""Does tuning land on the recall target? latentdb's self-tuned search knob on two data
sets, for several targets, against faiss HNSW at the recall latentdb's defaults reach.

Issue 18's goal: recall@10 of new queries at the tuned defaults lies in
[target, target + 0.015], on the shared data and on data generated differently, and qps1
at the defaults is then >= 0.95x faiss's qps1 at the recall the defaults reach.

Data sets (``--datasets``):

* ``pypi``: the shared PyPI MiniLM set (100k x 384, cosine), its 1,000 test queries and
  the file's exact neighbours.
* ``mixture``: made here with a fixed seed, not text embeddings at all: 100k rows of a
  mixture of 64 anisotropic Gaussians in 128-d (each cluster a random rotation of a
  spectrum falling as i^-0.3, centres N(0, 0.5^2)), squared L2, and 5,000 test queries
  drawn from the same mixture; exact neighbours by faiss ``IndexFlatL2``. Its hardness
  (recall 0.94 at ef 32, 0.99 at ef 96 for M=32, efC=200) is close to the PyPI set's.

For each data set, index kind (``--kinds``, default hnsw) and target (``--targets``):

* **built**: a fresh collection, ``create_collection(index=kind, recall_target=t)``,
  ``add`` in batches of 10,000, ``optimize()``: built, tuned on the rows it holds out, as
  a user's collection is. Reported: the tuned knob, the held-out recall estimate and its
  standard error (read from the index: ``last_tuning``), the recall of the data set's
  test queries at the defaults and its standard error over the queries, and what the
  ladder-only tuner before issue 18 would have chosen (the first rung whose held-out
  recall reached target + 0.01, from the same measurements) with its test recall.
* **re-tuned**: the target's collection after ``set_recall_target`` to each other target
  (no held-out rows are left once optimize() folded them in: the knob is read off the
  held-out curve saved at build time).
* For hnsw, qps1 (one query per call, one thread: BLAS, OpenMP and faiss pinned) at the
  defaults, against faiss ``IndexHNSWFlat`` built here with the same M=32,
  efConstruction=200 and metric, at the smallest efSearch whose recall on the same test
  queries reaches latentdb's; and faiss's search on the very graph inside latentdb's
  segment at the tuned ef (what latentdb's query path costs, graphs alike). Passes
  alternate between the three, ``--rounds`` times; best and median are reported.
  latentdb is called as ``query(vectors=q, k=10, include=("distances",))``, the same
  loop as bench/ann.py.

Run from the repository root (about 25 minutes on 2 cores: one 100k HNSW build per
target and data set, plus faiss's)::

    .venv/bin/python bench/tuning.py
    .venv/bin/python bench/tuning.py --datasets mixture --kinds hnsw,ivf --targets 0.95
    .venv/bin/python bench/tuning.py --quick          # smoke run: 20k rows, 2 targets

Writes ``tuning.md`` and ``tuning.json`` under ``--out`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

# Run as a script, bench/ is on sys.path.
from _common import (
    DEFAULT_DATA,
    HNSW_EFC,
    HNSW_M,
    REPO,
    FloatMatrix,
    IntMatrix,
    K,
    Result,
    alternating_qps,
    load_average,
    load_dataset,
    machine_info,
    package_versions,
    pad_ids,
    thread_limit,
)

# faiss's SWIG stubs lack SearchParametersHNSW and most index classes.
faiss: Any = _faiss

TARGETS = (0.90, 0.95, 0.99)
WINDOW = 0.015  # the goal: recall in [target, target + WINDOW]
QPS_RATIO_GOAL = 0.95
BATCH = 10_000
TIMED_QUERIES = 1000  # single queries per timed pass
EF_MAX = 1024
MODEL = "bench/tuning"
# The tuner before issue 18 stopped at the first ladder rung whose recall on its (300)
# held-out rows reached the target plus this margin.
OLD_MARGIN = 0.01


@dataclass(frozen=True)
class Mixture:
    """The generated data set's recipe (see the module)."""

    rows: int = 100_000
    queries: int = 5000
    dimension: int = 128
    clusters: int = 64
    spread: float = 0.5  # centres ~ N(0, spread^2) per axis
    decay: float = 0.3  # a cluster's axis i has standard deviation ~ (1 + i)^-decay
    seed: int = 18


@dataclass
class DataSet:
    """Rows, test queries and their exact top-K ids, in the metric latentdb indexes."""

    name: str
    description: str
    metric: str  # latentdb's: "cosine" or "l2"
    xb: FloatMatrix
    xq: FloatMatrix
    truth: IntMatrix

    @property
    def faiss_metric(self) -> int:
        return int(faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT)


# -- data -------------------------------------------------------------------------------


def pypi(args: argparse.Namespace) -> DataSet:
    xb, xq, (truth, _) = load_dataset(args.data, args.queries)
    if args.rows and args.rows < len(xb):
        xb = np.ascontiguousarray(xb[: args.rows])
        truth = exact_ids(xb, xq, faiss.METRIC_INNER_PRODUCT)
    description = f"{args.data.name}: {len(xb):,} x {xb.shape[1]} MiniLM, cosine"
    return DataSet("pypi", description, "cosine", xb, xq, truth)


def mixture(args: argparse.Namespace) -> DataSet:
    """A mixture of anisotropic Gaussians (see the module), rows and queries apart."""
    spec = Mixture(rows=args.rows or Mixture.rows)
    d, clusters = spec.dimension, spec.clusters
    rng = np.random.default_rng(spec.seed)
    centres = rng.standard_normal((clusters, d)) * spec.spread
    spectrum = (1.0 + np.arange(d)) ** -spec.decay
    spectrum *= np.sqrt(d / np.sum(spectrum**2))  # unit variance per axis on average
    rotations = [np.linalg.qr(rng.standard_normal((d, d))).Q for _ in range(clusters)]
    weights = rng.dirichlet(np.full(clusters, 2.0))

    def draw(count: int, seed: int) -> FloatMatrix:
        draws = np.random.default_rng(seed)
        labels = draws.choice(clusters, count, p=weights)
        noise = draws.standard_normal((count, d)) * spectrum
        out = np.empty((count, d), dtype=np.float32)
        for cluster in range(clusters):
            members = labels == cluster
            out[members] = centres[cluster] + noise[members] @ rotations[cluster].T
        return out

    xb, xq = draw(spec.rows, spec.seed + 1), draw(spec.queries, spec.seed + 2)
    description = (
        f"{spec.rows:,} x {d}, {clusters} anisotropic Gaussians (spectrum (1+i)^-{spec.decay}, "
        f"centres N(0, {spec.spread}^2), seed {spec.seed}), squared L2, "
        f"{spec.queries:,} queries from the same mixture"
    )
    return DataSet("mixture", description, "l2", xb, xq, exact_ids(xb, xq, faiss.METRIC_L2))


def exact_ids(xb: FloatMatrix, xq: FloatMatrix, metric: int) -> IntMatrix:
    flat = faiss.IndexFlat(xb.shape[1], metric)
    flat.add(xb)
    return np.asarray(flat.search(xq, K)[1], dtype=np.int64)


def recall_and_error(found: IntMatrix, truth: IntMatrix) -> tuple[float, float]:
    """Recall@K by id and its standard error over the queries."""
    per_query = np.array(
        [np.intersect1d(f[f >= 0], t).size / K for f, t in zip(found, truth, strict=True)]
    )
    return float(per_query.mean()), float(per_query.std(ddof=1) / math.sqrt(len(per_query)))


# -- faiss, the peer --------------------------------------------------------------------


class FaissPeer:
    """faiss IndexHNSWFlat with the graph parameters latentdb builds, and its recall on
    the test queries at each efSearch (measured once)."""

    def __init__(self, data: DataSet) -> None:
        start = time.perf_counter()
        self.index = faiss.IndexHNSWFlat(data.xb.shape[1], HNSW_M, data.faiss_metric)
        self.index.hnsw.efConstruction = HNSW_EFC
        self.index.add(data.xb)
        self.build_s = time.perf_counter() - start
        self.data = data
        self._recall: dict[int, float] = {}

    def recall(self, ef: int) -> float:
        if ef not in self._recall:
            parameters = faiss.SearchParametersHNSW()
            parameters.efSearch = ef
            found = self.index.search(self.data.xq, K, params=parameters)[1]
            self._recall[ef] = recall_and_error(found, self.data.truth)[0]
        return self._recall[ef]

    def ef_reaching(self, recall: float) -> int | None:
        """The smallest efSearch whose recall reaches ``recall`` (recall rises with ef:
        doubling, then bisection); None if not even EF_MAX does."""
        low, high = 0, K
        while self.recall(high) < recall:
            if high >= EF_MAX:
                return None
            low, high = high, min(2 * high, EF_MAX)
        while high - low > 1:
            middle = (low + high) // 2
            if self.recall(middle) >= recall:
                high = middle
            else:
                low = middle
        return high


# -- latentdb -----------------------------------------------------------------------------


class TuneClock:
    """Times each ``Tuning.tune`` call (wrapped for this run only: the tuning itself is
    untouched), so the report can say what tuning adds to optimize()."""

    def __init__(self) -> None:
        from latentdb.index._tuning import Tuning

        self.seconds: list[float] = []
        tune = Tuning.tune

        def timed_tune(index: Any, *, k: int = K) -> None:
            start = time.perf_counter()
            tune(index, k=k)
            self.seconds.append(time.perf_counter() - start)

        Tuning.tune = timed_tune  # type: ignore[method-assign,assignment]

    def take(self) -> float:
        total, self.seconds = sum(self.seconds), []
        return total


TUNE_CLOCK: TuneClock | None = None


def build_collection(latentdb: Any, data: DataSet, kind: str, target: float, folder: Path) -> Any:
    db = latentdb.connect(folder)
    col = db.create_collection(
        data.name,
        dimension=data.xb.shape[1],
        metric=data.metric,
        embedder=None,
        model=MODEL,
        index=kind,
        recall_target=target,
    )
    ids = [str(i) for i in range(len(data.xb))]
    for lo in range(0, len(ids), BATCH):
        col.add(ids[lo : lo + BATCH], vectors=data.xb[lo : lo + BATCH], model=MODEL)
    col.optimize()
    return col


def index_of(col: Any) -> Any:
    """The collection's SegmentedIndex (internals: the tuning record is not public)."""
    return col._database.index(col._state)


def test_recall(
    col: Any, data: DataSet, params: dict[str, int] | None = None
) -> tuple[float, float]:
    found = col.query(vectors=data.xq, k=K, include=("distances",), params=params)
    return recall_and_error(pad_ids(found.ids), data.truth)


def tuning_row(col: Any, data: DataSet) -> Result:
    """What the tuner chose and measured, and the recall of the test queries with it."""
    index = index_of(col)
    report = index.last_tuning
    recall, error = test_recall(col, data)
    target = float(col.recall_target)
    row: Result = {
        "target": target,
        "source": report.source,
        "held_out_queries": report.queries,
        "params": dict(report.params),
        "held_out_recall": report.recall,
        "held_out_error": report.error,
        "reached": report.reached,
        "settings_measured": len(report.trials),
        "test_recall": recall,
        "test_error": error,
        "in_window": target <= recall <= target + WINDOW,
    }
    old = old_choice(report, index.kind())
    if old is not None:
        row["ladder_only_params"] = old
        row["ladder_only_test_recall"] = test_recall(col, data, old)[0]
    return row


def old_choice(report: Any, kind: str) -> dict[str, int] | None:
    """The setting the ladder-only tuner would have kept, from the same held-out
    measurements: per ladder the first rung reaching target + OLD_MARGIN (the cheapest
    ladder by its knob, a stand-in for its timing). None when it cannot be told (no
    rung measured reaches it, or the record is the curve's)."""
    from latentdb.index import index_kind

    if report.source != "held-out rows":
        return None
    descriptor = index_kind(kind)
    knob = descriptor.knob or ""
    measured = {tuple(sorted(t.params.items())): t.recall for t in report.trials}
    choices = []
    for ladder in descriptor.ladders():
        for rung in ladder:
            recall = measured.get(tuple(sorted(rung.items())))
            if recall is None:
                break  # not measured: above the rung the new tuner stopped at
            if recall >= report.target + OLD_MARGIN:
                choices.append(rung)
                break
    return min(choices, key=lambda rung: rung[knob]) if choices else None


def timed(
    col: Any, data: DataSet, peer: FaissPeer | None, faiss_ef: int | None, rounds: int
) -> Result:
    """qps1 of latentdb at its defaults, faiss at ``faiss_ef`` and faiss on latentdb's
    own graph at the tuned ef: alternating passes, one query per call, one thread."""
    index = index_of(col)
    tuned_ef = int(index.params["ef"])
    queries = data.xq[:TIMED_QUERIES]
    calls: dict[str, Callable[[FloatMatrix], Any]] = {
        "latentdb": lambda q: col.query(vectors=q, k=K, include=("distances",))
    }
    if len(index.sealed) == 1 and not len(index.growing):
        graph = index.sealed[0][1].index
        own = faiss.SearchParametersHNSW()
        own.efSearch = tuned_ef
        calls["faiss_same_graph"] = lambda q: graph.search(q, K, params=own)
    if peer is not None and faiss_ef is not None:
        theirs = faiss.SearchParametersHNSW()
        theirs.efSearch = faiss_ef
        calls["faiss"] = lambda q: peer.index.search(q, K, params=theirs)
    with thread_limit(1):
        best, median, times = alternating_qps(calls, queries, rounds)
    out: Result = {
        "tuned_ef": tuned_ef,
        "faiss_ef": faiss_ef,
        "qps1_best": best,
        "qps1_median": median,
        "times_s": {name: [round(t, 5) for t in ts] for name, ts in times.items()},
    }
    if "faiss" in best:
        out["ratio_best"] = best["latentdb"] / best["faiss"]
        out["ratio_median"] = median["latentdb"] / median["faiss"]
    if "faiss_same_graph" in best:
        out["ratio_same_graph_median"] = median["latentdb"] / median["faiss_same_graph"]
    return out


def run_kind(
    latentdb: Any,
    data: DataSet,
    kind: str,
    args: argparse.Namespace,
    peer: FaissPeer | None,
    workdir: Path,
) -> list[Result]:
    rows: list[Result] = []
    for target in args.targets:
        folder = workdir / f"{data.name}-{kind}-{target}"
        start = time.perf_counter()
        col = build_collection(latentdb, data, kind, target, folder)
        built_s = time.perf_counter() - start
        tune_s = TUNE_CLOCK.take() if TUNE_CLOCK is not None else None
        try:
            row: Result = {"dataset": data.name, "kind": kind, "path": "built"}
            row |= {"build_s": built_s, "tune_s": tune_s}
            row |= tuning_row(col, data)
            if kind == "hnsw":
                faiss_ef = peer.ef_reaching(row["test_recall"]) if peer is not None else None
                row["faiss_ef"] = faiss_ef
                if faiss_ef is not None and peer is not None:
                    row["faiss_recall_at_ef"] = peer.recall(faiss_ef)
                row["timing"] = timed(col, data, peer, faiss_ef, args.rounds)
            say(row)
            rows.append(row)
            for other in args.targets:
                if other == target or target != args.retune_from:
                    continue
                col.set_recall_target(other)
                again: Result = {
                    "dataset": data.name,
                    "kind": kind,
                    "path": f"re-tuned from {target}",
                }
                again |= tuning_row(col, data)
                say(again)
                rows.append(again)
        finally:
            col._database.close()
            shutil.rmtree(folder, ignore_errors=True)
    return rows


def say(row: Result) -> None:
    timing = row.get("timing", {})
    ratio = timing.get("ratio_median")
    print(
        f"  {row['dataset']} {row['kind']} {row['path']} target {row['target']:.2f}: "
        f"{row['params']} held-out {row['held_out_recall']:.4f}±{row['held_out_error']:.4f} "
        f"test {row['test_recall']:.4f}±{row['test_error']:.4f}"
        + (f" qps1 ratio {ratio:.3f}" if ratio else ""),
        file=sys.stderr,
        flush=True,
    )


# -- report -----------------------------------------------------------------------------


def render(report: Result) -> str:
    cfg = report["config"]
    lines = [
        "# Tuning to the recall target",
        "",
        f"{report['machine']['date']} · {report['machine']['cpu']} · "
        f"{report['machine']['cpu_count']} CPUs · "
        + " · ".join(f"{name} {v}" for name, v in report["versions"].items() if v),
        "",
        "Goal (issue 18): recall@10 of new queries at the tuned defaults in "
        f"[target, target + {WINDOW}], and qps1 at the defaults >= {QPS_RATIO_GOAL}x faiss "
        "HNSW's qps1 at the recall the defaults reach. Command: "
        f"`{cfg['command']}` at revision {cfg['revision']}.",
        "",
        "## Data sets",
        "",
        *[f"- **{name}**: {text}" for name, text in report["datasets"].items()],
        "",
        "## Tuned recall",
        "",
        "held-out = the tuner's estimate on rows held out of the build (its standard "
        "error after ±); test = the data set's test queries at the defaults (± its "
        "standard error over those queries: with 1,000 queries alone it is ~0.004 at "
        "0.95). `built`: a new collection created with the target (held-out rows "
        "measured); `re-tuned`: `set_recall_target` on the collection built for "
        f"{cfg['retune_from']} (the knob read off the held-out curve saved at build). "
        "ladder-only: the rung the tuner before issue 18 would keep (first rung with "
        f"held-out recall >= target + {OLD_MARGIN}), and its test recall.",
        "",
        "| data | kind | target | path | tuned knob | held-out queries | held-out recall | "
        "test recall | in window | ladder-only knob (test recall) | build s (tuning s) |",
        "|---|---|--:|---|---|--:|--:|--:|:-:|---|--:|",
    ]
    for row in report["rows"]:
        old = row.get("ladder_only_params")
        old_cell = f"{old} ({row['ladder_only_test_recall']:.4f})" if old else "-"
        build = "-"
        if "build_s" in row:
            build = f"{row['build_s']:.0f}"
            if row.get("tune_s") is not None:
                build += f" ({row['tune_s']:.1f})"
        queries = row["held_out_queries"] or "curve"
        reached = "" if row["reached"] else " (not reached)"
        lines.append(
            f"| {row['dataset']} | {row['kind']} | {row['target']:.2f} | {row['path']} | "
            f"{row['params']}{reached} | {queries} | {row['held_out_recall']:.4f} ± "
            f"{row['held_out_error']:.4f} | {row['test_recall']:.4f} ± "
            f"{row['test_error']:.4f} | {'yes' if row['in_window'] else '**no**'} | "
            f"{old_cell} | {build} |"
        )
    timed_rows = [row for row in report["rows"] if "timing" in row]
    if timed_rows:
        lines += [
            "",
            "## qps1 at the defaults against faiss",
            "",
            "One query per call on one thread, the first "
            f"{TIMED_QUERIES:,} test queries, {cfg['rounds']} alternating passes of each "
            "system after a warm-up; median (best in brackets). faiss = `IndexHNSWFlat` "
            f"M={HNSW_M} efC={HNSW_EFC} built here, at the smallest efSearch whose recall "
            "on the same queries reaches latentdb's test recall; faiss same graph = faiss's "
            "search on the graph inside latentdb's segment at the tuned ef (latentdb's "
            "query-path cost with the graph held equal). The engine's per-query overhead "
            "is being cut in parallel (issue 18, another change): these ratios are as "
            "measured on this revision.",
            "",
            "| data | target | tuned ef | test recall | latentdb qps1 | faiss ef (its recall) "
            "| faiss qps1 | latentdb / faiss | faiss same graph qps1 | latentdb / same graph |",
            "|---|--:|--:|--:|--:|---|--:|--:|--:|--:|",
        ]
        for row in timed_rows:
            timing = row["timing"]
            median, best = timing["qps1_median"], timing["qps1_best"]

            def cell(name: str, median: Result = median, best: Result = best) -> str:
                if name not in median:
                    return "-"
                return f"{median[name]:,.0f} ({best[name]:,.0f})"

            ratio = (
                f"{timing['ratio_median']:.3f} ({timing['ratio_best']:.3f})"
                if "ratio_median" in timing
                else "-"
            )
            same = timing.get("ratio_same_graph_median")
            faiss_ef = (
                f"{row['faiss_ef']} ({row['faiss_recall_at_ef']:.4f})"
                if row.get("faiss_ef")
                else "-"
            )
            lines.append(
                f"| {row['dataset']} | {row['target']:.2f} | {timing['tuned_ef']} | "
                f"{row['test_recall']:.4f} | {cell('latentdb')} | {faiss_ef} | {cell('faiss')} | "
                f"{ratio} | {cell('faiss_same_graph')} | "
                f"{'-' if same is None else f'{same:.3f}'} |"
            )
    lines += [
        "",
        "## Machine",
        "",
        f"Load average (1/5/15 min) at start {cfg['load_avg_at_start']}, at end "
        f"{report['load_avg_at_end']} on {report['machine']['cpu_count']} cores: the machine "
        "is shared, treat timings under a load above the core count as noisy. Wall time "
        f"{report['wall_s'] / 60:.1f} min. faiss builds: "
        + ", ".join(f"{name} {s:.0f} s" for name, s in report["faiss_build_s"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def write(args: argparse.Namespace, report: Result) -> str:
    args.out.mkdir(parents=True, exist_ok=True)
    text = render(report)
    (args.out / "tuning.md").write_text(text)
    (args.out / "tuning.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return text


# -- main -------------------------------------------------------------------------------


def revision() -> str:
    """The checkout's commit, "+ changes" when its tracked files differ from it (other
    work in progress is measured too)."""

    def git(*command: str) -> str:
        return subprocess.run(
            ["git", *command], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + (" + changes" if dirty else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ann-benchmarks HDF5")
    parser.add_argument("--datasets", default="pypi,mixture", help="comma list: pypi, mixture")
    parser.add_argument("--kinds", default="hnsw", help="comma list of latentdb index kinds")
    parser.add_argument("--targets", default=",".join(f"{t:.2f}" for t in TARGETS))
    parser.add_argument(
        "--retune-from", type=float, default=0.95, help="target whose build is re-tuned"
    )
    parser.add_argument("--queries", type=int, default=1000, help="pypi test queries")
    parser.add_argument("--rows", type=int, help="only this many rows (smoke runs)")
    parser.add_argument("--rounds", type=int, default=7, help="timed passes per system")
    parser.add_argument("--quick", action="store_true", help="20k rows, 2 targets, 2 rounds")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    parser.add_argument("--workdir", type=Path, help="where collections are built (temp)")
    args = parser.parse_args(argv)
    args.datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    args.kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    args.targets = [float(target) for target in args.targets.split(",")]
    if args.quick:
        args.rows, args.rounds = args.rows or 20_000, min(args.rounds, 2)
        args.targets = args.targets[1:] if len(args.targets) > 2 else args.targets
    unknown = set(args.datasets) - {"pypi", "mixture"}
    if unknown:
        parser.error(f"unknown data sets {sorted(unknown)}; choose from pypi, mixture")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import latentdb

    global TUNE_CLOCK
    TUNE_CLOCK = TuneClock()

    started = time.perf_counter()
    report: Result = {
        "config": {
            "command": " ".join(["bench/tuning.py", *(argv or sys.argv[1:])]),
            "datasets": args.datasets,
            "kinds": args.kinds,
            "targets": args.targets,
            "retune_from": args.retune_from,
            "rounds": args.rounds,
            "rows": args.rows,
            "load_avg_at_start": load_average(),
            "revision": revision(),
        },
        "machine": machine_info(),
        "versions": package_versions(["numpy", "faiss-cpu", "latentdb"]),
        "datasets": {},
        "faiss_build_s": {},
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="latentdb-tuning-", dir=args.workdir) as tmp:
        for name in args.datasets:
            data = pypi(args) if name == "pypi" else mixture(args)
            report["datasets"][name] = data.description
            print(f"- {data.description}", file=sys.stderr, flush=True)
            peer = None
            if "hnsw" in args.kinds:
                peer = FaissPeer(data)
                report["faiss_build_s"][name] = peer.build_s
            for kind in args.kinds:
                report["rows"] += run_kind(latentdb, data, kind, args, peer, Path(tmp))
                report["load_avg_at_end"] = load_average()
                report["wall_s"] = time.perf_counter() - started
                write(args, report)
            del peer
    report["load_avg_at_end"] = load_average()
    report["wall_s"] = time.perf_counter() - started
    print(write(args, report))


if __name__ == "__main__":
    main()
