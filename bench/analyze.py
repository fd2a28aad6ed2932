"""How long the space report takes on the shared PyPI MiniLM vectors, and what it says.

    .venv/bin/python bench/analyze.py [--sample 2000] [--index flat|hnsw]

Loads the train split (100,000 x 384, float16 on disk) into a fresh collection in a
temporary folder (with ``--index hnsw``, builds and tunes the graph first: about a
minute), then times ``Collection.analyze(sample=...)`` alone. Writes
bench/results/analyze.md (the report as the CLI prints it, and the timing) and
bench/results/analyze.json. The goal (issue 7): under 30 s with sample=2000 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from _common import DEFAULT_DATA, MODEL, REPO, machine_info, require_data
from rich.console import Console

import latentdb
from latentdb.cli import report_tables

RESULTS = REPO / "bench" / "results"
GOAL_SECONDS = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--index", choices=("flat", "hnsw"), default="flat")
    parser.add_argument("--out", type=Path, default=RESULTS / "analyze")
    args = parser.parse_args()
    with h5py.File(require_data(args.data), "r") as file:
        train = np.asarray(file["train"][:], dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        db = latentdb.connect(Path(folder) / "db")
        collection = db.create_collection(
            "pypi", embedder=None, dimension=train.shape[1], model=MODEL, index=args.index
        )
        started = time.perf_counter()
        for start in range(0, train.shape[0], 10_000):
            part = train[start : start + 10_000]
            collection.add(
                [str(i) for i in range(start, start + len(part))], vectors=part, model=MODEL
            )
        if args.index != "flat":
            collection.optimize()
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = collection.analyze(sample=args.sample)
        seconds = time.perf_counter() - started
        db.close()
    console = Console(record=True, width=150, file=open("/dev/null", "w"))  # noqa: SIM115
    for table in report_tables(report):
        console.print(table)
    text = console.export_text()
    machine = machine_info()
    verdict = "meets" if seconds < GOAL_SECONDS else "misses"
    markdown = f"""# Space report on the shared PyPI MiniLM vectors

`bench/analyze.py --sample {args.sample} --index {args.index}` on {args.data.name}
({report.count:,} x {report.dimension}), {machine["date"]}, {machine["cpu_count"]} cores
({machine["cpu"]}), load average {machine["load_avg_1_5_15"]}.

- `analyze(sample={args.sample})`: **{seconds:.1f} s** ({verdict} the goal of
  {GOAL_SECONDS:.0f} s); loading {"and indexing " if args.index != "flat" else ""}the
  collection beforehand: {load_seconds:.1f} s.
- unit length: {report.norms.unit_length}; relative contrast {report.relative_contrast:.3f}
  against {report.gaussian_relative_contrast:.3f} for Gaussian vectors of the same shape.

```
{text.rstrip()}
```
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(markdown)
    payload = {"seconds": seconds, "load_seconds": load_seconds, "machine": machine}
    payload["report"] = report.to_dict()
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    print(markdown)


if __name__ == "__main__":
    main()
