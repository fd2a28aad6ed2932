"""latentdb over HTTP on loopback: a mixed read/write load, and batch queries against
the embedded engine.

1. Mixed load: ``--clients`` threads (default 16), each with its own connection, for
   ``--duration`` seconds (default 60): 90% single queries (k=10), 10% adds of 100 new
   rows. Every error is counted; afterwards every acknowledged id must be stored.
2. Batch throughput: the test queries in batches of 100, through the server with the
   binary vector form (and the JSON form, for reference) against the same calls in
   process, in alternating rounds. Goal: HTTP binary at least 0.5x embedded.

The server is ``latentdb serve`` in its own process with an API key, as users run it;
the load runs in this process. Both share the machine's cores, so on a 2-core machine
the client threads' HTTP work competes with the server's. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _common import (
    DEFAULT_DATA,
    DIMENSION,
    MODEL,
    FloatMatrix,
    K,
    Result,
    exact_top_k,
    fmt,
    load_average,
    load_dataset,
    machine_info,
    package_versions,
    pad_ids,
    score,
)

import latentdb

KEY = "bench-key-0123456789abcdef"
INGEST_BATCH = 10_000
QUERY_BATCH = 100
WRITE_ROWS = 100
WRITE_SHARE = 0.10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def build(folder: Path, xb: FloatMatrix) -> Result:
    """The collection the server will serve: ingest and optimize, in process."""
    started = time.perf_counter()
    with latentdb.connect(folder) as db:
        collection = db.create_collection(
            "pypi", embedder=None, dimension=DIMENSION, model=MODEL, index="auto"
        )
        for low in range(0, len(xb), INGEST_BATCH):
            ids = [str(i) for i in range(low, min(low + INGEST_BATCH, len(xb)))]
            collection.add(ids, vectors=xb[low : low + INGEST_BATCH], model=MODEL)
        ingested = time.perf_counter() - started
        collection.optimize()
        status = collection.index_status()
    return {
        "rows": len(xb),
        "ingest_s": round(ingested, 2),
        "optimize_s": round(time.perf_counter() - started - ingested, 2),
        "index": {"kind": status.kind, "params": status.params},
    }


def start_server(folder: Path, port: int) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "latentdb.cli", "serve", str(folder),
        "--port", str(port), "--api-key", KEY, "--max-batch", "10000",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            latentdb.connect(f"http://127.0.0.1:{port}", api_key=KEY).close()
            return server
        except latentdb.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {server.communicate()[0]}") from None
            time.sleep(0.2)


# -- batch throughput -------------------------------------------------------------------


def batch_pass(collection: latentdb.Collection, xq: FloatMatrix) -> tuple[float, Any]:
    """Seconds to answer every query, QUERY_BATCH per call, and the id rows found."""
    found: list[list[str]] = []
    started = time.perf_counter()
    for low in range(0, len(xq), QUERY_BATCH):
        result = collection.query(vectors=xq[low : low + QUERY_BATCH], k=K, include=["distances"])
        found.extend(result.ids)
    return time.perf_counter() - started, found


def batch_throughput(
    folder: Path, url: str, xb: FloatMatrix, xq: FloatMatrix, truth: Any, repeats: int
) -> Result:
    systems: dict[str, latentdb.Database] = {
        "embedded": latentdb.connect(folder),
        "http_binary": latentdb.connect(url, api_key=KEY, vector_format="binary"),
        "http_json": latentdb.connect(url, api_key=KEY, vector_format="json"),
    }
    collections = {name: db.get_collection("pypi") for name, db in systems.items()}
    times: dict[str, list[float]] = {name: [] for name in systems}
    recall: dict[str, float] = {}
    try:
        for collection in collections.values():  # warm-up: loads the index
            collection.query(vectors=xq[:QUERY_BATCH], k=K)
        for _ in range(repeats):  # rounds interleave the systems: drift hits all alike
            for name, collection in collections.items():
                elapsed, found = batch_pass(collection, xq)
                times[name].append(elapsed)
                ids = pad_ids([[int(i) for i in row] for row in found])
                recall[name] = score(xb, xq, ids, truth)["recall"]
    finally:
        for db in systems.values():
            db.close()
    result: Result = {}
    for name, seconds in times.items():
        result[name] = {
            "qps_best": len(xq) / min(seconds),
            "qps_median": len(xq) / float(np.median(seconds)),
            "seconds": seconds,
            "recall": recall[name],
        }
    for name in ("http_binary", "http_json"):
        result[name]["vs_embedded_best"] = result[name]["qps_best"] / result["embedded"]["qps_best"]
        result[name]["vs_embedded_median"] = (
            result[name]["qps_median"] / result["embedded"]["qps_median"]
        )
    return result


# -- mixed load -------------------------------------------------------------------------


def mixed_load(url: str, xb: FloatMatrix, xq: FloatMatrix, clients: int, duration: float) -> Result:
    """``clients`` threads of 90% queries / 10% adds for ``duration`` seconds."""
    latencies: dict[str, list[float]] = {"query": [], "add": []}
    errors: list[str] = []
    acknowledged: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(number: int) -> None:
        rng = random.Random(number)
        noise = np.random.default_rng(number)
        mine: dict[str, list[float]] = {"query": [], "add": []}
        written: list[str] = []
        failed: list[str] = []
        with latentdb.connect(url, api_key=KEY) as db:
            collection = db.get_collection("pypi")
            start.wait()
            batch = 0
            while time.perf_counter() < stop_at[0]:
                write = rng.random() < WRITE_SHARE
                began = time.perf_counter()
                try:
                    if write:
                        rows = xb[noise.integers(0, len(xb), WRITE_ROWS)]
                        rows = rows + noise.normal(0, 0.02, rows.shape).astype(np.float32)
                        ids = [f"c{number}-{batch}-{i}" for i in range(WRITE_ROWS)]
                        collection.add(ids, vectors=rows, model=MODEL)
                        written.extend(ids)  # acknowledged: must be there afterwards
                        batch += 1
                    else:
                        collection.query(vectors=xq[rng.randrange(len(xq))], k=K)
                except Exception as error:
                    failed.append(f"{type(error).__name__}: {error}")
                mine["add" if write else "query"].append(time.perf_counter() - began)
        with lock:
            for kind, values in mine.items():
                latencies[kind].extend(values)
            acknowledged.extend(written)
            errors.extend(failed)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + duration
    started = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started

    with latentdb.connect(url, api_key=KEY) as db:
        collection = db.get_collection("pypi")
        count = collection.count()
        missing = 0
        for low in range(0, len(acknowledged), 5000):
            chunk = acknowledged[low : low + 5000]
            missing += len(chunk) - len(collection.get(chunk, include=[]).ids)
        status = collection.index_status()

    def summary(values: list[float]) -> Result:
        ms = np.asarray(values) * 1e3
        return {
            "count": len(values),
            "per_s": len(values) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "max_ms": float(ms.max()) if len(ms) else None,
        }

    return {
        "clients": clients,
        "duration_s": elapsed,
        "query": summary(latencies["query"]),
        "add": summary(latencies["add"]),
        "all": summary(latencies["query"] + latencies["add"]),
        "rows_written": len(acknowledged),
        "errors": len(errors),
        "error_samples": errors[:10],
        "acknowledged_missing": missing,
        "count_after": count,
        "count_expected": len(xb) + len(acknowledged),
        "index_after": {
            "kind": status.kind,
            "indexed": status.indexed,
            "pending": status.pending,
            "segments": status.segments,
            "building": status.building,  # a seal of the rows written meanwhile under way
        },
    }


# -- report -----------------------------------------------------------------------------


def markdown(report: Result) -> str:
    mixed, batch, setup = report["mixed"], report["batch"], report["build"]
    lines = [
        "# latentdb server on loopback",
        "",
        f"{report['machine']['date']}, {report['machine']['cpu']} "
        f"({report['machine']['cpu_affinity']} cores), load average at start "
        f"{report['load_start']}, at end {report['load_end']}.",
        "",
        f"Data: {report['data']} ({setup['rows']:,} x {DIMENSION}), collection built in "
        f"process ({setup['ingest_s']} s ingest + {setup['optimize_s']} s optimize, "
        f"{setup['index']['kind']} {setup['index']['params']}), then served by "
        "`latentdb serve` (one process, an API key) on 127.0.0.1; the load runs in the "
        "bench process on the same cores.",
        "",
        f"## Mixed load: {mixed['clients']} clients, 90% queries / 10% adds of "
        f"{WRITE_ROWS} rows, {mixed['duration_s']:.0f} s",
        "",
        "| operation | count | per second | p50 ms | p99 ms | max ms |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for kind in ("query", "add", "all"):
        row = mixed[kind]
        lines.append(
            f"| {kind} | {row['count']:,} | {fmt(row['per_s'], 1)} | {fmt(row['p50_ms'], 2)} "
            f"| {fmt(row['p99_ms'], 2)} | {fmt(row['max_ms'], 1)} |"
        )
    lines += [
        "",
        f"Errors: **{mixed['errors']}**. Rows acknowledged: {mixed['rows_written']:,}; "
        f"missing afterwards: **{mixed['acknowledged_missing']}**; count "
        f"{mixed['count_after']:,} (expected {mixed['count_expected']:,}). Index after the "
        f"run: {mixed['index_after']}.",
        "",
        f"## Batch queries, {QUERY_BATCH} per call, {report['queries']} queries, "
        f"best of {report['repeats']} (median)",
        "",
        "| transport | QPS | vs embedded | recall@10 |",
        "|---|--:|--:|--:|",
    ]
    for name in ("embedded", "http_binary", "http_json"):
        row = batch[name]
        ratio = (
            "1.00"
            if name == "embedded"
            else (f"{row['vs_embedded_best']:.2f} ({row['vs_embedded_median']:.2f})")
        )
        lines.append(
            f"| {name} | {row['qps_best']:,.0f} ({row['qps_median']:,.0f}) | {ratio} "
            f"| {row['recall']:.4f} |"
        )
    goal = batch["http_binary"]["vs_embedded_best"] >= 0.5
    lines += [
        "",
        f"Goal (HTTP binary >= 0.5x embedded): {'met' if goal else 'NOT met'}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train", type=int, default=None, help="first N train rows (smoke)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    xb, xq, truth = load_dataset(args.data, args.queries)
    if args.train is not None:
        xb = xb[: args.train]
        truth = exact_top_k(xb, xq)
    report: Result = {
        "data": str(args.data.name),
        "queries": len(xq),
        "repeats": args.repeats,
        "load_start": load_average(),
        "machine": machine_info()
        | package_versions(["faiss-cpu", "fastapi", "uvicorn", "httpx", "orjson"]),
    }
    with tempfile.TemporaryDirectory(prefix="latentdb-server-bench-") as work:
        folder = Path(work) / "db"
        print(f"building {len(xb):,} rows...", flush=True)
        report["build"] = build(folder, xb)
        port = free_port()
        server = start_server(folder, port)
        url = f"http://127.0.0.1:{port}"
        try:
            print("batch throughput...", flush=True)
            report["batch"] = batch_throughput(folder, url, xb, xq, truth, args.repeats)
            print(f"mixed load, {args.clients} clients, {args.duration:.0f} s...", flush=True)
            report["mixed"] = mixed_load(url, xb, xq, args.clients, args.duration)
            report["server_metrics"] = httpx.get(
                f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}
            ).text
        finally:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=120)
    report["load_end"] = load_average()
    text = markdown(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "server.md").write_text(text)
    (args.out / "server.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
