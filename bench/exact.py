"""Exact (brute-force) k-NN search: bare numpy, faiss IndexFlatIP and latentdb, side by side.

Follows ann-benchmarks habits: an HDF5 file with ``train``/``test``/``neighbors``/``distances``,
recall@10 against the file's ground truth, a warm-up call before each timed one, and
throughput as queries per second (QPS) in two regimes:

* batch: all queries in one call (bound by the BLAS matrix product);
* single: one query per call (bound by per-call overhead; what an interactive caller sees).

All three systems search the very same float32 arrays. latentdb is driven through its public
API only, so its numbers include validation, the SQLite round trip for ids and result assembly.
Every timed measurement is repeated (``--repeats``, default 3), each after its own warm-up
call, and the best and the median are both reported: the 2-core dev machine is shared and
noisy, and the best run is the least disturbed. The repeats run in rounds that interleave the
systems, so that load from elsewhere hits all of them alike and the ratios stay fair.

Run from the repository root (the full run takes a few minutes on 2 cores)::

    .venv/bin/python bench/exact.py
    .venv/bin/python bench/exact.py --queries 200 --single 50   # quick smoke run

It prints a markdown table and writes ``exact.md`` and ``exact.json`` under ``--out``
(default ``bench/results``). The data set is read in place, never copied into the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

# Shared with ann.py; run as a script, bench/ is on sys.path.
from _common import (
    DEFAULT_DATA,
    DIMENSION,
    EPSILON,
    MODEL,
    REPO,
    Dataset,
    FloatMatrix,
    Hits,
    K,
    Result,
    load_dataset,
    max_rss_mib,
    peak_rss,
    score,
    seconds,
)
from _common import machine_info as _machine_info

import latentdb

ADD_BATCH = 10_000


# -- measuring --------------------------------------------------------------------------


def throughput(times: list[float], queries: int) -> Result:
    """QPS of the best and the median run (best = least disturbed by the noisy machine)."""
    return {
        "times_s": [round(t, 6) for t in times],
        "qps_best": queries / min(times),
        "qps_median": queries / statistics.median(times),
    }


def max_distance_error(reported: FloatMatrix, truth: Hits) -> float:
    """Largest gap between the reported top-K distances and the file's, rank by rank."""
    true_dist = truth[1][: reported.shape[0]]
    return float(np.max(np.abs(reported - true_dist)))


@dataclass
class System:
    """One contender: how to search, plus what its setup measured.

    ``extra`` holds further batch calls timed alongside (latentdb's default include).
    """

    name: str
    batch: Callable[[], Hits]
    single: Callable[[int], Hits]
    setup: Result = field(default_factory=dict)
    extra: dict[str, Callable[[], object]] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    hits: dict[str, Hits] = field(default_factory=dict)
    memory: Result = field(default_factory=dict)

    def time(self, label: str, fn: Callable[[], Any], warm_up: Callable[[], Any]) -> Any:
        """Warm up, then time one call of ``fn`` under ``label``; returns its value."""
        warm_up()  # page faults, thread pools handing the cores over, lazy imports
        with peak_rss(self.memory):
            elapsed, value = seconds(fn)
        self.times.setdefault(label, []).append(elapsed)
        return value


def run_round(system: System, single: int) -> None:
    """One timed batch, one timed pass of single queries and the extras, each warmed up."""
    system.hits["batch"] = system.time("batch", system.batch, system.batch)

    def one_by_one() -> Hits:
        hits = [system.single(i) for i in range(single)]
        return np.vstack([h[0] for h in hits]), np.vstack([h[1] for h in hits])

    # One query warms up the single path: a whole pass would double the run time.
    system.hits["single"] = system.time("single", one_by_one, lambda: system.single(0))
    for label, fn in system.extra.items():
        system.time(label, fn, fn)


def summarize(system: System, data: Dataset, single: int) -> Result:
    """Throughput, recall and memory of one system, ready for the report."""
    xb, xq, truth = data
    ids, dist = system.hits["batch"]
    result: Result = {"system": system.name, **system.setup, "rss_mib": system.memory}
    result["batch"] = throughput(system.times["batch"], len(xq))
    result["single"] = throughput(system.times["single"], single)
    result |= score(xb, xq, ids, truth)
    result["max_dist_error"] = max_distance_error(dist, truth)
    result["single_recall"] = score(xb, xq, system.hits["single"][0], truth)["recall"]
    for label in system.extra:
        result[label] = throughput(system.times[label], len(xq))
    return result


# -- systems ----------------------------------------------------------------------------


def numpy_search(xb: FloatMatrix, xq: FloatMatrix) -> Hits:
    """Top-K by inner product: one BLAS product, argpartition, then sort only the K."""
    scores = np.atleast_2d(xq @ xb.T)  # a 1-d query takes numpy's gemv path
    part = np.argpartition(scores, -K, axis=1)[:, -K:]  # no negated copy of the scores
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1)
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    distances = np.float32(1) - np.take_along_axis(top, order, axis=1)
    return ids, distances


def numpy_system(data: Dataset) -> System:
    xb, xq, _ = data
    return System("numpy", lambda: numpy_search(xb, xq), lambda i: numpy_search(xb, xq[i]))


def faiss_system(data: Dataset) -> System:
    xb, xq, _ = data
    memory: Result = {}
    with peak_rss(memory):
        setup, index = seconds(lambda: _flat_index(xb))

    def search(queries: FloatMatrix) -> Hits:
        scores, ids = index.search(queries, K)
        return ids.astype(np.int64), 1.0 - scores

    system = System("faiss_flat", lambda: search(xq), lambda i: search(xq[i : i + 1]))
    system.setup["setup_s"], system.memory = setup, memory
    return system


def _flat_index(xb: FloatMatrix) -> faiss.IndexFlatIP:
    index = faiss.IndexFlatIP(DIMENSION)
    index.add(xb)
    return index


def ingest(root: Path, xb: FloatMatrix) -> float:
    """Create the collection in a fresh folder and add every train vector; seconds of adding."""
    ids = [str(i) for i in range(len(xb))]
    with latentdb.connect(root) as db:
        # index="flat": exact only. Under "auto" a background HNSW build would start
        # once writes pause and compete with the timed scans for the two cores.
        col = db.create_collection(
            "pypi", dimension=DIMENSION, metric="cosine", embedder=None, model=MODEL, index="flat"
        )
        start = time.perf_counter()
        for lo in range(0, len(xb), ADD_BATCH):
            col.add(ids[lo : lo + ADD_BATCH], vectors=xb[lo : lo + ADD_BATCH], model=MODEL)
        return time.perf_counter() - start


def first_query(root: Path, xq: FloatMatrix) -> float:
    """Seconds of the first query on a fresh connection: it loads the index from SQLite.

    The OS page cache is warm from ingest, so this is the load itself, not disk reads.
    """
    with latentdb.connect(root) as db:
        col = db.get_collection("pypi")
        elapsed, _ = seconds(
            lambda: col.query(vectors=xq[0], k=K, exact=True, include=["distances"])
        )
        return elapsed


def latentdb_hits(result: latentdb.QueryResult) -> Hits:
    """QueryResult back to (int ids, distances) so it scores like the other systems."""
    assert result.distances is not None
    ids = np.array([[int(i) for i in row] for row in result.ids], dtype=np.int64)
    return ids, result.distances


def latentdb_system(data: Dataset, repeats: int, tmp: Path, stack: ExitStack) -> System:
    """Ingest and reload ``repeats`` times, then leave one connection open on ``stack``."""
    xb, xq, _ = data
    memory: Result = {}
    ingests, root = [], tmp
    with peak_rss(memory):
        for run in range(repeats):
            if run:  # each ingest needs an empty folder; drop the last to keep disk use flat
                shutil.rmtree(root)
            root = tmp / f"run{run}"
            ingests.append(ingest(root, xb))
        loads = [first_query(root, xq) for _ in range(repeats)]
    col = stack.enter_context(latentdb.connect(root)).get_collection("pypi")

    def search(vectors: FloatMatrix) -> Hits:
        return latentdb_hits(col.query(vectors=vectors, k=K, exact=True, include=["distances"]))

    system = System("latentdb", lambda: search(xq), lambda i: search(xq[i]), memory=memory)
    # The default include adds documents and metadatas: the cost of assembling results.
    system.extra["batch_default_include"] = lambda: col.query(vectors=xq, k=K, exact=True)
    system.setup = {"setup_s": min(ingests), "ingest_s": ingests, "first_query_s": loads}
    return system


# -- report -----------------------------------------------------------------------------


def machine_info() -> Result:
    """Enough about the machine and libraries to tell whether two runs are comparable."""
    return _machine_info() | {
        "faiss": faiss.__version__,
        "latentdb": latentdb.__version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
    }


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def table_rows(results: list[Result]) -> list[str]:
    """One markdown row per system, plus latentdb with its default include."""
    rows = [
        "| system | setup s | first query s | batch QPS best (median) "
        "| single QPS best (median) | recall@10 | recall@10 ε | single recall@10 "
        "| max Δdist | peak RSS MiB (+Δ) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        first = min(r["first_query_s"]) if "first_query_s" in r else None
        rss = r["rss_mib"]
        rows.append(
            f"| {r['system']} | {_fmt(r.get('setup_s'), 2)} | {_fmt(first, 2)} "
            f"| {_fmt(r['batch']['qps_best'])} ({_fmt(r['batch']['qps_median'])}) "
            f"| {_fmt(r['single']['qps_best'])} ({_fmt(r['single']['qps_median'])}) "
            f"| {r['recall']:.4f} | {r['recall_eps']:.4f} | {r['single_recall']:.4f} "
            f"| {r['max_dist_error']:.1e} | {_fmt(rss['peak'])} (+{_fmt(rss['rise'])}) |"
        )
        if "batch_default_include" in r:
            extra = r["batch_default_include"]
            rows.append(
                f"| {r['system']} (default include) | | "
                f"| {_fmt(extra['qps_best'])} ({_fmt(extra['qps_median'])}) | | | | | | |"
            )
    return rows


def ratios(results: list[Result]) -> Result:
    """latentdb QPS as a fraction of faiss_flat's (the goal is >= 0.8 in both regimes)."""
    by_name = {r["system"]: r for r in results}
    ours, ref = by_name["latentdb"], by_name["faiss_flat"]
    return {
        f"{mode}_{stat}": ours[mode][f"qps_{stat}"] / ref[mode][f"qps_{stat}"]
        for mode in ("batch", "single")
        for stat in ("best", "median")
    }


def render(report: Result) -> str:
    """The whole report as markdown: settings, table, ratios, threads, machine."""
    cfg, info, ratio = report["config"], report["machine"], report["ratios"]
    lines = [
        "# Exact search, 100k x 384 (pypi-minilm)",
        "",
        f"{info['date']} · {info['cpu']} · {info['cpu_count']} CPUs · "
        f"python {info['python']} · numpy {info['numpy']} · faiss {info['faiss']} · "
        f"latentdb {info['latentdb']}",
        "",
        f"{cfg['train']:,} vectors, {cfg['queries']:,} queries in batch, "
        f"{cfg['single']:,} timed one at a time, k={K}, best (median) of {cfg['repeats']} runs. "
        f"Recall@10 by id; ε: ann-benchmarks style, within {EPSILON} of the 10th true distance. "
        "Max Δdist: reported distance vs the file's, rank by rank. Setup: faiss add / "
        "latentdb ingest (best run); first query: fresh connection, index loaded from SQLite.",
        "",
        *table_rows(report["results"]),
        "",
        f"latentdb / faiss_flat QPS: batch {ratio['batch_best']:.2f}x "
        f"(median {ratio['batch_median']:.2f}x), single {ratio['single_best']:.2f}x "
        f"(median {ratio['single_median']:.2f}x); goal >= 0.8x.",
        "",
        f"Threads: faiss OpenMP max {info['faiss_omp_threads']}; "
        + "; ".join(
            f"{p['internal_api']} {p['version']} ({p['file']}) {p['num_threads']}"
            for p in info["threadpools"]
        )
        + f". Process peak RSS {report['max_rss_mib']:,.0f} MiB. Load average (1/5/15 min) "
        f"at start {cfg['load_avg_at_start']}, at end {info['load_avg_1_5_15']}.",
        "",
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ann-benchmarks HDF5")
    parser.add_argument("--queries", type=int, default=1000, help="test queries to use")
    parser.add_argument("--single", type=int, default=300, help="queries timed one per call")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timed measurement")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results", help="output dir")
    args = parser.parse_args(argv)
    args.single = min(args.single, args.queries)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    data = load_dataset(args.data, args.queries)
    with tempfile.TemporaryDirectory(prefix="latentdb-bench-") as tmp, ExitStack() as stack:
        systems = [
            numpy_system(data),
            faiss_system(data),
            latentdb_system(data, args.repeats, Path(tmp), stack),
        ]
        # Rounds interleave the systems, so a burst of load from elsewhere on the box
        # slows all of them alike instead of one, and the ratios stay fair.
        for round_ in range(args.repeats):
            for system in systems:
                run_round(system, args.single)
            print(f"round {round_ + 1}/{args.repeats} done", file=sys.stderr, flush=True)
        results = [summarize(system, data, args.single) for system in systems]
    report: Result = {
        "config": {
            "data": str(args.data),
            "train": len(data[0]),
            "queries": len(data[1]),
            "single": args.single,
            "repeats": args.repeats,
            "k": K,
            "load_avg_at_start": load_at_start,
        },
        "machine": machine_info(),
        "results": results,
        "ratios": ratios(results),
        "max_rss_mib": max_rss_mib(),
    }
    text = render(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "exact.md").write_text(text)
    (args.out / "exact.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
