"""How long the space report takes on the shared PyPI MiniLM vectors, and what it says,
at several scales.

    .venv/bin/python bench/analyze.py [--scales 12500,25000,50000,100000] [--index flat|hnsw]

For each scale n, loads the first n rows of the train split (384-d, float16 on disk)
into a fresh collection in a temporary folder (with ``--index hnsw``, builds and tunes
the graph first: about a minute at 100k), then times ``Collection.analyze(sample=...)``
alone, then the exact near-duplicate count alone (the report's own step, timed apart).
Writes bench/results/analyze.md (a table of the figures by scale, and the largest
scale's report as the CLI prints it) and bench/results/analyze.json. The goal (issues 7
and 19): under 30 s at 100k on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from _common import DEFAULT_DATA, MODEL, REPO, machine_info, require_data
from rich.console import Console

import latentdb
from latentdb.analysis import SpaceReport, count_near_duplicates
from latentdb.cli import report_tables

RESULTS = REPO / "bench" / "results"
GOAL_SECONDS = 30.0
HEADER = (
    "| rows | s (CPU s) | relative contrast (Gaussian) | TwoNN at n/8 / n/4 / n/2 / n | "
    "Levina-Bickel | hubness skew (95%) [queries] | Gaussian, counted | centered (95%) | "
    "near-duplicate pairs | exact count s |\n|---:|---:|---|---|---|---|---|---|---:|---:|"
)


def measure(train: np.ndarray, count: int, *, sample: int, index: str) -> dict[str, Any]:
    """Load the first ``count`` rows into a fresh collection and time its report."""
    with tempfile.TemporaryDirectory() as folder:
        db = latentdb.connect(Path(folder) / "db")
        collection = db.create_collection(
            "pypi", embedder=None, dimension=train.shape[1], model=MODEL, index=index
        )
        started = time.perf_counter()
        for start in range(0, count, 10_000):
            part = train[start : min(start + 10_000, count)]
            collection.add(
                [str(i) for i in range(start, start + len(part))], vectors=part, model=MODEL
            )
        if index != "flat":
            collection.optimize()
        load_seconds = time.perf_counter() - started
        started, cpu = time.perf_counter(), time.process_time()
        report = collection.analyze(sample=sample)
        seconds = time.perf_counter() - started
        # CPU seconds on both cores: the wall time grows with other work's load on the
        # shared machine, this far less.
        cpu_seconds = time.process_time() - cpu
        db.close()
    started = time.perf_counter()
    counted = count_near_duplicates(train[:count], report.near_duplicate_radius)
    pairs_seconds = time.perf_counter() - started
    return {
        "rows": count,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "load_seconds": load_seconds,
        "report": report,
        "pairs": None if counted is None else counted.pairs,
        "pairs_seconds": pairs_seconds,
    }


def figures(run: dict[str, Any]) -> str:
    """One line of the table by scale."""
    report: SpaceReport = run["report"]
    low, high = report.dimension_range()
    exact_hubs = report.hubness_queries >= report.count
    hub = f"{report.hubness_skewness:.2f}"
    if not exact_hubs:
        hub += f" ({report.hubness_low:.2f}-{report.hubness_high:.2f})"
    gaussian = f"{report.gaussian_hubness_skewness:.2f}"
    if report.gaussian_hubness_high > report.gaussian_hubness_low:
        gaussian += f" ({report.gaussian_hubness_low:.2f}-{report.gaussian_hubness_high:.2f})"
    centered = f"{report.centered_hubness_skewness:.2f}"
    if report.centered_hubness_high > report.centered_hubness_low:
        centered += f" ({report.centered_hubness_low:.2f}-{report.centered_hubness_high:.2f})"
    curve = " / ".join(f"{p.two_nn:.1f}" for p in report.dimension_curve)
    lb = " / ".join(f"{p.levina_bickel:.1f}" for p in report.dimension_curve)
    pairs = (
        f"~{report.near_duplicate_pairs:,} ± {report.near_duplicate_error:,.0f}"
        if report.near_duplicates_estimated
        else f"{report.near_duplicate_pairs:,}"
    )
    return (
        f"| {report.count:,} | {run['seconds']:.1f} ({run['cpu_seconds']:.1f}) | "
        f"{report.relative_contrast:.3f} "
        f"({report.gaussian_relative_contrast:.3f}) | {curve} ({low:.1f}-{high:.1f}"
        f"{'' if report.dimension_settled else ', not settled'}) | {lb} | "
        f"{hub} [{report.hubness_queries:,} q] | {gaussian} | "
        f"{centered} | {pairs} | {run['pairs_seconds']:.1f} ({run['pairs']}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--scales", default="12500,25000,50000,100000")
    parser.add_argument("--index", choices=("flat", "hnsw"), default="flat")
    parser.add_argument("--out", type=Path, default=RESULTS / "analyze")
    args = parser.parse_args()
    scales = [int(value) for value in args.scales.split(",")]
    with h5py.File(require_data(args.data), "r") as file:
        train = np.asarray(file["train"][: max(scales)], dtype=np.float32)
    machine = machine_info()
    runs = [measure(train, count, sample=args.sample, index=args.index) for count in scales]
    largest = runs[-1]
    console = Console(record=True, width=160, file=open("/dev/null", "w"))  # noqa: SIM115
    for table in report_tables(largest["report"]):
        console.print(table)
    text = console.export_text()
    seconds = largest["seconds"]
    verdict = "meets" if seconds < GOAL_SECONDS else "misses"
    table = "\n".join(figures(run) for run in runs)
    markdown = f"""# Space report on the shared PyPI MiniLM vectors, by scale

`bench/analyze.py --sample {args.sample} --index {args.index} --scales {args.scales}` on
{args.data.name} (the first n rows of `train`, 384-d), {machine["date"]},
{machine["cpu_count"]} cores ({machine["cpu"]}), load average {machine["load_avg_1_5_15"]}
at the start.

- `analyze(sample={args.sample})` at {largest["rows"]:,} rows: **{seconds:.1f} s** ({verdict}
  the goal of {GOAL_SECONDS:.0f} s), using {largest["cpu_seconds"]:.1f} s of CPU on the 2 cores;
  loading {"and indexing " if args.index != "flat" else ""}the collection beforehand:
  {largest["load_seconds"]:.1f} s.

{HEADER}
{table}

Relative contrast is He et al.'s (mean distance over nearest distance). Hubness is the
skewness of the k=10 occurrence of every row: every row a query up to 20,000 rows, else
800M/n queries (the {args.sample:,} sampled ones among them) against every row, with the
collection's figure estimated from their counts (95% interval: a delete-a-group
jackknife over 20 query groups). The Gaussian baseline: every row a query among
10,000 Gaussian rows of the same dimension (counted, not estimated). Centered: the
same on at most 1,000 of the queries after subtracting the mean vector, with its
interval. Near-duplicates: cosine similarity >= 0.99, every pair counted exactly up to
100,000 rows (PCA to 16 dimensions, then k-means cells compared only across bisectors
within the radius, then the full vectors), else estimated from the sampled queries
(± one standard error); "exact count s" times that count alone, after the report
(pairs it found in brackets).

The largest scale's report as `latentdb analyze` prints it:

```
{text.rstrip()}
```
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(markdown)
    payload = {
        "machine": machine,
        "runs": [
            {
                "rows": run["rows"],
                "seconds": run["seconds"],
                "cpu_seconds": run["cpu_seconds"],
                "load_seconds": run["load_seconds"],
                "pairs": run["pairs"],
                "pairs_seconds": run["pairs_seconds"],
                "report": run["report"].to_dict(),
            }
            for run in runs
        ],
    }
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    print(markdown)


if __name__ == "__main__":
    main()
