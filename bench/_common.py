"""Helpers the benchmark scripts share: the data set, timing, memory sampling, scoring.

Kept free of latentdb and faiss imports, so that a benchmark of other systems still runs
while latentdb is being changed (or is broken) in the working tree.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import psutil
from threadpoolctl import threadpool_info

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared/data/pypi-minilm-100k.hdf5"
K = 10
DIMENSION = 384
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# ann-benchmarks counts a hit as correct when it is within this distance of the k-th true
# neighbour, so that float ties at the boundary do not read as misses.
EPSILON = 1e-3

FloatMatrix = npt.NDArray[np.float32]
IntMatrix = npt.NDArray[np.int64]
Hits = tuple[IntMatrix, FloatMatrix]  # (ids, cosine distances), each (nq, K)
Result = dict[str, Any]
Dataset = tuple[FloatMatrix, FloatMatrix, Hits]  # train, queries, true top-K


# -- data -------------------------------------------------------------------------------


def unit_rows(matrix: npt.NDArray[Any]) -> FloatMatrix:
    """float32 copy with unit-length rows: float16 storage leaves norms off 1 by ~1e-3."""
    rows = np.asarray(matrix, dtype=np.float32)
    return np.ascontiguousarray(rows / np.linalg.norm(rows, axis=1, keepdims=True))


def load_dataset(path: Path, queries: int) -> Dataset:
    """Train vectors, the first ``queries`` test vectors, and their true top-K (ids, dists)."""
    with h5py.File(path, "r") as f:
        xb = unit_rows(f["train"][:])
        xq = unit_rows(f["test"][:queries])
        true_ids = np.asarray(f["neighbors"][:queries, :K], dtype=np.int64)
        true_dist = np.asarray(f["distances"][:queries, :K], dtype=np.float32)
    return xb, xq, (true_ids, true_dist)


# -- measuring --------------------------------------------------------------------------


def seconds(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call of ``fn`` and its return value."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def rss_mib() -> float:
    """Resident set size of this process now."""
    return float(psutil.Process().memory_info().rss) / 2**20


def max_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


@contextmanager
def peak_rss(into: Result, interval_s: float = 0.01) -> Iterator[None]:
    """Fold the RSS peak within the block, and its rise over the start, into ``into``.

    getrusage's peak only ever grows, so after numpy's (nq, n) score matrix it would hide
    what the other systems use; a sampling thread gives each system its own peak. It wakes
    every 10 ms for a few microseconds, which is noise next to the timed calls.
    """
    before = rss_mib()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval_s):
            peak[0] = max(peak[0], rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        done.set()
        sampler.join()
        top = max(peak[0], rss_mib())
        into["peak"] = max(into.get("peak", 0.0), top)
        into["rise"] = max(into.get("rise", 0.0), top - before)


def score(xb: FloatMatrix, xq: FloatMatrix, found: IntMatrix, truth: Hits) -> Result:
    """recall@K by ids (as asked) and by distance (ann-benchmarks, proof against ties).

    Distances of the found ids are recomputed from the shared float32 arrays, so every
    system is judged by the same yardstick whatever it reports itself. A negative id marks
    a missing hit (a system that returned fewer than K) and counts as a miss.
    """
    true_ids, true_dist = truth
    queries = found.shape[0]
    by_id = np.mean([np.intersect1d(found[i], true_ids[i]).size / K for i in range(queries)])
    dist = 1.0 - np.einsum("qd,qkd->qk", xq[:queries], xb[np.maximum(found, 0)])
    dist[found < 0] = np.inf
    threshold = true_dist[:queries, K - 1 : K] + EPSILON
    by_dist = np.mean(np.count_nonzero(dist <= threshold, axis=1) / K)
    return {"recall": float(by_id), "recall_eps": float(by_dist)}


# -- machine ----------------------------------------------------------------------------


def machine_info() -> Result:
    """Enough about the machine and thread pools to tell whether two runs are comparable.

    Callers add the versions of the libraries they benchmark.
    """
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.processor(),
    )
    pools = [
        {key: pool.get(key) for key in ("user_api", "internal_api", "prefix", "version")}
        | {"num_threads": pool["num_threads"], "file": Path(pool["filepath"]).name}
        for pool in threadpool_info()
    ]
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        # Other work on a shared box skews everything; the load average makes that visible.
        "load_avg_1_5_15": load_average(),
        "threadpools": pools,
    }


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
