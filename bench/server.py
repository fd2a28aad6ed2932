"""latentdb serve against Chroma's own server, phase by phase, on loopback (issue 18).

One run builds the same collection in both servers and puts them through the same
phases with the same load generator, one server after the other within each phase:

1. 1 client, read-only: one k=10 query per request;
2. 4 clients, read-only;
3. 16 clients, read-only;
4. 16 clients, mixed: 90% queries, 10% adds of 100 new rows;
5. 16 clients, every query filtered to 10% of the rows ({"bucket": {"$lt": 100}}).

Goals: latentdb's query throughput at least 2x Chroma's in every phase, and its query
p99 in the mixed phase at most 100 ms; no errors, and every acknowledged row stored.

latentdb: the collection is built in this process (adds of 10,000 rows, optimize()),
then served by ``latentdb serve --workers N`` in its own processes with an API key.
Chroma: ``chroma run`` (the Rust server in the chromadb wheel) started by this script
from its own virtual environment (``--chroma-venv``, made on first use with ``python -m
venv`` and ``pip install chromadb==1.5.9``; chromadb is not a dependency of latentdb),
at log level warn (it logs every request at info), filled through Chroma's Python client
(bench/_chroma_load.py), stopped at the end.

The load: bench/_load.py, a process of its own per phase, a thread and one keep-alive
connection per client, requests prepared before the clock starts, raw sockets (an HTTP
client library costs more per request than a server does, on the same 2 cores). Each
phase runs ``--warmup`` seconds unmeasured, then ``--duration`` seconds measured. Before
each phase the script waits until both servers are idle (a background index build or
compaction from the previous phase would slow the other server's phase).

Then, as before: batch queries (100 per call) through the server (binary and JSON
vector forms) against the same calls in process; goal: HTTP binary >= 0.5x embedded.

    .venv/bin/python bench/server.py              # ~15 min on 2 cores
    .venv/bin/python bench/server.py --quick --out /tmp/server   # 10k rows, 5 s phases
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil
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
from _load import BUCKETS, PROTOCOLS, Connection

import latentdb

BENCH = Path(__file__).resolve().parent
KEY = "bench-key-0123456789abcdef"
INGEST_BATCH = 10_000
QUERY_BATCH = 100
WRITE_ROWS = 100
WRITE_SHARE = 0.10
CHROMA_VERSION = "1.5.9"
GOAL_RATIO = 2.0
GOAL_MIXED_P99_MS = 100.0
# A server is idle when its processes use less than this share of one core...
QUIET_CPU = 0.10
# ... over this many consecutive 1 s samples.
QUIET_SAMPLES = 2


@dataclass(frozen=True)
class Phase:
    name: str
    clients: int
    write_share: float = 0.0
    filtered: bool = False


PHASES = (
    Phase("1 client", 1),
    Phase("4 clients", 4),
    Phase("16 clients", 16),
    Phase("16 clients, 10% adds", 16, write_share=WRITE_SHARE),
    Phase("16 clients, 10% filter", 16, filtered=True),
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(ready: Any, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit code {process.poll()})")
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def stop(process: subprocess.Popen[bytes], timeout: float = 120) -> int | None:
    """SIGTERM, then wait for the process to finish; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# -- latentdb -----------------------------------------------------------------------------


def build_latentdb(folder: Path, xb: FloatMatrix) -> Result:
    """The collection the server will serve: ingest and optimize, in process."""
    started = time.perf_counter()
    with latentdb.connect(folder) as db:
        collection = db.create_collection(
            "pypi", embedder=None, dimension=DIMENSION, model=MODEL, index="auto"
        )
        for low in range(0, len(xb), INGEST_BATCH):
            high = min(low + INGEST_BATCH, len(xb))
            collection.add(
                [str(i) for i in range(low, high)],
                vectors=xb[low:high],
                metadatas=[{"bucket": i % BUCKETS} for i in range(low, high)],
                model=MODEL,
            )
        ingested = time.perf_counter() - started
        collection.optimize()
        status = collection.index_status()
    return {
        "rows": len(xb),
        "ingest_s": round(ingested, 2),
        "optimize_s": round(time.perf_counter() - started - ingested, 2),
        "index": {"kind": status.kind, "params": status.params},
    }


def start_latentdb(folder: Path, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "latentdb.cli", "serve", str(folder), "--port", str(port),
        "--api-key", KEY, "--max-batch", "10000", "--workers", str(workers),
    ]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), server, "latentdb serve", 600)
    return server


# -- Chroma -------------------------------------------------------------------------------


def chroma_venv(venv: Path) -> Path:
    """The peer's environment, made on first use; the path of its ``chroma`` command."""
    chroma = venv / "bin" / "chroma"
    if not chroma.exists():
        print(f"making {venv} with chromadb=={CHROMA_VERSION} (first use only)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"chromadb=={CHROMA_VERSION}"], check=True
        )
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import chromadb; print(chromadb.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if found != CHROMA_VERSION:
        raise SystemExit(f"{venv} holds chromadb {found}, not {CHROMA_VERSION}: remove it")
    return chroma


def start_chroma(chroma: Path, folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    # Chroma's server logs every request at info level: warn keeps it to problems.
    environment = {**os.environ, "RUST_LOG": "warn"}
    command = [
        str(chroma),
        "run",
        "--path",
        str(folder),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
    heartbeat = f"http://127.0.0.1:{port}/api/v2/heartbeat"
    wait_until(lambda: answers(heartbeat), server, "chroma run", 300)
    return server


def load_chroma(venv: Path, port: int, vectors: Path) -> Result:
    """Fill the server through Chroma's Python client (in the peer's environment)."""
    done = subprocess.run(
        [str(venv / "bin" / "python"), str(BENCH / "_chroma_load.py"), str(port), str(vectors)],
        check=True,
        capture_output=True,
        text=True,
    )
    loaded: Result = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


# -- measuring ----------------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for process in tree(pid):
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def wait_quiet(pids: list[int], limit: float) -> float:
    """Wait until the servers' processes are idle (at most ``limit`` seconds); the wait."""
    started = time.monotonic()
    calm = 0
    before = sum(cpu_seconds(pid) for pid in pids)
    while time.monotonic() - started < limit and calm < QUIET_SAMPLES:
        time.sleep(1.0)
        now = sum(cpu_seconds(pid) for pid in pids)
        calm = calm + 1 if now - before < QUIET_CPU else 0
        before = now
    return time.monotonic() - started


def run_phase(spec: Result, work: Path, server_pid: int) -> Result:
    path = work / f"spec-{spec['server']}.json"
    path.write_text(json.dumps(spec))
    load_before, cpu_before = load_average(), cpu_seconds(server_pid)
    done = subprocess.run(
        [sys.executable, str(BENCH / "_load.py"), str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: Result = json.loads(done.stdout)
    result["server_cpu_s"] = cpu_seconds(server_pid) - cpu_before
    result["load_before"], result["load_after"] = load_before, load_average()
    served = result["query"]["count"] + result["add"]["count"]
    # CPU the server spent per request over the whole run (warm-up included).
    total = served * (spec["warmup"] + spec["duration"]) / spec["duration"]
    result["server_cpu_ms_per_request"] = 1e3 * result["server_cpu_s"] / max(total, 1)
    return result


def recall_of(system: str, spec: Result, xq: FloatMatrix, xb: FloatMatrix, truth: Any) -> Result:
    """Every test query once, one at a time, through the same requests the load sends."""
    protocol = PROTOCOLS[system](spec, xq, False)
    connection = Connection(spec["host"], spec["port"])
    found = []
    try:
        for request in protocol.queries:
            status, body = connection.request(request)
            if status != 200:
                raise RuntimeError(f"{system}: HTTP {status}: {body[:300]!r}")
            found.append([as_row(i) for i in orjson.loads(body)["ids"][0]])
    finally:
        connection.close()
    return score(xb, xq, pad_ids(found), truth)


# -- batch throughput (latentdb alone) ------------------------------------------------------


def as_row(identifier: str) -> int:
    """The train row an id names; -1 for the rows the mixed phase added."""
    return int(identifier) if identifier.isdigit() else -1


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
                ids = pad_ids([[as_row(i) for i in row] for row in found])
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


def check_latentdb(url: str, acknowledged: list[str], rows: int) -> Result:
    """Every acknowledged id is stored, and the count adds up."""
    with latentdb.connect(url, api_key=KEY) as db:
        collection = db.get_collection("pypi")
        count = collection.count()
        missing = 0
        for low in range(0, len(acknowledged), 5000):
            chunk = acknowledged[low : low + 5000]
            missing += len(chunk) - len(collection.get(chunk, include=[]).ids)
        status = collection.index_status()
    return {
        "count": count,
        "count_expected": rows + len(acknowledged),
        "acknowledged": len(acknowledged),
        "acknowledged_missing": missing,
        "index_after": {
            "kind": status.kind,
            "indexed": status.indexed,
            "pending": status.pending,
            "segments": status.segments,
            "building": status.building,
        },
    }


def chroma_count(port: int, loaded: Result) -> int:
    url = (
        f"http://127.0.0.1:{port}/api/v2/tenants/{loaded['tenant']}/databases/"
        f"{loaded['database']}/collections/{loaded['collection_id']}/count"
    )
    return int(httpx.get(url, timeout=60).json())


# -- report -------------------------------------------------------------------------------


def verdicts(report: Result) -> Result:
    phases = report["phases"]
    result: Result = {"ratio": {}, "ratio_met": {}}
    for phase in phases:
        ours, theirs = phase["latentdb"]["query"], phase.get("chroma", {}).get("query")
        if theirs is None or not theirs["per_s"]:
            continue
        ratio = ours["per_s"] / theirs["per_s"]
        result["ratio"][phase["name"]] = ratio
        result["ratio_met"][phase["name"]] = ratio >= GOAL_RATIO
    mixed = next((p for p in phases if p["write_share"] > 0), None)
    p99 = None if mixed is None else mixed["latentdb"]["query"]["p99_ms"]
    result["mixed_p99_ms"] = p99
    result["mixed_p99_met"] = p99 is not None and p99 <= GOAL_MIXED_P99_MS
    result["errors"] = {
        system: sum(p[system]["errors"] for p in phases if system in p)
        for system in ("latentdb", "chroma")
    }
    return result


def timelines(phase: Result) -> list[str]:
    """The mixed phase second by second: how the query rate held up as rows came in."""
    lines = [
        "",
        "Mixed phase by the second (queries started / adds started / slowest query ms):",
        "",
    ]
    for system in ("latentdb", "chroma"):
        if system in phase:
            seconds = phase[system]["timeline"]
            lines.append(
                f"- {system}: " + ", ".join(f"{q}/{a}/{fmt(slowest)}" for q, a, slowest in seconds)
            )
    return lines


def cell(row: Result) -> str:
    return f"{fmt(row['per_s'])} ({fmt(row['p50_ms'], 1)} / {fmt(row['p99_ms'], 1)})"


def markdown(report: Result) -> str:
    setup, machine, goals = report["build"], report["machine"], report["goals"]
    chroma = report.get("chroma")
    workers = report["workers"]
    lines = [
        "# latentdb serve against Chroma's server, on loopback",
        "",
        f"{machine['date']}, {machine['cpu']} ({machine['cpu_affinity']} cores), load average "
        f"at start {report['load_start']}, at end {report['load_end']} (other work on the "
        "machine included).",
        "",
        f"Data: {report['data']}, {setup['rows']:,} x {DIMENSION}, metadata `bucket = row % "
        f"{BUCKETS}`. latentdb: built in process ({setup['ingest_s']} s ingest + "
        f"{setup['optimize_s']} s optimize, {setup['index']['kind']} {setup['index']['params']}), "
        f"served by `latentdb serve --workers {workers}` ({workers} processes over one "
        "database: one Python process is held to one core by the GIL) with an API key.",
    ]
    if chroma is not None:
        lines.append(
            f"Chroma: `chroma run` (chromadb {chroma['chromadb']}, its Rust server), "
            f"RUST_LOG=warn, filled through its Python client in {chroma['ingest_s']} s, "
            f"default HNSW ({chroma['configuration']})."
        )
    lines += [
        "",
        f"Load: bench/_load.py in its own process per phase, one thread and one keep-alive "
        f"connection per client, raw sockets, requests prepared before the clock; one k={K} "
        "query per request asking for ids and distances (latentdb: its binary vector form; "
        "Chroma: JSON lists, as each Python client sends them). "
        f"{report['warmup_s']:g} s of warm-up, then {report['duration_s']:g} s measured per "
        "phase and server; the servers take turns within each phase, after both are idle. "
        "Everything shares the machine's cores.",
        "",
        "Recall@10 of the same requests, every test query once: "
        + ", ".join(f"{name} {value['recall']:.4f}" for name, value in report["recall"].items())
        + ".",
        "",
        "## Phases: query q/s (p50 / p99 ms)",
        "",
        f"| phase | latentdb | Chroma | ratio (goal >= {GOAL_RATIO:g}) | latentdb server CPU "
        "ms/request | Chroma server CPU ms/request | load avg (1 min) before |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for phase in report["phases"]:
        ours, theirs = phase["latentdb"], phase.get("chroma")
        ratio = goals["ratio"].get(phase["name"])
        verdict = "-"
        if ratio is not None:
            verdict = f"{ratio:.2f} {'met' if ratio >= GOAL_RATIO else '**NOT met**'}"
        loads = [f"{ours['load_before'][0]:.1f}"]
        if theirs is not None:
            loads.append(f"{theirs['load_before'][0]:.1f}")
        lines.append(
            f"| {phase['name']} | {cell(ours['query'])} | "
            f"{cell(theirs['query']) if theirs else '-'} | {verdict} | "
            f"{ours['server_cpu_ms_per_request']:.2f} | "
            f"{fmt(theirs['server_cpu_ms_per_request'], 2) if theirs else '-'} | "
            f"{' / '.join(loads)} |"
        )
    mixed = next((p for p in report["phases"] if p["write_share"] > 0), None)
    if mixed is not None:
        lines += [
            "",
            f"Mixed phase, adds of {WRITE_ROWS} rows: latentdb {cell(mixed['latentdb']['add'])}"
            + (f", Chroma {cell(mixed['chroma']['add'])}" if "chroma" in mixed else "")
            + " (adds/s, p50 / p99 ms). latentdb's query p99 in the mixed phase: "
            f"**{fmt(goals['mixed_p99_ms'], 1)} ms** (goal <= {GOAL_MIXED_P99_MS:g}: "
            f"{'met' if goals['mixed_p99_met'] else 'NOT met'}).",
        ]
        lines += timelines(mixed)
    lines += [
        "",
        f"Errors: latentdb {goals['errors']['latentdb']}, Chroma {goals['errors']['chroma']}. "
        f"latentdb afterwards: {report['latentdb_after']['acknowledged']:,} rows acknowledged, "
        f"**{report['latentdb_after']['acknowledged_missing']}** missing, count "
        f"{report['latentdb_after']['count']:,} (expected "
        f"{report['latentdb_after']['count_expected']:,}); index "
        f"{report['latentdb_after']['index_after']}.",
    ]
    if chroma is not None:
        lines.append(
            f"Chroma afterwards: count {report['chroma_after']['count']:,} (expected "
            f"{report['chroma_after']['count_expected']:,})."
        )
    lines += [
        "",
        "Waits for idle servers before each phase (s): "
        + ", ".join(f"{p['name']}: {p['quiet_wait_s']:.0f}" for p in report["phases"])
        + ".",
    ]
    batch = report.get("batch")
    if batch is not None:
        lines += [
            "",
            f"## Batch queries, {QUERY_BATCH} per call, {report['queries']} queries, "
            f"best of {report['repeats']} (median)",
            "",
            "After the phases: recall counts the mixed phase's added rows (noised copies of "
            "training rows) as misses where they displace true neighbours.",
            "",
            "| transport | QPS | vs embedded | recall@10 |",
            "|---|--:|--:|--:|",
        ]
        for name in ("embedded", "http_binary", "http_json"):
            row = batch[name]
            ratio = (
                "1.00"
                if name == "embedded"
                else f"{row['vs_embedded_best']:.2f} ({row['vs_embedded_median']:.2f})"
            )
            lines.append(
                f"| {name} | {row['qps_best']:,.0f} ({row['qps_median']:,.0f}) | {ratio} "
                f"| {row['recall']:.4f} |"
            )
        met = batch["http_binary"]["vs_embedded_best"] >= 0.5
        lines += ["", f"Goal (HTTP binary >= 0.5x embedded): {'met' if met else 'NOT met'}."]
    lines.append("")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=None, help="first N train rows")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=30.0, help="measured s per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured s per phase")
    parser.add_argument("--workers", type=int, default=2, help="latentdb serve --workers")
    parser.add_argument("--repeats", type=int, default=3, help="batch-query rounds")
    parser.add_argument("--quiet-limit", type=float, default=180.0, help="most s to wait idle")
    parser.add_argument(
        "--chroma-venv", type=Path, default=BENCH / ".chroma-venv", help="the peer's venv"
    )
    parser.add_argument("--no-chroma", action="store_true", help="latentdb alone")
    parser.add_argument("--phases", default=None, help="phase numbers to run, e.g. 1,3")
    parser.add_argument(
        "--quick", action="store_true", help="10k rows, 5 s phases, 1 batch round (a try)"
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    partial = args.quick or args.rows or args.phases or args.no_chroma
    if partial and args.out == BENCH / "results":
        parser.error("--quick, --rows, --phases and --no-chroma need --out (not bench/results)")
    if args.quick:
        args.rows = args.rows or 10_000
        args.duration, args.warmup, args.repeats, args.quiet_limit = 5.0, 1.0, 1, 30.0
    phases = PHASES
    if args.phases:
        phases = tuple(PHASES[int(n) - 1] for n in args.phases.split(","))
    chroma = None if args.no_chroma else chroma_venv(args.chroma_venv)

    xb, xq, truth = load_dataset(args.data, args.queries)
    if args.rows is not None and args.rows < len(xb):
        xb = xb[: args.rows]
        truth = exact_top_k(xb, xq)
    report: Result = {
        "data": str(args.data.name),
        "queries": len(xq),
        "repeats": args.repeats,
        "workers": args.workers,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "load_start": load_average(),
        "machine": machine_info()
        | package_versions(["faiss-cpu", "fastapi", "uvicorn", "uvloop", "httptools", "orjson"]),
    }
    servers: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="latentdb-server-bench-") as temporary:
        work = Path(temporary)
        np.save(work / "xq.npy", xq)
        np.save(work / "xb.npy", xb)
        try:
            print(f"building {len(xb):,} rows in latentdb...", flush=True)
            report["build"] = build_latentdb(work / "latentdb", xb)
            ours = free_port()
            servers["latentdb"] = start_latentdb(
                work / "latentdb", ours, args.workers, work / "latentdb.log"
            )
            specs: dict[str, Result] = {
                "latentdb": {
                    "server": "latentdb",
                    "host": "127.0.0.1",
                    "port": ours,
                    "key": KEY,
                    "collection": "pypi",
                    "model": MODEL,
                },
            }
            if chroma is not None:
                theirs = free_port()
                servers["chroma"] = start_chroma(
                    chroma, work / "chroma", theirs, work / "chroma.log"
                )
                print(f"loading {len(xb):,} rows into Chroma...", flush=True)
                loaded = load_chroma(args.chroma_venv, theirs, work / "xb.npy")
                report["chroma"] = loaded
                specs["chroma"] = {
                    "server": "chroma",
                    "host": "127.0.0.1",
                    "port": theirs,
                    "tenant": loaded["tenant"],
                    "database": loaded["database"],
                    "collection_id": loaded["collection_id"],
                }
            report["recall"] = {
                name: recall_of(name, spec, xq, xb, truth) for name, spec in specs.items()
            }
            pids = [server.pid for server in servers.values()]
            report["phases"] = []
            acknowledged: list[str] = []
            chroma_added = 0
            for number, phase in enumerate(phases):
                row: Result = {
                    "name": phase.name,
                    "clients": phase.clients,
                    "write_share": phase.write_share,
                    "filtered": phase.filtered,
                }
                order = list(specs) if number % 2 == 0 else list(reversed(specs))
                waited = 0.0
                for name in order:
                    waited += wait_quiet(pids, args.quiet_limit)
                    print(f"{phase.name}: {name}...", flush=True)
                    spec = specs[name] | {
                        "queries": str(work / "xq.npy"),
                        "pool": str(work / "xb.npy"),
                        "clients": phase.clients,
                        "warmup": args.warmup,
                        "duration": args.duration,
                        "filtered": phase.filtered,
                        "write_share": phase.write_share,
                        "write_rows": WRITE_ROWS,
                        "seed": number + 1,
                        "tag": f"p{number + 1}-",
                    }
                    result = run_phase(spec, work, servers[name].pid)
                    written = result.pop("acknowledged")
                    if name == "latentdb":
                        acknowledged.extend(written)
                    else:
                        chroma_added += len(written)
                    row[name] = result
                    query = result["query"]
                    print(
                        f"  {query['per_s']:.0f} q/s, p50 {fmt(query['p50_ms'], 1)} ms, "
                        f"p99 {fmt(query['p99_ms'], 1)} ms, errors {result['errors']} "
                        f"{result['error_samples'][:1]}",
                        flush=True,
                    )
                row["quiet_wait_s"] = waited
                report["phases"].append(row)
            url = f"http://127.0.0.1:{ours}"
            report["latentdb_after"] = check_latentdb(url, acknowledged, len(xb))
            if "chroma" in servers:
                report["chroma_after"] = {
                    "count": chroma_count(specs["chroma"]["port"], report["chroma"]),
                    "count_expected": len(xb) + chroma_added,
                }
                report["exit_codes"] = {"chroma": stop(servers.pop("chroma"))}
            print("batch throughput...", flush=True)
            wait_quiet([servers["latentdb"].pid], args.quiet_limit)
            report["batch"] = batch_throughput(work / "latentdb", url, xb, xq, truth, args.repeats)
            report["latentdb_metrics_one_worker"] = httpx.get(
                f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}
            ).text
        finally:
            for name, server in servers.items():
                report.setdefault("exit_codes", {})[name] = stop(server)
            for name in ("latentdb", "chroma"):
                log = work / f"{name}.log"
                if log.exists():
                    report.setdefault("server_logs_tail", {})[name] = log.read_text(
                        errors="replace"
                    )[-3000:]
    report["load_end"] = load_average()
    report["goals"] = verdicts(report)
    text = markdown(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "server.md").write_text(text)
    (args.out / "server.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
