"""Rebuild tests/data/pypi-minilm-3k/, the slice of the shared PyPI MiniLM set that tests use.

Tests must run on a bare clone (issue 16), so they never read ``../shared``; this script is
the one place that turns the shared data into what they read. From
``../shared/data/pypi-minilm-100k.hdf5`` and ``pypi-minilm-100k.texts.jsonl.gz`` it writes

- ``train.npy``: the first 3,000 ``train`` vectors, float16 (384-d), as the source stores them;
- ``test.npy``: the first 100 ``test`` vectors (held-out queries), float16;
- ``neighbors.npy`` / ``distances.npy``: each test vector's exact top-100 among the 3,000
  train rows (int32 row numbers; float32 cosine distances), computed here in float32 from
  the re-normalized float16 vectors. The source file's ``neighbors`` range over all 100,000
  train rows and would be wrong for the slice;
- ``texts.jsonl.gz``: the source lines behind those vectors, unchanged and in the same order
  (3,000 ``train`` lines, then 100 ``test`` lines; ``id``, ``split``, ``name``, ``text``).

The output is byte-for-byte deterministic (``.npy`` has no timestamp; the gzip header's is
zeroed), so rerunning it on unchanged data leaves ``git status`` clean. About 2.5 MB.

    .venv/bin/python bench/make_test_slice.py            # writes tests/data/pypi-minilm-3k/
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import h5py
import numpy as np
from _common import DEFAULT_DATA, REPO, require_data, unit_rows

ROWS = 3000  # what tests/index/test_ann.py, test_reduce.py and query/test_planner.py index
QUERIES = 100  # the most any test asks for
NEIGHBOURS = 100  # as the source file keeps
OUT = REPO / "tests/data/pypi-minilm-3k"


def exact_neighbours(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-``NEIGHBOURS`` train rows by cosine for each test row; ties go to the lower row."""
    scores = unit_rows(test) @ unit_rows(train).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :NEIGHBOURS]
    distances = 1.0 - np.take_along_axis(scores, order, axis=1)
    return order.astype(np.int32), distances.astype(np.float32)


def slice_texts(path: Path) -> bytes:
    """The source's lines for train ids < ROWS and test ids < QUERIES, verbatim."""
    wanted = {"train": ROWS, "test": QUERIES}
    kept: list[bytes] = []
    with gzip.open(require_data(path), "rb") as lines:
        for line in lines:
            record = json.loads(line)
            if record["id"] < wanted[record["split"]]:
                kept.append(line)
    splits = [json.loads(line)["split"] for line in kept]
    if splits != ["train"] * ROWS + ["test"] * QUERIES:
        raise SystemExit(f"{path}: expected {ROWS} train then {QUERIES} test lines in id order")
    return b"".join(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ann-benchmarks HDF5")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with h5py.File(require_data(args.data), "r") as file:
        train = np.asarray(file["train"][:ROWS], dtype=np.float16)
        test = np.asarray(file["test"][:QUERIES], dtype=np.float16)
    neighbors, distances = exact_neighbours(train, test)
    texts = slice_texts(args.data.with_name("pypi-minilm-100k.texts.jsonl.gz"))
    args.out.mkdir(parents=True, exist_ok=True)
    arrays = {"train": train, "test": test, "neighbors": neighbors, "distances": distances}
    for name, array in arrays.items():
        np.save(args.out / f"{name}.npy", array, allow_pickle=False)
    with (
        (args.out / "texts.jsonl.gz").open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as out,
    ):
        out.write(texts)
    total = sum(path.stat().st_size for path in args.out.iterdir())
    print(f"wrote {args.out} ({total:,} bytes)")


if __name__ == "__main__":
    main()
