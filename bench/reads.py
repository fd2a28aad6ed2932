"""Readers never wait: queries from several threads, under writes, with the default
``include``, and the query path's cost over a bare faiss search (issue 18).

One 100k collection of the shared PyPI MiniLM data (HNSW, tuned to the default recall
target), every row with its summary as document and three metadata fields, is built once
(``--db`` keeps it for the next run) and then measured in rounds, each phase for
``--seconds`` (BLAS and faiss pinned to one thread per query; queries cycle through the
test set, one per call):

1. ``ids``: ids-only queries (``include=[]``) on one thread, and on two threads at once
   (goal: two give >= 1.7x one).
2. ``default``: the default include (documents, metadatas, distances) on one thread, with
   the hot-row cache emptied first (``cold``: the first pass over the test queries) and
   warm (goal: >= 0.7x ids-only).
3. ``writes``: one reader thread's latency alone, then beside a writer thread that adds
   100 new rows (with documents and metadata) ``--write-rate`` times a second, as the
   server's mixed phase does (goal: p50 with writes <= 1.5x without). The rows written
   are deleted at the end of the round.
4. ``overhead``: ids-only ``query()`` against faiss's own ``search`` on the graph inside
   the collection's segment, same ef, alternating passes (goal: <= 15 us a query).

Run from the repository root: ``.venv/bin/python bench/reads.py`` (writes
``bench/results/reads.{md,json}``); ``--quick`` for a smoke run on 20k rows.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from _common import (
    DEFAULT_DATA,
    MODEL,
    REPO,
    FloatMatrix,
    K,
    Result,
    fmt,
    load_average,
    load_dataset,
    machine_info,
    package_versions,
    score,
    thread_limit,
)

import latentdb

TEXTS = DEFAULT_DATA.with_name("pypi-minilm-100k.texts.jsonl.gz")
NAME = "pypi"
DEFAULT_FIELDS = ["distances", "documents", "metadatas"]


def summaries(rows: int) -> list[dict[str, Any]]:
    """The train rows' texts and package names, in row order."""
    with gzip.open(TEXTS, "rt") as lines:
        train = [row for row in map(json.loads, lines) if row["split"] == "train"]
    return train[:rows]


def build(path: Path, train: FloatMatrix) -> latentdb.Collection:
    """The collection at ``path``, made (and optimized) unless it is there already."""
    db = latentdb.connect(path)
    if NAME in db.list_collections():
        collection = db.get_collection(NAME)
        if collection.count() == train.shape[0]:
            print(f"reusing {path} ({train.shape[0]:,} rows)", flush=True)
            return collection
        db.delete_collection(NAME)
    collection = db.create_collection(NAME, dimension=train.shape[1], index="hnsw")
    texts = summaries(train.shape[0])
    started = time.perf_counter()
    for start in range(0, train.shape[0], 10_000):
        part = texts[start : start + 10_000]
        collection.add(
            [str(i) for i in range(start, start + len(part))],
            vectors=train[start : start + len(part)],
            model=MODEL,
            documents=[row["text"] for row in part],
            metadatas=[
                {"name": row["name"], "bucket": i % 100, "length": len(row["text"])}
                for i, row in enumerate(part, start=start)
            ],
        )
    print(f"ingested in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    collection.optimize()
    print(f"optimized in {time.perf_counter() - started:.1f} s", flush=True)
    return collection


def run_queries(
    collection: latentdb.Collection,
    queries: FloatMatrix,
    seconds: float,
    include: list[str],
    offset: int = 0,
    latencies: list[float] | None = None,
) -> int:
    """One query per call for ``seconds``, cycling through ``queries``; how many ran."""
    count, n = 0, queries.shape[0]
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        if start >= deadline:
            return count
        position = (offset + count) % n
        collection.query(vectors=queries[position : position + 1], k=K, include=include)
        if latencies is not None:
            latencies.append(time.perf_counter() - start)
        count += 1


def threads_qps(
    collection: latentdb.Collection, queries: FloatMatrix, seconds: float, threads: int
) -> float:
    """Queries a second of ``threads`` threads querying at once (ids only)."""
    counts = [0] * threads

    def worker(slot: int) -> None:
        counts[slot] = run_queries(collection, queries, seconds, [], offset=slot * 500)

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(slot,)) for slot in range(threads)]
    for worker_thread in workers:
        worker_thread.start()
    for worker_thread in workers:
        worker_thread.join()
    return sum(counts) / (time.perf_counter() - started)


def writes_phase(
    collection: latentdb.Collection,
    queries: FloatMatrix,
    seconds: float,
    rate: float,
    round_number: int,
) -> Result:
    """A reader's latencies alone, then beside a writer adding 100 rows ``rate`` times a
    second; the rows are deleted after."""
    alone: list[float] = []
    run_queries(collection, queries, seconds, DEFAULT_FIELDS, latencies=alone)
    rng = np.random.default_rng(round_number)
    stop = threading.Event()
    written: list[str] = []
    write_times: list[float] = []

    def writer() -> None:
        batch = 0
        while not stop.is_set():
            started = time.perf_counter()
            ids = [f"w{round_number}-{batch}-{i}" for i in range(100)]
            vectors = rng.normal(size=(100, queries.shape[1])).astype(np.float32)
            collection.add(
                ids, vectors=vectors, model=MODEL, documents=[f"written {i}" for i in ids],
                metadatas=[{"name": i, "bucket": -1, "length": 0} for i in ids],
            )  # fmt: skip
            written.extend(ids)
            write_times.append(time.perf_counter() - started)
            batch += 1
            stop.wait(max(0.0, 1.0 / rate - (time.perf_counter() - started)))

    writer_thread = threading.Thread(target=writer)
    writer_thread.start()
    beside: list[float] = []
    try:
        run_queries(collection, queries, seconds, DEFAULT_FIELDS, latencies=beside)
    finally:
        stop.set()
        writer_thread.join()
    collection.delete(written)
    return {
        "p50_alone_ms": 1e3 * statistics.median(alone),
        "p99_alone_ms": 1e3 * float(np.percentile(alone, 99)),
        "p50_writes_ms": 1e3 * statistics.median(beside),
        "p99_writes_ms": 1e3 * float(np.percentile(beside, 99)),
        "ratio_p50": statistics.median(beside) / statistics.median(alone),
        "writes": len(write_times),
        "write_p50_ms": 1e3 * statistics.median(write_times) if write_times else None,
    }


def overhead_phase(collection: latentdb.Collection, queries: FloatMatrix, passes: int) -> Result:
    """ids-only query() against faiss's search on the same graph, same ef, alternating;
    best and median of the per-query difference."""
    index = collection._database.index(collection._state)  # type: ignore[attr-defined]
    segment = index.sealed[0][1]
    ef = index.search_settings()["ef"]
    parameters = faiss.SearchParametersHNSW(efSearch=ef)
    n = min(queries.shape[0], 1000)

    def faiss_pass() -> float:
        started = time.perf_counter()
        for position in range(n):
            segment.index.search(queries[position : position + 1], K, params=parameters)
        return (time.perf_counter() - started) / n

    def latentdb_pass() -> float:
        started = time.perf_counter()
        for position in range(n):
            collection.query(vectors=queries[position : position + 1], k=K, include=[])
        return (time.perf_counter() - started) / n

    faiss_pass(), latentdb_pass()  # warm up
    differences, faiss_times, latentdb_times = [], [], []
    for _ in range(passes):
        bare, ours = faiss_pass(), latentdb_pass()
        faiss_times.append(bare)
        latentdb_times.append(ours)
        differences.append(ours - bare)
    return {
        "ef": ef,
        "faiss_qps1": 1 / min(faiss_times),
        "latentdb_qps1": 1 / min(latentdb_times),
        "overhead_us_median": 1e6 * statistics.median(differences),
        "overhead_us_best": 1e6 * min(differences),
    }


def one_round(
    collection: latentdb.Collection, queries: FloatMatrix, args: argparse.Namespace, number: int
) -> Result:
    seconds = args.seconds
    one = threads_qps(collection, queries, seconds, 1)
    two = threads_qps(collection, queries, seconds, 2)
    state = collection._state  # type: ignore[attr-defined]
    state.rows.clear()
    hits_before, misses_before = state.rows.hits, state.rows.misses
    cold_n = min(queries.shape[0], int(one * seconds / 4) or 1)
    started = time.perf_counter()
    for position in range(cold_n):
        collection.query(vectors=queries[position : position + 1], k=K, include=DEFAULT_FIELDS)
    cold = cold_n / (time.perf_counter() - started)
    cold_hit_rate = (state.rows.hits - hits_before) / max(
        1, state.rows.hits - hits_before + state.rows.misses - misses_before
    )
    warm = run_queries(collection, queries, seconds, DEFAULT_FIELDS) / seconds
    result = {
        "ids_qps1": one,
        "ids_2threads_qps": two,
        "parallel_ratio": two / one,
        "default_cold_qps1": cold,
        "default_cold_queries": cold_n,
        "default_cold_cache_hit_rate": cold_hit_rate,
        "default_warm_qps1": warm,
        "default_warm_ratio": warm / one,
        "default_cold_ratio": cold / one,
        "writes": writes_phase(collection, queries, seconds, args.write_rate, number),
        "overhead": overhead_phase(collection, queries, args.passes),
        "load": load_average(),
    }
    print(json.dumps(result, indent=1, default=float), flush=True)
    return result


def report(results: Result, out: Path) -> None:
    rounds = results["rounds"]

    def med(getter: Any) -> float:
        return float(statistics.median(getter(r) for r in rounds))

    lines = [
        "# Readers never wait: threads, writes, the default include, the query path",
        "",
        f"{results['machine']['date']} · {results['machine']['cpu']} · "
        f"{results['machine']['cpu_count']} CPUs · load average at start "
        f"{results['load_start']}, at end {results['load_end']}",
        "",
        f"Data: {results['rows']:,} rows of {Path(results['data']).name} (HNSW, tuned "
        f"{results['params']}), each with its summary as document and 3 metadata fields; "
        f"{results['queries']} test queries, one per call, k={K}, recall@10 at the "
        f"defaults {results['recall']:.4f}. {len(rounds)} rounds of {results['seconds']} s "
        "phases; each cell is the median over rounds (min-max in brackets). "
        "BLAS and faiss use one thread per query.",
        "",
        "| measure | value | goal |",
        "|---|--:|---|",
    ]

    def cell(getter: Any, digits: int = 0) -> str:
        values = [getter(r) for r in rounds]
        return (
            f"{fmt(statistics.median(values), digits)} "
            f"({fmt(min(values), digits)}-{fmt(max(values), digits)})"
        )

    w = lambda key: lambda r: r["writes"][key]  # noqa: E731
    o = lambda key: lambda r: r["overhead"][key]  # noqa: E731
    rows = [
        ("ids-only qps1, 1 thread", cell(lambda r: r["ids_qps1"]), ""),
        ("ids-only queries/s, 2 threads", cell(lambda r: r["ids_2threads_qps"]), ""),
        ("2 threads / 1 thread", cell(lambda r: r["parallel_ratio"], 2), ">= 1.7"),
        ("default include qps1, warm", cell(lambda r: r["default_warm_qps1"]), ""),
        ("default include / ids-only, warm", cell(lambda r: r["default_warm_ratio"], 2), ">= 0.7"),
        ("default include qps1, cold cache", cell(lambda r: r["default_cold_qps1"]), ""),
        ("default include / ids-only, cold", cell(lambda r: r["default_cold_ratio"], 2), ""),
        ("reader p50 ms, alone", cell(w("p50_alone_ms"), 3), ""),
        ("reader p50 ms, beside writes", cell(w("p50_writes_ms"), 3), ""),
        ("p50 with writes / without", cell(w("ratio_p50"), 2), "<= 1.5"),
        ("reader p99 ms, alone / beside writes",
         f"{cell(w('p99_alone_ms'), 2)} / {cell(w('p99_writes_ms'), 2)}", ""),
        ("writes of 100 rows in the phase (p50 ms each)",
         f"{cell(w('writes'))} ({cell(w('write_p50_ms'), 1)})", ""),
        ("faiss qps1 on the same graph, same ef", cell(o("faiss_qps1")), ""),
        ("latentdb ids-only qps1 in the same passes", cell(o("latentdb_qps1")), ""),
        ("query path over faiss, us (median of passes)", cell(o("overhead_us_median"), 1),
         "<= 15"),
        ("query path over faiss, us (best pass)", cell(o("overhead_us_best"), 1), ""),
    ]  # fmt: skip
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    goals = {
        "parallel reads >= 1.7x": med(lambda r: r["parallel_ratio"]) >= 1.7,
        "default include >= 0.7x ids-only (warm)": med(lambda r: r["default_warm_ratio"]) >= 0.7,
        "p50 with writes <= 1.5x": med(w("ratio_p50")) <= 1.5,
        "query path <= 15 us over faiss": med(o("overhead_us_median")) <= 15,
    }
    lines += ["", "Goals (medians): " + "; ".join(
        f"{name}: {'met' if ok else 'NOT met'}" for name, ok in goals.items()
    ) + ".", ""]  # fmt: skip
    lines += [
        "Cold: the hot-row cache emptied, then the first "
        f"{rounds[0]['default_cold_queries']} test queries (hit rate "
        f"{statistics.median(r['default_cold_cache_hit_rate'] for r in rounds):.2f}: "
        "rows shared between those queries' hits). Writes: a writer thread adds 100 rows "
        f"{results['write_rate']} times a second while one reader queries with the default "
        "include; the writer shares the process (and its GIL) with the reader.",
        "",
    ]
    results["goals"] = goals
    (out / "reads.md").write_text("\n".join(lines))
    (out / "reads.json").write_text(json.dumps(results, indent=1, default=float))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--db", type=Path, help="where the collection is kept (temp if not)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=8.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=5, help="overhead passes per round")
    parser.add_argument("--write-rate", type=float, default=10.0, help="writes a second")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    parser.add_argument("--quick", action="store_true", help="20k rows, short phases")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.seconds, args.rounds, args.passes = 20_000, 2.0, 1, 2
    train, queries, truth = load_dataset(args.data, args.queries)
    train = train[: args.rows]
    folder = args.db or Path(tempfile.mkdtemp(prefix="latentdb-reads-"))
    results: Result = {
        "machine": machine_info(),
        "versions": package_versions(["faiss-cpu", "numpy"]),
        "data": str(args.data),
        "rows": args.rows,
        "queries": args.queries,
        "seconds": args.seconds,
        "write_rate": args.write_rate,
        "load_start": load_average(),
    }
    with thread_limit(2):
        collection = build(folder, train)
    with thread_limit(1):
        found = collection.query(vectors=queries, k=K, include=[]).ids
        ids = np.array([[int(i) for i in row] for row in found], dtype=np.int64)
        if args.rows == 100_000:
            results["recall"] = score(train, queries, ids, truth)["recall"]
        else:
            results["recall"] = float("nan")
        results["params"] = collection.index_status().params
        results["rounds"] = [
            one_round(collection, queries, args, number) for number in range(args.rounds)
        ]
    results["load_end"] = load_average()
    if not args.quick:
        report(results, args.out)
    else:
        report(results, Path(tempfile.mkdtemp(prefix="latentdb-reads-out-")))


if __name__ == "__main__":
    sys.exit(main())
