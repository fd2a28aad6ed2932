"""Real vectors and texts for tests: the committed slice of the PyPI MiniLM set.

``tests/data/pypi-minilm-3k/`` holds the first 3,000 train vectors and 100 test queries
of the benchmarks' data set, with their texts and the queries' exact neighbours within
the slice; ``bench/make_test_slice.py`` rebuilds it (tests/data/README.md). Tests read
only this folder, so a bare clone runs them (issue 16).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

SLICE = Path(__file__).resolve().parent / "data" / "pypi-minilm-3k"
SLICE_ROWS = 3000
SLICE_QUERIES = 100


def _load(name: str) -> np.ndarray:
    return np.load(SLICE / f"{name}.npy", allow_pickle=False)


def _unit(rows: np.ndarray) -> np.ndarray:
    unit = rows.astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return unit


def pypi_minilm(rows: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(train[:rows], test[:queries]) as unit float32 rows (the slice stores float16).

    Raises:
        ValueError: more rows or queries than the slice holds.
    """
    if rows > SLICE_ROWS or queries > SLICE_QUERIES:
        raise ValueError(
            f"the test slice holds {SLICE_ROWS} rows and {SLICE_QUERIES} queries, "
            f"asked for {rows} and {queries}: rebuild it with bench/make_test_slice.py"
        )
    return _unit(_load("train")[:rows]), _unit(_load("test")[:queries])


def pypi_neighbours() -> tuple[np.ndarray, np.ndarray]:
    """Exact top-100 train rows of each test query within the slice: (ids, cosine distances),
    each (100, 100)."""
    return _load("neighbors"), _load("distances")


def pypi_texts(rows: int, split: str = "train") -> list[dict[str, Any]]:
    """The first ``rows`` records of ``split`` (``id``, ``split``, ``name``, ``text``), in the
    order of the vectors."""
    with gzip.open(SLICE / "texts.jsonl.gz", "rt", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    return [record for record in records if record["split"] == split][:rows]
