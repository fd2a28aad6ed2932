"""What ``create_collection(..., reduce=r)`` saves and costs on the shared PyPI MiniLM data.

For each setting (the full 384 dimensions, then PCA to each ``--reduce`` value) the
100,000 train vectors go into a fresh collection (``index="hnsw"``, vectors given), and
``optimize()`` builds and tunes the index for the default recall target (0.95). Then,
with every collection open, timed passes of the 1,000 test queries, one query at a time
through ``Collection.query``, alternate between the settings (rounds in rotating order,
best pass kept) so the machine's drift hits them alike. Queries ask for ids and
distances only (``include=["distances"]``): reading documents from SQLite costs the
same at every setting and would hide the index's part.

Reported per setting: build time (add + optimize), the faiss index's size (serialized:
graph + vectors, in the reduced dimension), the anonymous memory the process gained
(RssAnon: the kept originals are memory-mapped from their file, which the page cache
holds and may drop), disk size of the index folder, tuned parameters, recall@10 against
the file's exact neighbours with the tuned re-rank and with none (``rerank=1``: the
reduced graph's own top 10, which is what the reduction alone costs), and queries per
second. Run from the repository root::

    .venv/bin/python bench/reduce.py                       # ~10 min on 2 cores
    .venv/bin/python bench/reduce.py --train 20000 --reduce 128 --rounds 1   # smoke run

Writes ``reduce.md`` and ``reduce.json`` under ``--out`` (default bench/results).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    DEFAULT_DATA,
    MODEL,
    REPO,
    dir_mib,
    fmt,
    load_dataset,
    machine_info,
    pad_ids,
    release_memory,
    score,
)

import latentdb

RESULTS = REPO / "bench" / "results"
BATCH = 10_000
# Ids and distances only: documents and metadata would be read from SQLite for every
# hit, the same cost at every setting, which would hide the index's part.
INCLUDE = ["distances"]


def rss_anon_mib() -> float:
    """This process's anonymous resident memory (heap, numpy arrays, faiss), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(folder: Path, xb: np.ndarray, reduce: int | None) -> tuple[Any, dict[str, Any]]:
    """A fresh optimized collection; its build figures."""
    release_memory()
    before = rss_anon_mib()
    started = time.perf_counter()
    db = latentdb.connect(folder)
    collection = db.create_collection(
        "c", dimension=xb.shape[1], embedder=None, index="hnsw", reduce=reduce, model=MODEL
    )
    ids = [str(i) for i in range(xb.shape[0])]
    for lo in range(0, xb.shape[0], BATCH):
        collection.add(ids[lo : lo + BATCH], vectors=xb[lo : lo + BATCH], model=MODEL)
    added = time.perf_counter()
    collection.optimize()
    done = time.perf_counter()
    release_memory()  # freed heap handed back: what stays is what the collection holds
    index = db.index(collection._state)
    (segment,) = (entry[1] for entry in index.sealed)
    status = collection.index_status()
    figures = {
        "reduce": reduce,
        "add_s": added - started,
        "optimize_s": done - added,
        "build_s": done - started,
        "index_mib": segment.memory_bytes() / 2**20,
        "index_dimension": int(segment.index.d),
        "rss_anon_rise_mib": rss_anon_mib() - before,
        "disk_index_mib": dir_mib(folder / "indexes"),
        "params": status.params,
        "tuned_recall": status.tuned_recall,
    }
    return collection, figures


def timed_pass(collection: Any, xq: np.ndarray, params: dict[str, int] | None) -> tuple[float, Any]:
    """Seconds for the queries one at a time, and the ids found."""
    found = []
    query = collection.query
    started = time.perf_counter()
    for row in range(xq.shape[0]):
        found.append(query(vectors=xq[row], k=10, params=params, include=INCLUDE).ids[0])
    return time.perf_counter() - started, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train", type=int, default=None, help="first N train rows")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--reduce", default="192,128,96,64", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    xb, xq, truth = load_dataset(args.data, args.queries)
    if args.train is not None:  # the file's neighbours are for all rows: recompute
        from _common import exact_top_k

        xb = np.ascontiguousarray(xb[: args.train])
        truth = exact_top_k(xb, xq)
    settings: list[int | None] = [None] + [int(r) for r in args.reduce.split(",") if r]
    info = machine_info()
    print(f"{xb.shape[0]:,} x {xb.shape[1]} rows, {xq.shape[0]:,} queries; settings {settings}")

    root = Path(tempfile.mkdtemp(prefix="latentdb-reduce-"))
    collections, rows = [], []
    try:
        for position, reduce in enumerate(settings):
            collection, figures = build(root / f"db{position}", xb, reduce)
            print(
                f"reduce={reduce}: built in {figures['build_s']:.1f} s, index "
                f"{figures['index_mib']:.1f} MiB, params {figures['params']}",
                flush=True,
            )
            collections.append(collection)
            rows.append(figures)
        best = [float("inf")] * len(settings)
        found: list[Any] = [None] * len(settings)
        for round_number in range(args.rounds):
            order = list(range(len(settings)))
            shift = round_number % len(order)
            for position in order[shift:] + order[:shift]:
                seconds, ids = timed_pass(collections[position], xq, None)
                best[position] = min(best[position], seconds)
                found[position] = ids
        for position, figures in enumerate(rows):
            figures["qps1"] = xq.shape[0] / best[position]
            figures.update(score(xb, xq, pad_ids(found[position]), truth))
            if figures["reduce"] is not None:
                _, plain = timed_pass(collections[position], xq, {"rerank": 1})
                figures["recall_without_rerank"] = score(xb, xq, pad_ids(plain), truth)["recall"]
        loads = info["load_avg_1_5_15"]
    finally:
        for collection in collections:
            collection._database.close()
        shutil.rmtree(root, ignore_errors=True)

    full = rows[0]
    lines = [
        f"# reduce=: PCA-projected HNSW on {xb.shape[0]:,} PyPI MiniLM vectors",
        "",
        f"{info['date']} · {info['cpu']} · {info['cpu_count']} CPUs · latentdb "
        f"{latentdb.__version__} · load average at start {loads}",
        "",
        f'`index="hnsw"` (M=32, efConstruction=200), tuned by `optimize()` for recall 0.95; '
        f"{xq.shape[0]:,} test queries one at a time through `Collection.query` "
        '(`include=["distances"]`), best of '
        f"{args.rounds} alternating passes; recall@10 against the file's exact neighbours. "
        "Index MiB: the faiss index serialized (graph + vectors in the indexed dimension). "
        "Anon MiB: the process's anonymous memory after the build minus before it (the "
        "kept 384-d originals of a reduced index are memory-mapped from disk instead). "
        'Without re-rank: `params={"rerank": 1}`, the reduced graph\'s own top 10.',
        "",
        "| indexed dimension | build s | index MiB | × full | anon MiB | disk MiB | params "
        "| recall@10 | without re-rank | qps1 | × full |",
        "|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for figures in rows:
        label = "384 (full)" if figures["reduce"] is None else str(figures["reduce"])
        plain = figures.get("recall_without_rerank")
        params = ", ".join(f"{k} {v}" for k, v in figures["params"].items())
        lines.append(
            f"| {label} | {figures['build_s']:.1f} | {figures['index_mib']:.1f} "
            f"| {figures['index_mib'] / full['index_mib']:.2f} "
            f"| {figures['rss_anon_rise_mib']:.0f} | {figures['disk_index_mib']:.0f} | {params} "
            f"| {figures['recall']:.3f} | {'—' if plain is None else f'{plain:.3f}'} "
            f"| {fmt(figures['qps1'])} | {figures['qps1'] / full['qps1']:.2f} |"
        )
    lines += ["", f"Load average at the end: {machine_info()['load_avg_1_5_15']}."]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reduce.md").write_text(report)
    payload = {"machine": info, "rows": xb.shape[0], "queries": xq.shape[0], "results": rows}
    (args.out / "reduce.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
