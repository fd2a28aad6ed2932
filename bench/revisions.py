"""Two revisions of latentdb, interleaved: ingest time and one-query-per-call speed.

For a refactor that must not change speed (issue 17: "qps1 and ingest on bench/ann.py
stay within 5% of today's in an interleaved run"). Each revision is a git worktree; each
measurement runs in a fresh process that imports latentdb from that worktree, and the
revisions take turns (A B B A ...), so drift of the machine (heat, other load) falls on
both alike.

Per revision and round:

* ingest: 100k vectors of the shared PyPI set (cosine, index "auto") added in batches of
  10,000 into a new folder, wall time until the last add returns;
* qps1: the set's test queries one per call on one thread, against a collection built once
  per revision with ``optimize()`` (the same data), with ``include=("distances",)`` as
  bench/ann.py does, and with the default include (documents and metadatas, here None);
* recall@10 of the same answers against the file's exact neighbours.

Run: ``python bench/revisions.py --base 0fac094`` (``--head`` defaults to the working
tree). Writes bench/results/revisions.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    DEFAULT_DATA,
    MODEL,
    REPO,
    load_dataset,
    machine_info,
    thread_limit,
)

Result = dict[str, Any]
BATCH = 10_000


def worker(task: str, folder: Path, data: Path, queries: int, repeats: int) -> Result:
    """One measurement, in this process (latentdb imported from PYTHONPATH)."""
    # This file's checkout went first on sys.path (for bench._common, which imports no
    # latentdb), and an editable install maps "latentdb" to its own checkout: drop both,
    # so that the revision on PYTHONPATH is the latentdb imported.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    import latentdb

    wanted = Path(os.environ["PYTHONPATH"]).resolve()
    if not Path(latentdb.__file__).resolve().is_relative_to(wanted):
        raise SystemExit(f"imported {latentdb.__file__}, not the revision in {wanted}")

    xb, xq, (true_ids, _) = load_dataset(data, queries)
    ids = [str(i) for i in range(len(xb))]
    if task in ("ingest", "build"):
        with latentdb.connect(folder) as db:
            collection = db.create_collection(
                "bench", dimension=xb.shape[1], embedder=None, model=MODEL
            )
            started = time.perf_counter()
            for lo in range(0, len(xb), BATCH):
                collection.add(ids[lo : lo + BATCH], vectors=xb[lo : lo + BATCH], model=MODEL)
            ingest_s = time.perf_counter() - started
            if task == "ingest":
                return {"ingest_s": ingest_s, "rows": len(xb)}
            started = time.perf_counter()
            collection.optimize()
            return {"optimize_s": time.perf_counter() - started}
    result: Result = {"latentdb": str(Path(latentdb.__file__).parent)}
    with latentdb.connect(folder) as db, thread_limit(1):
        collection = db.get_collection("bench")
        for label, include in (("qps1", ("distances",)), ("qps1_default", None)):
            kwargs: Result = {} if include is None else {"include": include}
            for query in xq[:20]:  # warm up
                collection.query(vectors=query, k=10, **kwargs)
            best, found = float("inf"), list[list[str]]()
            for _ in range(repeats):
                found = []
                started = time.perf_counter()
                for query in xq:
                    found.append(collection.query(vectors=query, k=10, **kwargs).ids[0])
                best = min(best, time.perf_counter() - started)
            result[label] = len(xq) / best
            hits = [
                len({int(i) for i in row} & set(truth.tolist())) / 10
                for row, truth in zip(found, true_ids, strict=True)
            ]
            result[f"recall_{label}"] = float(np.mean(hits))
    return result


def run(revision: Path, task: str, folder: Path, args: argparse.Namespace) -> Result:
    """``worker`` in a fresh process that imports latentdb from ``revision``."""
    environment = {**os.environ, "PYTHONPATH": str(revision)}
    command = [
        sys.executable,
        __file__,
        "--worker",
        task,
        "--folder",
        str(folder),
        "--data",
        str(args.data),
        "--queries",
        str(args.queries),
        "--repeats",
        str(args.repeats),
    ]
    reply = subprocess.run(
        command, env=environment, capture_output=True, text=True, check=True, cwd=revision
    )
    result: Result = json.loads(reply.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="0fac094", help="git revision to compare against")
    parser.add_argument("--head", default=None, help="git revision (default: working tree)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (best kept)")
    parser.add_argument("--rounds", type=int, default=2, help="A B then B A, this many times")
    parser.add_argument(
        "--tasks", default="ingest,query", help="what to measure: ingest, query or both"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder, args.data, args.queries, args.repeats)))
        return
    with tempfile.TemporaryDirectory(prefix="latentdb-revisions-") as scratch:
        root = Path(scratch)
        trees = {"base": root / "base", "head": REPO if args.head is None else root / "head"}
        for name, revision in (("base", args.base), ("head", args.head)):
            if revision is not None:
                subprocess.run(
                    ["git", "worktree", "add", "--detach", str(trees[name]), revision],
                    cwd=REPO,
                    check=True,
                    capture_output=True,
                )
        try:
            rows = measure(trees, root, args)
        finally:
            for name in ("base", "head"):
                if trees[name] != REPO:
                    subprocess.run(
                        ["git", "worktree", "remove", "--force", str(trees[name])],
                        cwd=REPO,
                        check=False,
                    )
    report(rows, args)


def measure(trees: dict[str, Path], root: Path, args: argparse.Namespace) -> list[Result]:
    rows: list[Result] = []
    tasks = set(args.tasks.split(","))
    built = {}
    for name, tree in trees.items() if "query" in tasks else ():
        built[name] = root / f"built-{name}"
        optimize = run(tree, "build", built[name], args)
        print(f"{name}: built in {optimize['optimize_s']:.1f} s", flush=True)
        rows.append({"revision": name, "round": -1, **optimize})
    for round_ in range(args.rounds):
        order = ["base", "head"] if round_ % 2 == 0 else ["head", "base"]
        for name in order:
            row: Result = {"revision": name, "round": round_}
            if "ingest" in tasks:
                row |= run(trees[name], "ingest", root / f"ingest-{name}-{round_}", args)
            if "query" in tasks:
                row |= run(trees[name], "query", built[name], args)
            rows.append(row)
            print(f"round {round_} {name}: " + json.dumps(row), flush=True)
    return rows


def report(rows: list[Result], args: argparse.Namespace) -> None:
    def best(name: str, key: str, low: bool = False) -> float:
        values = [float(r[key]) for r in rows if r["revision"] == name and key in r]
        return min(values) if low else max(values)

    def median(name: str, key: str) -> float:
        return float(np.median([r[key] for r in rows if r["revision"] == name and key in r]))

    lines = [
        "# Two revisions, interleaved (bench/revisions.py)",
        "",
        f"base `{args.base}`, head `{args.head or 'working tree'}`; {args.rounds} rounds "
        f"(A B, B A, ...); best and median of each. 100k shared PyPI vectors, "
        f"{args.queries} queries, "
        "k=10, one query per call on one thread.",
        "",
        "| | base (best) | head (best) | head / base | medians, head / base |",
        "|---|--:|--:|--:|--:|",
    ]
    summary: Result = {}
    for key, label, low in (
        ("ingest_s", "ingest 100k (s, lower is better)", True),
        ("qps1", "qps1, include=distances", False),
        ("qps1_default", "qps1, default include", False),
        ("recall_qps1", "recall@10", False),
        ("optimize_s", "optimize (s, once)", True),
    ):
        if not any(key in r for r in rows):
            continue
        base, head = best("base", key, low), best("head", key, low)
        summary[key] = {"base": base, "head": head, "ratio": head / base}
        middle = median("head", key) / median("base", key)
        lines.append(f"| {label} | {base:,.3f} | {head:,.3f} | {head / base:.3f} | {middle:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "revisions.md").write_text(text)
    report = {"rows": rows, "summary": summary, "machine": machine_info()}
    (args.out / "revisions.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
