"""The latentdb server fuzzed with schemathesis, long: thousands of requests drawn from
its own OpenAPI document, on loopback only.

Three servers' worth of callers, each over one keep-alive connection:

1. a server without keys (``--no-auth`` on loopback);
2. a server with keys, called with a write key for every collection;
3. the same server called with a read key scoped to one collection, and with no key.

Each server holds a collection "c" (4-d, no embedder, three records) that half the
requests for a named collection aim at, so they reach the engine rather than stopping
at "not found"; the rest name random collections. Positive cases follow the document,
negative cases break it (wrong types, missing fields, malformed bodies).

Counted per run: cases sent, server errors (5xx), statuses the document does not list
for the operation, replies whose body or content type the document does not describe,
and broken connections (a request that failed on the connection, or found it closed
by the server when it was not idle). Goal: 0 / 0 / 0 / 0. Writes
``bench/results/fuzz_server.md`` and ``.json``; each problem is listed with the request
that caused it.

    .venv/bin/python bench/fuzz_server.py                   # ~10 min on 2 cores
    .venv/bin/python bench/fuzz_server.py --minutes 1 --out /tmp/fuzz   # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the fuzzing driver is the test suite's

import latentdb  # noqa: E402
from latentdb.server import Keyring, ServerThread, build  # noqa: E402
from tests.server.fuzzing import KNOWN_COLLECTION, KNOWN_MODEL, FuzzReport, fuzz  # noqa: E402

WRITER = "fuzz-writer-0123456789abcdef"
READER = "fuzz-reader-0123456789abcdef"
KEYS = [WRITER, f"{READER}:read:{KNOWN_COLLECTION}"]
# Share of the time budget for each caller: the keyed server gets two callers.
CALLERS = [
    ("no keys", None, None, 0.4),
    ("write key", KEYS, WRITER, 0.35),
    ("read key for one collection", KEYS, READER, 0.15),
    ("keys wanted, none sent", KEYS, "", 0.1),
]


@contextmanager
def serving(folder: Path, keys: list[str] | None) -> Iterator[ServerThread]:
    with latentdb.connect(folder) as database:
        app = build(
            database,
            host="127.0.0.1",
            keys=Keyring.load(keys or [], environ={}),
            no_auth=keys is None,
            max_body=1 << 20,
            max_batch=1000,
        )
        with ServerThread(app) as server:
            yield server


def seed(url: str, api_key: str | None) -> None:
    with latentdb.connect(url, api_key=api_key) as db:
        # require_model=False: the fuzzer's writes (model= null or a random name)
        # still reach the vector checks behind the model rule; the collections it
        # creates itself require model=.
        collection = db.get_or_create_collection(
            KNOWN_COLLECTION, dimension=4, embedder=None, model=KNOWN_MODEL, require_model=False
        )
        collection.upsert(
            ["a", "b", "c"],
            vectors=np.eye(4)[:3],
            documents=["one", "two", "three"],
            metadatas=[{"n": 1}, {"n": 2}, {"n": 3}],
            model=KNOWN_MODEL,
        )


def run_caller(url: str, key: str | None, seconds: float, first_seed: int) -> FuzzReport:
    """Rounds of ``fuzz`` with new seeds until ``seconds`` are spent."""
    total = FuzzReport()
    deadline = time.monotonic() + seconds
    round_seed = first_seed
    while time.monotonic() < deadline - 1:
        headers = {} if not key else {"Authorization": f"Bearer {key}"}
        report = fuzz(
            url, headers=headers, cases=600, seconds=deadline - time.monotonic(), seed=round_seed
        )
        round_seed += 1
        for name in ("cases", "seconds", "idle_closes"):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        total.statuses.update(report.statuses)
        total.per_operation.update(report.per_operation)
        for name in ("server_errors", "undocumented", "nonconforming", "broken"):
            getattr(total, name).extend(getattr(report, name))
    return total


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# The server fuzzed with schemathesis",
        "",
        f"{report['date']}, {report['machine']}, schemathesis {report['schemathesis']}, "
        f"{report['minutes']} min budget, loopback only (`bench/fuzz_server.py`).",
        "",
        "| caller | cases | server errors (5xx) | undocumented statuses | "
        "replies unlike the document | broken connections | statuses seen |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for caller in report["callers"]:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(caller["statuses"].items()))
        lines.append(
            f"| {caller['caller']} | {caller['cases']:,} | {len(caller['server_errors'])} | "
            f"{len(caller['undocumented'])} | {len(caller['nonconforming'])} | "
            f"{len(caller['broken'])} | {statuses} |"
        )
    totals = report["totals"]
    lines += [
        f"| **all** | **{totals['cases']:,}** | **{totals['server_errors']}** | "
        f"**{totals['undocumented']}** | **{totals['nonconforming']}** | "
        f"**{totals['broken']}** | |",
        "",
        f"Goal 0 / 0 / 0 / 0: **{'PASS' if totals['problems'] == 0 else 'FAIL'}**. "
        f"Idle keep-alive connections the server closed after its 5 s timeout (not "
        f"breaks): {totals['idle_closes']}.",
        "",
        "Cases per operation (all callers):",
        "",
    ]
    per_operation: Counter[str] = Counter()
    for caller in report["callers"]:
        per_operation.update(caller["per_operation"])
    lines += [f"- `{operation}`: {count:,}" for operation, count in sorted(per_operation.items())]
    problems = [
        f"- {caller['caller']}: {line}"
        for caller in report["callers"]
        for name in ("server_errors", "undocumented", "nonconforming", "broken")
        for line in caller[name]
    ]
    if problems:
        lines += ["", "## Problems", "", *problems[:200]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="time budget in all")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    import schemathesis

    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "schemathesis": schemathesis.SCHEMATHESIS_VERSION,
        "latentdb": latentdb.__version__,
        "minutes": args.minutes,
        "callers": [],
    }
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as servers:
        urls: dict[str, str] = {}
        for number, (caller, keys, key, share) in enumerate(CALLERS):
            place = "keyed" if keys else "open"
            if place not in urls:
                urls[place] = servers.enter_context(serving(Path(scratch) / place, keys)).url
                seed(urls[place], WRITER if keys else None)
            print(f"{caller}: {args.minutes * share:.1f} min...", flush=True)
            result = run_caller(urls[place], key, args.minutes * 60 * share, number * 100)
            print(
                f"  {result.cases:,} cases, {len(result.problems())} problems, "
                f"statuses {dict(sorted(result.statuses.items()))}",
                flush=True,
            )
            entry = {
                "caller": caller,
                "cases": result.cases,
                "seconds": round(result.seconds, 1),
                "idle_closes": result.idle_closes,
                # (asdict would rebuild a Counter from its items, counting the pairs)
                "statuses": {str(s): n for s, n in sorted(result.statuses.items())},
                "per_operation": dict(sorted(result.per_operation.items())),
                "server_errors": result.server_errors,
                "undocumented": result.undocumented,
                "nonconforming": result.nonconforming,
                "broken": result.broken,
            }
            report["callers"].append(entry)
    callers = report["callers"]
    totals = {
        name: sum(len(caller[name]) for caller in callers)
        for name in ("server_errors", "undocumented", "nonconforming", "broken")
    }
    totals["cases"] = sum(caller["cases"] for caller in callers)
    totals["idle_closes"] = sum(caller["idle_closes"] for caller in callers)
    totals["problems"] = sum(
        totals[name] for name in ("server_errors", "undocumented", "nonconforming", "broken")
    )
    report["totals"] = totals
    text = markdown(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fuzz_server.md").write_text(text)
    (args.out / "fuzz_server.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
