"""Helpers the benchmark scripts share: the data set, timing, memory sampling, scoring,
thread pinning, building and ingesting the peers.

Kept free of latentdb and faiss imports, so that a benchmark of other systems still runs
while latentdb is being changed (or is broken) in the working tree: faiss is pinned only
when a benchmark has imported it, and each peer's package is imported where it is used.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as dt
import gc
import importlib
import importlib.metadata
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import psutil
from threadpoolctl import threadpool_info, threadpool_limits

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared/data/pypi-minilm-100k.hdf5"
K = 10
DIMENSION = 384
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# ann-benchmarks counts a hit as correct when it is within this distance of the k-th true
# neighbour, so that float ties at the boundary do not read as misses.
EPSILON = 1e-3
BUILD_THREADS = 2  # all cores of the dev machine, as in PEERS.md
BATCH_THREADS = 2
WARMUP = 10  # queries run before each timed pass: page faults, lazy init, caches
PEER_BATCH = 5_000
HNSW_M, HNSW_EFC = 32, 200  # the graph every HNSW config builds (PEERS.md)

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


def require_data(path: Path) -> Path:
    """``path`` if it is a file; else exit with a message naming it and where data comes from.

    Raises:
        SystemExit: ``path`` is missing (a bare clone has no ``../shared``).
    """
    if not path.is_file():
        raise SystemExit(
            f"benchmark data not found: {path}\n"
            "The benchmarks read the shared PyPI MiniLM set from ../shared/data/ beside the "
            "repository (see bench/README.md); pass --data to point elsewhere. Without it, "
            "bench/embed_dataset.py --out DATA.hdf5 makes a smaller set of the same layout "
            "from the texts committed in tests/data/. "
            "Tests do not need it: they read tests/data/ only."
        )
    return path


def load_dataset(path: Path, queries: int) -> Dataset:
    """Train vectors, the first ``queries`` test vectors, and their true top-K (ids, dists)."""
    with h5py.File(require_data(path), "r") as f:
        xb = unit_rows(f["train"][:])
        xq = unit_rows(f["test"][:queries])
        true_ids = np.asarray(f["neighbors"][:queries, :K], dtype=np.int64)
        true_dist = np.asarray(f["distances"][:queries, :K], dtype=np.float32)
    return xb, xq, (true_ids, true_dist)


def exact_top_k(xb: FloatMatrix, xq: FloatMatrix, chunk: int = 250) -> Hits:
    """Exact top-K by inner product (cosine on unit rows): (ids, cosine distances).

    Rows past the end, where ``xb`` has fewer than K rows, are id -1 at distance inf.
    Queries go ``chunk`` at a time, so the score matrix stays small on 100k rows.
    """
    k = min(K, len(xb))
    ids = np.full((len(xq), K), -1, dtype=np.int64)
    dist = np.full((len(xq), K), np.inf, dtype=np.float32)
    for lo in range(0, len(xq), chunk):
        scores = xq[lo : lo + chunk] @ xb.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        top = np.take_along_axis(part, order, axis=1)
        ids[lo : lo + chunk, :k] = top
        dist[lo : lo + chunk, :k] = 1.0 - np.take_along_axis(scores, top, axis=1)
    return ids, dist


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


def alternating_qps(
    calls: dict[str, Callable[..., Any]], queries: FloatMatrix, rounds: int
) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """(best, median) queries/s of each call, one query a call, and each call's pass
    times (s): the calls take turns each round, so they all see the same load; each
    pass after ``WARMUP`` queries."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for i in range(WARMUP):
                call(queries[i : i + 1])
            start = time.perf_counter()
            for i in range(len(queries)):
                call(queries[i : i + 1])
            times[name].append(time.perf_counter() - start)
    best = {name: len(queries) / min(t) for name, t in times.items()}
    median = {name: len(queries) / float(np.median(t)) for name, t in times.items()}
    return best, median, times


@contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """BLAS and OpenMP pools, and faiss's own OpenMP setting, at ``threads``; restored after.

    threadpoolctl covers the BLAS libraries and libgomp that it finds loaded; faiss keeps its
    own OpenMP thread count, so it is set as well when a benchmark has imported faiss.
    """
    faiss = sys.modules.get("faiss")
    previous = faiss.omp_get_max_threads() if faiss is not None else None
    with threadpool_limits(threads):
        if faiss is not None:
            faiss.omp_set_num_threads(threads)
        try:
            yield
        finally:
            if faiss is not None and previous is not None:
                faiss.omp_set_num_threads(previous)


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so the next RSS starts low.

    One process runs every system; without malloc_trim glibc keeps the last system's freed
    arenas resident and the next system's RSS would include them.
    """
    gc.collect()
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextmanager
def building(build: Result) -> Iterator[Callable[[str], None]]:
    """Time the block on BUILD_THREADS and sample its RSS; ``mark(phase)`` splits the time."""
    release_memory()
    build["rss_start"] = rss_mib()
    build["load_start"] = load_average()
    memory: Result = {}
    phases: dict[str, float] = {}
    start = last = time.perf_counter()

    def mark(phase: str) -> None:
        nonlocal last
        now = time.perf_counter()
        phases[phase] = now - last
        last = now

    with thread_limit(BUILD_THREADS), peak_rss(memory):
        yield mark
    build["build_s"] = time.perf_counter() - start
    if phases:
        build["phases_s"] = phases
    build["rss_peak_build"] = memory["peak"]
    build["rss_built"] = rss_mib()


def time_calls(
    call: Callable[[], Any], warm_up: Callable[[], Any], repeats: int
) -> tuple[list[float], Any]:
    """Warm up, then time ``call`` ``repeats`` times; the times and the last answer."""
    warm_up()
    times, answer = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        answer = call()
        times.append(time.perf_counter() - start)
    return times, answer


def capped(count: int, limit: int | None) -> int:
    return count if limit is None else min(count, limit)


def dir_mib(path: Path) -> float:
    """Size of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


# -- scoring ----------------------------------------------------------------------------


def pad_ids(rows: Any) -> IntMatrix:
    """Rows of ids (ints or numeric strings, maybe fewer than K) as an (nq, K) int matrix."""
    out = np.full((len(rows), K), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        values = [int(x) for x in list(row)[:K]]
        out[i, : len(values)] = values
    return out


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


# -- systems ----------------------------------------------------------------------------


class Skipped(Exception):
    """A system cannot run here (package missing, API not there yet): noted, not an error."""


def need(module: str) -> ModuleType:
    """Import a system's package, or skip the system with a note."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # an ImportError, or a broken install that fails on import
        raise Skipped(f"{module} does not import ({type(exc).__name__}: {exc})") from exc


def chroma_ingest(client: Any, xb: FloatMatrix, metadatas: Sequence[Result] | None = None) -> Any:
    """A cosine collection holding the train vectors (and metadatas), PEER_BATCH at a time."""
    col = client.create_collection(
        "pypi", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    ids = [str(i) for i in range(len(xb))]
    for lo in range(0, len(ids), PEER_BATCH):
        hi = lo + PEER_BATCH
        extra = {} if metadatas is None else {"metadatas": list(metadatas[lo:hi])}
        col.add(ids=ids[lo:hi], embeddings=xb[lo:hi], **extra)
    return col


def lance_batch_ids(table: Any, queries: int) -> IntMatrix:
    """A multi-vector search result (rows tagged query_index) as (nq, K) ids, nearest first."""
    qi = table.column("query_index").to_numpy()
    ids = table.column("id").to_numpy()
    dist = table.column("_distance").to_numpy()
    order = np.lexsort((dist, qi))
    qi, ids = qi[order], ids[order]
    first = np.searchsorted(qi, qi, side="left")  # row where each query's hits start
    rank = np.arange(len(qi)) - first
    keep = rank < K
    out = np.full((queries, K), -1, dtype=np.int64)
    out[qi[keep], rank[keep]] = ids[keep]
    return out


def qdrant_ingest(client: Any, xb: FloatMatrix, payloads: Sequence[Result] | None = None) -> None:
    """A cosine collection holding the train vectors (and payloads), PEER_BATCH at a time."""
    from qdrant_client import models

    params = models.VectorParams(size=DIMENSION, distance=models.Distance.COSINE)
    client.create_collection("pypi", vectors_config=params)
    for lo in range(0, len(xb), PEER_BATCH):
        hi = min(lo + PEER_BATCH, len(xb))
        points = models.Batch(
            ids=list(range(lo, hi)),
            vectors=xb[lo:hi].tolist(),
            payloads=None if payloads is None else list(payloads[lo:hi]),
        )
        client.upsert("pypi", points=points)


def as_dict(obj: Any) -> Result:
    """An index status (dataclass, plain object or mapping) as a JSON-friendly dict."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return dict(obj)
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return {"repr": repr(obj)}


# -- report -----------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def build_cell(build: Result) -> str:
    """Build seconds, split into phases where there are several (ingest + index)."""
    total = fmt(build.get("build_s"), 1)
    phases = build.get("phases_s")
    if not phases or len(phases) < 2:
        return total
    return f"{total} ({' + '.join(f'{key} {val:.1f}' for key, val in phases.items())})"


def package_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution, None where it is not installed."""
    found: dict[str, str | None] = {}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


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
