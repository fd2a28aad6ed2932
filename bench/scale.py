"""latentdb at 100k, 300k and 1M rows on one machine, with recall measured on the queries
users send (issue 20).

Data: the shared PyPI MiniLM vectors (100k) plus mixtures ``normalize(0.7 x_i + 0.3 x_j +
N(0, 0.01^2))`` of random pairs of them (seed 0) up to the size; queried with the file's
1,000 real test queries, whose exact top-10 over the rows of each size is computed here
(latentdb's exact scan). Every row gets ``u`` (uniform 0-999) for a 10% filter.

For each size, in a fresh folder: ingest (batches of 10k), ``optimize()``, the folder's
size; then in a fresh process, reopen + the first query and its RSS; then qps1 and
recall@10 at the defaults on the 1,000 test queries, one per call. Then the first 500
of them are the live sample (recorded as a collection with ``sample_rate=1`` records
them): the index measures its live recall on them and re-tunes on them when it is
below the target, and recall is measured again on those 500, on the other 500 (never
recorded: the out-of-sample check) and on 1,000 mixtures of pairs of test queries;
then all 1,000 are recorded (the sample is in), measured, and recall measured again.
Last, a fresh process times the first 10% filtered query and its recall.

    .venv/bin/python bench/scale.py --sizes 100000,300000,1000000

Writes ``bench/results/scale.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from _common import (
    DEFAULT_DATA,
    MODEL,
    REPO,
    FloatMatrix,
    Result,
    dir_mib,
    load_average,
    machine_info,
    package_versions,
    thread_limit,
    unit_rows,
)

import latentdb
from latentdb.index import exact_search

K = 10
BATCH = 10_000
MIX_SEED = 0
QUERIES = 1000
RECORDED = 500  # of them, the live sample
FILTER = {"u": {"$lt": 100}}


def mixtures(base: FloatMatrix, count: int, seed: int) -> FloatMatrix:
    rng = np.random.default_rng(seed)
    out = np.empty((count, base.shape[1]), dtype=np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        i, j = rng.integers(len(base), size=n), rng.integers(len(base), size=n)
        noise = rng.normal(0, 0.01, size=(n, base.shape[1])).astype(np.float32)
        out[start : start + n] = unit_rows(0.7 * base[i] + 0.3 * base[j] + noise)
    return out


def exact(rows: FloatMatrix, queries: FloatMatrix, allowed: np.ndarray | None = None) -> np.ndarray:
    """Exact top-K by inner product (the rows are unit length), with latentdb's exact
    scan: numpy's or faiss's kernel, whichever this machine runs faster."""
    if allowed is None:
        return exact_search(queries, rows, K, "ip")[1]
    positions = np.flatnonzero(allowed)
    return positions[exact_search(queries, np.ascontiguousarray(rows[positions]), K, "ip")[1]]


def recall(found: list[list[str]], truth: np.ndarray) -> float:
    hits = sum(len({int(i) for i in row} & set(truth[n].tolist())) for n, row in enumerate(found))
    return hits / (K * len(found))


def pass_of(collection: latentdb.Collection, queries: FloatMatrix) -> tuple[float, list[list[str]]]:
    found = []
    started = time.perf_counter()
    for query in queries:
        found.append(collection.query(vectors=query, k=K, include=[]).ids[0])
    return len(queries) / (time.perf_counter() - started), found


CHILD = r"""
import json, sys, time, resource
import numpy as np
import latentdb
path, mode = sys.argv[1], sys.argv[2]
queries = np.load(sys.argv[3])
started = time.perf_counter()
db = latentdb.connect(path)
collection = db.get_collection("scale")
reopened = None
if mode == "reopen":
    ids = collection.query(vectors=queries[0], k=10, include=[]).ids[0]
else:  # the first query on "u" after the reopen and a first (unfiltered) query
    collection.query(vectors=queries[-1], k=10, include=[])
    reopened = time.perf_counter() - started
    started = time.perf_counter()
    where = {"u": {"$lt": 100}}
    ids = collection.query(vectors=queries[0], k=10, where=where, include=[]).ids[0]
seconds = time.perf_counter() - started
rest = []
if mode == "filter":
    for query in queries:
        hits = collection.query(vectors=query, k=10, where={"u": {"$lt": 100}}, include=[])
        rest.append(hits.ids[0])
status = open("/proc/self/status").read().split("\n")
rss = [int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS")][0]
out = {"seconds": seconds, "reopened": reopened, "rss_mib": rss, "first": ids, "found": rest}
print(json.dumps(out))
"""


def child(path: Path, mode: str, queries_file: Path) -> Result:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode, str(queries_file)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: Result = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def one_size(
    size: int, base: FloatMatrix, tests: FloatMatrix, others: FloatMatrix, workdir: Path
) -> Result:
    rows = base[:size] if size <= len(base) else np.concatenate(
        (base, mixtures(base, size - len(base), MIX_SEED))
    )  # fmt: skip
    u = np.random.default_rng(MIX_SEED + 1).integers(0, 1000, size=size)
    folder = workdir / f"db-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    result: Result = {"rows": size, "load_start": load_average()}
    truth = exact(rows, tests)
    truth_others = exact(rows, others)
    truth_filtered = exact(rows, tests, allowed=u < 100)
    spec = {"kind": "auto", "sample_rate": 1.0, "sample_per_minute": 1_000_000}
    with latentdb.connect(folder) as db:
        collection = db.create_collection(
            "scale", dimension=rows.shape[1], embedder=None, model=MODEL, index=spec
        )
        started = time.perf_counter()
        for start in range(0, size, BATCH):
            stop = min(size, start + BATCH)
            collection.add(
                [str(i) for i in range(start, stop)], vectors=rows[start:stop], model=MODEL,
                metadatas=[{"u": int(x)} for x in u[start:stop]],
            )  # fmt: skip
        result["ingest_s"] = time.perf_counter() - started
        started = time.perf_counter()
        collection.optimize()
        result["optimize_s"] = time.perf_counter() - started
        result["status_built"] = vars(collection.index_status())
    result["disk_mib"] = dir_mib(folder)
    result["sqlite_mib"] = sum(dir_mib(f) for f in folder.glob("latentdb.sqlite3*"))
    # The index: its graphs (indexes/) and the vector packs they map, which the store
    # adopted as its copy of the rows (vectors/, absent before the packs).
    packs = folder / "vectors"
    result["index_mib"] = dir_mib(folder / "indexes") + (dir_mib(packs) if packs.exists() else 0)
    mapped = [*(folder / "indexes").rglob("index.faiss"), *packs.rglob("*.flat")]
    result["index_file_mib"] = sum(path.stat().st_size for path in mapped) / 2**20
    queries_file = workdir / "tests.npy"
    np.save(queries_file, tests)
    reopen = child(folder, "reopen", queries_file)
    result["reopen_s"], result["rss_mib"] = reopen["seconds"], reopen["rss_mib"]
    with latentdb.connect(folder) as db, thread_limit(1):
        collection = db.get_collection("scale")
        collection.query(vectors=tests[0], k=K, include=[])  # loads the index
        result.update(live_stages(collection, tests, truth, others, truth_others))
    filtered = child(folder, "filter", queries_file)
    result["first_filter_ms"] = 1e3 * filtered["seconds"]
    result["reopen_then_filter_s"] = filtered["reopened"] + filtered["seconds"]
    result["rss_after_filters_mib"] = filtered["rss_mib"]  # after 1,001 queries
    result["filter_recall"] = recall([filtered["first"], *filtered["found"][1:]], truth_filtered)
    result["load_end"] = load_average()
    shutil.rmtree(folder, ignore_errors=True)
    return result


def live_stages(
    collection: latentdb.Collection,
    tests: FloatMatrix,
    truth: np.ndarray,
    others: FloatMatrix,
    truth_others: np.ndarray,
) -> Result:
    """Recall at the defaults on the test queries; then the first RECORDED of them
    recorded and measured live (a re-tune where due), recall on those, on the rest
    (never recorded: the out-of-sample check) and on the others; then all the test
    queries recorded (1,000 sampled), measured again, and recall once more."""
    index = collection._state.index  # type: ignore[attr-defined]
    index.sampler.clear()  # only this pass's queries are recorded
    index._live_at = time.monotonic()  # and measured after it, not during it
    qps, found = pass_of(collection, tests)
    result: Result = {
        "defaults": {
            "params": dict(collection.index_status().params),
            "qps1": qps,
            "recall": recall(found, truth),
        }
    }
    for stage, sample in (("", tests[:RECORDED]), ("_all", tests)):
        # Only the sample is recorded: the passes below are queries too, and with a
        # sample_rate of 1 they would fill the ring (capacity 1,000) with the others.
        index.sampler.clear()
        for query in sample:
            index.sampler.offer(query[None, :])
        started = time.perf_counter()
        index.measure_live()
        result[f"live{stage}_s"] = time.perf_counter() - started
        status = collection.index_status()
        result[f"live{stage}"] = {
            "recall": status.live_recall,
            "queries": status.live_queries,
            "params": dict(status.params),
            "source": index.last_tuning.source if index.last_tuning else None,
        }
        index._live_at = time.monotonic()  # no background measurement in these passes
        qps, found = pass_of(collection, tests)
        qps_others, found_others = pass_of(collection, others)
        result[f"after_live{stage}"] = {
            "qps1": qps,
            "recall": recall(found, truth),
            "recall_recorded": recall(found[:RECORDED], truth[:RECORDED]),
            "recall_unrecorded": recall(found[RECORDED:], truth[RECORDED:]),
            "recall_others": recall(found_others, truth_others),
            "qps1_others": qps_others,
        }
    return result


def markdown(results: list[Result], meta: Result) -> str:
    lines = [
        "# A million rows, and recall on the queries users send",
        "",
        f"{meta['date']} · {meta['machine']} · load average at start {meta['load']} · "
        f"`bench/scale.py --sizes {meta['sizes']}` · {meta['versions']}",
        "",
        "Data: the shared PyPI MiniLM rows (100k) plus mixtures normalize(0.7 x_i + 0.3 x_j +"
        " N(0, 0.01²)) of random pairs (seed 0); queries: the file's 1,000 real test queries"
        " (others: 1,000 mixtures of pairs of them). Live = the index's measurement on "
        "the first 500 test queries recorded, then a re-tune on them when recall is below "
        "the target (or clearly above target + 0.015); after: recall on those 500, on the "
        "other 500 (never recorded), and on the others. All 1,000 sampled: the 1,000 test "
        "queries recorded, measured again (a re-tune where due), and recall on all 1,000 "
        "and on the others. qps1: one query per call, BLAS and faiss on one "
        "thread. Reopen and first filter: a fresh process (the first query on `u` comes "
        "after the reopen and a first unfiltered query; the column is read then, or "
        "taken from the file optimize() saved). RSS: that fresh process after its first "
        "query; index file: the saved faiss index it maps or reads (its graph, and the "
        "vector pack the graph maps and the store keeps as its copy of the rows). Disk: "
        "the whole folder after optimize(), SQLite (with its WAL) and the index (graphs "
        "+ packs) apart.",
        "",
        "| rows | ingest s | optimize s | disk MiB (SQLite + index) | reopen + 1st query s |"
        " RSS MiB (index file) | tuned (rows) | recall at it | qps1 | live recall (queries) | "
        "re-tuned | after: recorded / not recorded / others | qps1 after | 1st 10% filter "
        "ms (reopen + it, s) | filter recall | all 1,000 sampled: live (queries), "
        "setting | after: all 1,000 / others | qps1 then |",
        "|" + "--:|" * 18,
    ]
    for r in results:
        d, live, after = r["defaults"], r["live"], r["after_live"]
        lines.append(
            f"| {r['rows']:,} | {r['ingest_s']:.1f} | {r['optimize_s']:.1f} | "
            f"{r['disk_mib']:,.0f} ({sqlite_cell(r)}{r['index_mib']:,.0f}) | {r['reopen_s']:.2f} | "
            f"{r['rss_mib']:,.0f} ({r['index_file_mib']:,.0f}) | "
            f"{d['params']} | {d['recall']:.4f} | {d['qps1']:,.0f} | "
            f"{live['recall']:.4f} ({live['queries']}) | {live['params']} ({live['source']}) | "
            f"{after['recall_recorded']:.4f} / {after['recall_unrecorded']:.4f} / "
            f"{after['recall_others']:.4f} | {after['qps1']:,.0f} | "
            f"{r['first_filter_ms']:.0f} ({r['reopen_then_filter_s']:.2f}) | "
            f"{r['filter_recall']:.4f} | {all_cells(r)} |"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        growth = last["rows"] / first["rows"]
        lines += [
            "",
            f"Growth from {first['rows']:,} to {last['rows']:,} rows ({growth:.0f}x): "
            f"optimize {last['optimize_s'] / first['optimize_s']:.1f}x, "
            f"disk {last['disk_mib'] / first['disk_mib']:.1f}x, "
            f"RSS {last['rss_mib'] / first['rss_mib']:.1f}x, "
            f"reopen {last['reopen_s'] / first['reopen_s']:.1f}x.",
        ]
    return "\n".join(lines) + "\n"


def sqlite_cell(r: Result) -> str:
    """ "SQLite + " of the disk column (absent from runs before it)."""
    return f"{r['sqlite_mib']:,.0f} + " if "sqlite_mib" in r else ""


def all_cells(r: Result) -> str:
    """The columns of the second live stage (absent from runs before it)."""
    if "live_all" not in r:
        return "- | - | -"
    live, after = r["live_all"], r["after_live_all"]
    return (
        f"{live['recall']:.4f} ({live['queries']}), {live['params']} | "
        f"{after['recall']:.4f} / {after['recall_others']:.4f} | {after['qps1']:,.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    parser.add_argument("--workdir", type=Path, help="where the databases go (a temp dir)")
    args = parser.parse_args()
    with h5py.File(args.data) as f:
        base = unit_rows(np.asarray(f["train"], dtype=np.float32))
        test = unit_rows(np.asarray(f["test"], dtype=np.float32))
    tests = test[:QUERIES]
    others = test[QUERIES : 2 * QUERIES] if len(test) >= 2 * QUERIES else mixtures(test, QUERIES, 7)
    sizes = [int(s) for s in args.sizes.split(",")]
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info().get("cpu", "?"),
        "load": load_average(),
        "sizes": args.sizes,
        "versions": package_versions(["latentdb", "faiss-cpu", "numpy"]),
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="latentdb-scale-", dir=args.workdir) as tmp:
        for size in sizes:
            print(f"{size:,} rows...", flush=True)
            results.append(one_size(size, base, tests, others, Path(tmp)))
            print(json.dumps(results[-1], default=str)[:2000], flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "scale.json").write_text(
                json.dumps({"meta": meta, "results": results}, indent=2, default=str)
            )
            (args.out / "scale.md").write_text(markdown(results, meta))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
