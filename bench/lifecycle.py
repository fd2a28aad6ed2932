"""The lifecycle state machine (tests/test_lifecycle.py) under a long hypothesis profile.

The same ``LifecycleMachine`` the test suite runs in a bounded profile: one collection
(``hnsw``, ``hnsw-sq8`` or ``ivf-pq``, with or without ``reduce=``, cosine/l2/ip, 8-16
dimensions, segments sealed every 64-336 rows) driven through add, upsert, update,
delete by ids and by filter, ``optimize()``, background seals, close + reopen and
SIGKILLed writer processes, and checked after every step against a plain-Python model:
count and get agree, exact answers equal a numpy brute force, no deleted id or stale
vector is ever returned, ANN recall@10 stays above 0.8.

Here with many more examples, longer runs and more kills per run. Run from the
repository root::

    .venv/bin/python bench/lifecycle.py                 # 200 examples x 50 steps
    .venv/bin/python bench/lifecycle.py --minutes 20    # as many as 20 minutes allow
    .venv/bin/python bench/lifecycle.py --examples 20 --steps 30   # a quick look

Writes ``lifecycle.md`` and ``lifecycle.json`` under ``--out`` (default bench/results):
the profile, examples run, steps checked, kills, time, and each failing example (as
hypothesis prints it). ``--keep-going`` records a failure and goes on with the next
round; ``--no-shrink`` reports failures unshrunk (shrinking replays kills and builds, and
hypothesis gives up on it after a few minutes). Exit status 1 on a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

import latentdb  # noqa: E402
from tests.test_lifecycle import RECALL_FLOOR, LifecycleMachine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="hypothesis max_examples")
    parser.add_argument("--steps", type=int, default=50, help="stateful_step_count")
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLed writers per run, at most")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (random if unset)")
    parser.add_argument(
        "--minutes", type=float, default=None, help="stop starting new rounds after this long"
    )
    parser.add_argument("--round", type=int, default=20, help="examples per hypothesis run")
    parser.add_argument(
        "--keep-going", action="store_true", help="record a failure and start the next round"
    )
    parser.add_argument(
        "--no-shrink",
        action="store_true",
        help="report failures as found (shrinking replays kills)",
    )
    parser.add_argument("--note", default="", help="a line for the report (what was tested)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    parser.add_argument("--name", default="lifecycle")
    args = parser.parse_args()

    class Machine(LifecycleMachine):
        max_kills = args.kills

    profile = settings(
        max_examples=min(args.round, args.examples),
        stateful_step_count=args.steps,
        deadline=None,
        database=None,
        report_multiple_bugs=False,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=[p for p in Phase if not (args.no_shrink and p in (Phase.shrink, Phase.explain))],
    )
    # As in the test suite: every warning is an error, and so is any exception in a
    # background thread (a failed seal warns from its builder thread).
    warnings.simplefilter("error")
    thread_errors: list[str] = []

    def record(hook: threading.ExceptHookArgs) -> None:
        thread_errors.append("".join(traceback.format_exception(hook.exc_value)))

    threading.excepthook = record
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    failures: list[dict[str, str]] = []
    rounds = 0
    # Rounds of ``--round`` examples each (fresh hypothesis runs), so that --minutes can
    # end the run between them with what was checked so far.
    while Machine.runs < args.examples and (args.keep_going or not failures):
        if args.minutes is not None and time.perf_counter() - started > 60 * args.minutes:
            break
        test = run_state_machine_as_test
        if args.seed is not None:
            from hypothesis import seed

            test = seed(args.seed + rounds)(run_state_machine_as_test)
        rounds += 1
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            try:
                test(Machine, settings=profile)
            except Exception as error:  # the failing example is in ``printed``
                failures.append(
                    {
                        "error": "".join(traceback.format_exception_only(error)).strip(),
                        "example": printed.getvalue().strip(),
                    }
                )
    seconds = time.perf_counter() - started
    for trace in thread_errors:
        failures.append({"error": "exception in a background thread", "example": trace})
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "note": args.note,
        "latentdb": str(Path(latentdb.__file__).parent),
        "profile": {
            "max_examples": args.examples,
            "stateful_step_count": args.steps,
            "max_kills_per_run": args.kills,
            "seed": args.seed,
            "examples_per_round": profile.max_examples,
            "shrink": not args.no_shrink,
            "keep_going": args.keep_going,
            "rounds": rounds,
            "recall_floor": RECALL_FLOOR,
        },
        "examples_run": Machine.runs,
        "steps_checked": Machine.steps,
        "kills": Machine.kills,
        "seconds": round(seconds, 1),
        "load_average": [round(load_start, 1), round(os.getloadavg()[0], 1)],
        "passed": not failures,
        "failures": failures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(report(result))
    sys.stdout.write(report(result))
    return 0 if not failures else 1


def report(result: dict[str, Any]) -> str:
    profile = result["profile"]
    lines = [
        "# Lifecycle state machine, long profile",
        "",
        f"{result['date']}; `bench/lifecycle.py` runs `tests/test_lifecycle.py`'s "
        "`LifecycleMachine` (the CI test runs 6 examples x 20 steps, at most 2 kills per run).",
    ]
    if result["note"]:
        lines += ["", result["note"]]
    lines += [
        "",
        "| | |",
        "|---|---|",
        f"| profile | max_examples={profile['max_examples']}, "
        f"stateful_step_count={profile['stateful_step_count']}, "
        f"at most {profile['max_kills_per_run']} SIGKILLs per run; "
        f"{profile['rounds']} rounds of up to {profile['examples_per_round']} examples, "
        f"seed {profile['seed']} |",
        f"| examples run | {result['examples_run']} |",
        f"| steps checked (invariants after each) | {result['steps_checked']} |",
        f"| writer processes SIGKILLed | {result['kills']} |",
        f"| time | {result['seconds']} s (load average {result['load_average'][0]} at start, "
        f"{result['load_average'][1]} at end) |",
        f"| failures | {len(result['failures'])} |",
        f"| result | {'PASS' if result['passed'] else 'FAIL'} |",
    ]
    for number, failure in enumerate(result["failures"], 1):
        lines += ["", f"## Failure {number}", "", "```", failure["error"], "```"]
        if failure["example"] and failure["example"] not in failure["error"]:
            lines += ["", "```", failure["example"], "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
