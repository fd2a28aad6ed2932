"""Build a benchmark data set from texts with latentdb's default embedder, no ../shared needed.

The benchmarks read an ann-benchmarks HDF5 file (``train``, ``test``, exact ``neighbors``
and ``distances``) and the texts behind it. The shared PyPI set lives outside the
repository; this script makes one of the same layout from any JSONL texts (one object a
line with ``split`` = ``"train"`` or ``"test"`` and ``text``, optionally gzipped), by
default the texts committed in ``tests/data/pypi-minilm-3k/`` (3,000 train and 100 test
PyPI summaries), so a bare clone can run every benchmark at that scale:

    .venv/bin/python bench/embed_dataset.py --out /tmp/pypi-3k.hdf5
    .venv/bin/python bench/ann.py --data /tmp/pypi-3k.hdf5

It writes:

- ``OUT``: ``train`` and ``test`` (float16, as the shared file stores them, unit rows), and
  each test row's exact top-100 train rows by cosine (``neighbors`` int32,
  ``distances`` float32 ``1 - cos``, computed in float32 from the stored float16
  vectors), with the attributes the shared file carries (model, fingerprint, distance
  ``angular``, dimension, normalized, source);
- ``OUT`` with ``.texts.jsonl.gz`` for ``.hdf5``: the input lines used, in the same
  order, as ``embed.py`` and ``distributed.py`` read them.

Embedded with ``get_embedder("minilm")`` (all-MiniLM-L6-v2 on ONNX Runtime), the vectors
are those of the shared set: ``tests/test_bench_data.py`` checks it on the committed slice.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from _common import REPO, unit_rows

from latentdb.embed import DEFAULT_EMBEDDER, get_embedder

DEFAULT_TEXTS = REPO / "tests/data/pypi-minilm-3k/texts.jsonl.gz"
NEIGHBOURS = 100


def read_texts(path: Path, limit: dict[str, int | None]) -> list[dict[str, Any]]:
    """The records of ``path`` (JSONL, gzipped or not), at most ``limit[split]`` per split."""
    opener = gzip.open if path.suffix == ".gz" else open
    kept: list[dict[str, Any]] = []
    counts = {"train": 0, "test": 0}
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            record = json.loads(line)
            split = record.get("split")
            if split not in counts or not isinstance(record.get("text"), str):
                raise SystemExit(
                    f"{path}:{number}: each line needs split 'train' or 'test' and a text"
                )
            cap = limit[split]
            if cap is None or counts[split] < cap:
                counts[split] += 1
                kept.append(record)
    if not counts["train"] or not counts["test"]:
        raise SystemExit(f"{path}: needs train and test texts; found {counts}")
    return kept


def exact_neighbours(train: np.ndarray, test: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Top-``k`` train rows by cosine for each test row; ties go to the lower row."""
    scores = unit_rows(test) @ unit_rows(train).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    distances = 1.0 - np.take_along_axis(scores, order, axis=1)
    return order.astype(np.int32), distances.astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="JSONL(.gz) texts")
    parser.add_argument("--out", type=Path, required=True, help="the .hdf5 file to write")
    parser.add_argument("--train", type=int, help="at most this many train texts")
    parser.add_argument("--test", type=int, help="at most this many test texts")
    parser.add_argument("--embedder", default=DEFAULT_EMBEDDER, help="latentdb embedder name")
    args = parser.parse_args(argv)
    if args.out.suffix != ".hdf5":
        raise SystemExit(f"--out must end in .hdf5; got {args.out}")
    records = read_texts(args.texts, {"train": args.train, "test": args.test})
    embedder = get_embedder(args.embedder)
    start = time.perf_counter()
    vectors = embedder.embed_texts([record["text"] for record in records])
    seconds = time.perf_counter() - start
    vectors = unit_rows(vectors).astype(np.float16)
    is_train = np.array([record["split"] == "train" for record in records])
    train, test = vectors[is_train], vectors[~is_train]
    neighbors, distances = exact_neighbours(train, test, min(NEIGHBOURS, len(train)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(args.out, "w") as file:
        file["train"], file["test"] = train, test
        file["neighbors"], file["distances"] = neighbors, distances
        file.attrs.update(
            {
                "model": embedder.model,
                "fingerprint": embedder.fingerprint,
                "distance": "angular",
                "dimension": embedder.dimension,
                "normalized": True,
                "source": str(args.texts),
            }
        )
    texts_out = args.out.with_name(args.out.stem + ".texts.jsonl.gz")
    # Train lines first, then test, as the shared file orders them.
    ordered = [r for r in records if r["split"] == "train"] + [
        r for r in records if r["split"] == "test"
    ]
    with gzip.open(texts_out, "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in ordered)
    print(
        f"embedded {len(records):,} texts with {embedder.model} in {seconds:.1f} s; wrote "
        f"{args.out} ({len(train):,} train, {len(test):,} test, top-{neighbors.shape[1]} "
        f"exact neighbours) and {texts_out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
