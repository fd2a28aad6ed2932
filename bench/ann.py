"""Approximate nearest-neighbour search: latentdb's indexes against faiss, hnswlib, usearch,
chroma, lancedb and qdrant, on the same data, in one process, one system after another.

In the habits of `ann-benchmarks <https://github.com/erikbern/ann-benchmarks>`_: each system
config is built once, then its search knob (efSearch, nprobe, ...) is swept; at every knob
value we measure recall@10 against the file's exact neighbours and throughput in two regimes:

* qps1: one query per call on ONE thread (BLAS, OpenMP and faiss pinned to 1), what an
  interactive caller sees;
* qpsB: all queries in one call on 2 threads, where the system has a batch API.

Each timing follows a warm-up and is the best of ``--repeats`` runs (the 2-core dev machine
is shared and noisy; the best run is the least disturbed). Build time, peak RSS during build
and sweep, RSS once built, and the size of the persisted files are recorded too. The summary
gives, per config, the best qps1 among knob values reaching recall 0.90 / 0.95 / 0.99, the
best qpsB at 0.95 and the highest recall seen; the plot is recall against qps1.

Run from the repository root (the peers take ~26 minutes on 2 cores, latentdb a few per kind)::

    .venv/bin/python bench/ann.py
    .venv/bin/python bench/ann.py --systems faiss_hnsw,hnswlib --quick   # smoke run
    .venv/bin/python bench/ann.py --systems latentdb --latentdb-kinds hnsw,ivf

Systems whose package does not import are skipped with a note. It writes ``ann.md``,
``ann.json`` and ``ann.png`` under ``--out`` (default ``bench/results``). The data set is
read in place, never copied into the repo; indexes are persisted under a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

# Shared with exact.py; run as a script, bench/ is on sys.path.
from _common import (
    BATCH_THREADS,
    BUILD_THREADS,
    DEFAULT_DATA,
    DIMENSION,
    EPSILON,
    HNSW_EFC,
    HNSW_M,
    MODEL,
    REPO,
    WARMUP,
    FloatMatrix,
    Hits,
    IntMatrix,
    K,
    Result,
    Skipped,
    alternating_qps,
    as_dict,
    build_cell,
    building,
    capped,
    chroma_ingest,
    dir_mib,
    exact_top_k,
    fmt,
    lance_batch_ids,
    load_average,
    load_dataset,
    machine_info,
    max_rss_mib,
    need,
    package_versions,
    pad_ids,
    peak_rss,
    qdrant_ingest,
    rss_mib,
    score,
    thread_limit,
    time_calls,
)

try:  # a core dependency of latentdb, but this bench must run without it too
    import faiss
except ImportError:
    faiss = None

EF_SWEEP = [16, 24, 32, 48, 64, 96, 128, 256, 512]
NPROBE_SWEEP = [1, 2, 4, 8, 16, 32, 64, 128, 256, 384]
QUICK_EF = [16, 64, 256]
QUICK_NPROBE = [4, 32, 128]
RECALL_LEVELS = (0.90, 0.95, 0.99)
PAIRED_EF = (16, 32, 48, 64, 128)  # latentdb against faiss on latentdb's own graph
IVF_NLIST = 1024
LATENTDB_KINDS = ("auto", "hnsw", "hnsw-sq8", "ivf", "ivf-pq")
LATENTDB_BATCH = 10_000
CHURN_DELETE, CHURN_UPSERT = 0.30, 0.10  # the goal's churn, as fractions of the rows
# Slow systems time fewer queries, so that the whole run stays within ~20 minutes.
QDRANT_QUERIES = 100  # brute force in Python, ~8 QPS (PEERS.md)
LANCE_FLAT_SINGLE = 50  # flat scan, ~6 QPS one query at a time
LANCE_INDEXED_SINGLE = 200  # ~3-5 ms of per-call overhead
LANCE_THREADS_NOTE = "lance searches on its own Rust thread pool: qps1 is not pinned to 1 thread"


@dataclass
class Context:
    """The data and the settings every system runner reads."""

    xb: FloatMatrix
    xq: FloatMatrix
    truth: Hits
    ef: list[int]
    nprobe: list[int]
    single: int  # queries timed one per call (before per-system caps)
    repeats: int
    quick: bool
    workdir: Path  # persisted indexes (real disk, like a user's)
    qdrant_dir: Path
    latentdb_kinds: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class Config:
    """One system config, built and ready to sweep.

    ``single`` takes one query as a (1, d) matrix, ``batch`` several; both return what the
    system returns, and ``single_ids``/``batch_ids`` turn that into int ids (nq, K), -1
    where fewer than K came back, after the clock stops: the harness's conversion is not
    the system's time. ``set_knob`` applies a knob value and may return extra numbers for
    that row (e.g. chroma's re-open time).
    """

    name: str
    description: str
    knob: str
    values: list[Any]
    single: Callable[[FloatMatrix], Any]
    batch: Callable[[FloatMatrix], Any] | None
    set_knob: Callable[[Any], Result | None] = lambda _value: None
    build: Result = field(default_factory=dict)
    single_limit: int | None = None
    batch_limit: int | None = None
    notes: list[str] = field(default_factory=list)
    extra: Result = field(default_factory=dict)
    single_ids: Callable[[Any], IntMatrix] = lambda raw: np.asarray(raw, dtype=np.int64)
    batch_ids: Callable[[Any], IntMatrix] = lambda raw: np.asarray(raw, dtype=np.int64)


# -- measuring --------------------------------------------------------------------------


def measure_single(config: Config, ctx: Context) -> Result:
    """qps1 and recall of one query per call on one thread."""
    queries = ctx.xq[: capped(ctx.single, config.single_limit)]

    def one_by_one(n: int) -> list[Any]:
        return [config.single(queries[i : i + 1]) for i in range(n)]

    with thread_limit(1):
        times, answers = time_calls(
            lambda: one_by_one(len(queries)),
            lambda: one_by_one(min(WARMUP, len(queries))),
            ctx.repeats,
        )
    ids = np.vstack([config.single_ids(answer) for answer in answers])
    scored = score(ctx.xb, ctx.xq, ids, ctx.truth)
    return {
        "qps1": len(queries) / min(times),
        "single_queries": len(queries),
        "single_times_s": [round(t, 5) for t in times],
        "recall1": scored["recall"],
        "recall1_eps": scored["recall_eps"],
    }


def measure_batch(config: Config, ctx: Context) -> Result:
    """qpsB and recall of all queries in one call on BATCH_THREADS."""
    assert config.batch is not None
    batch = config.batch
    queries = ctx.xq[: capped(len(ctx.xq), config.batch_limit)]
    with thread_limit(BATCH_THREADS):
        times, answer = time_calls(
            lambda: batch(queries), lambda: batch(queries[:WARMUP]), ctx.repeats
        )
    ids = config.batch_ids(answer)
    scored = score(ctx.xb, ctx.xq, ids, ctx.truth)
    return {
        "qpsB": len(queries) / min(times),
        "batch_queries": len(queries),
        "batch_times_s": [round(t, 5) for t in times],
        "recallB": scored["recall"],
        "recallB_eps": scored["recall_eps"],
    }


def measure(config: Config, value: Any, ctx: Context) -> Result:
    """One row of a sweep: apply the knob value, time single and batch, score both.

    ``recall`` is taken from whichever pass covered more queries (batch on a tie).
    """
    row: Result = {"value": value, "label": knob_label(value)}
    row |= config.set_knob(value) or {}
    row |= measure_single(config, ctx)
    if config.batch is not None:
        row |= measure_batch(config, ctx)
    use_batch = row.get("batch_queries", 0) >= row["single_queries"]
    key = "recallB" if use_batch else "recall1"
    row["recall"], row["recall_eps"] = row[key], row[f"{key}_eps"]
    row["recall_queries"] = row["batch_queries" if use_batch else "single_queries"]
    qpsb = f"{row['qpsB']:,.0f}" if "qpsB" in row else "-"
    print(
        f"  {config.name} {row['label']}: recall {row['recall']:.4f} "
        f"qps1 {row['qps1']:,.0f} qpsB {qpsb}",
        file=sys.stderr,
        flush=True,
    )
    return row


def measure_or_note(config: Config, value: Any, ctx: Context) -> Result | None:
    """``measure``, or None and a note when the system rejects this one knob value.

    TypeError and AttributeError still propagate: they mean an API is missing (latentdb
    while it is being written), which skips the whole config.
    """
    try:
        return measure(config, value, ctx)
    except (TypeError, AttributeError):
        raise
    except Exception as exc:
        message = f"{knob_label(value)} failed: {type(exc).__name__}: {exc}"
        print(f"  {config.name} {message}", file=sys.stderr, flush=True)
        config.notes.append(message)
        return None


def knob_label(value: Any) -> str:
    """How a knob value reads in tables: 64, "defaults", "nprobes=16 refine_factor=10"."""
    if value is None:
        return "defaults"
    if isinstance(value, dict):
        return " ".join(f"{key}={val}" for key, val in value.items())
    return str(value)


def run_config(config: Config, ctx: Context) -> Result:
    """Sweep every knob value of a config; everything the report needs about it."""
    print(
        f"- {config.name}: sweeping {config.knob} over {len(config.values)} values", file=sys.stderr
    )
    memory: Result = {}
    with peak_rss(memory):
        rows = [row for value in config.values if (row := measure_or_note(config, value, ctx))]
    if not rows:
        raise RuntimeError(f"no knob value of {config.name} could be measured")
    build = config.build
    return {
        "name": config.name,
        "description": config.description,
        "knob": config.knob,
        "build": build,
        "rss_peak": max(memory["peak"], build.get("rss_peak_build", 0.0)),
        "load_end": load_average(),
        "notes": config.notes,
        "extra": config.extra,
        "sweep": rows,
        "summary": summarize(rows),
    }


def summarize(rows: list[Result]) -> Result:
    """Best qps1 at each recall level, best qpsB at 0.95, highest recall."""

    def best(key: str, level: float) -> float | None:
        values = [r[key] for r in rows if key in r and r["recall"] >= level]
        return max(values) if values else None

    summary: Result = {f"qps1@{level:.2f}": best("qps1", level) for level in RECALL_LEVELS}
    summary["qpsB@0.95"] = best("qpsB", 0.95)
    summary["max_recall"] = max(r["recall"] for r in rows)
    return summary


# -- systems: libraries -----------------------------------------------------------------


def faiss_config(
    name: str, description: str, index: Any, knob: str, build: Result, ctx: Context
) -> Config:
    """A built faiss index as a Config: ``knob`` is efSearch (HNSW) or nprobe (IVF)."""
    persisted = ctx.workdir / f"{name}.faiss"
    faiss.write_index(index, str(persisted))
    build["disk_mib"] = dir_mib(persisted)
    persisted.unlink()

    def search(queries: FloatMatrix) -> IntMatrix:
        return index.search(queries, K)[1]

    if knob == "efSearch":
        values: list[Any] = ctx.ef

        def set_knob(value: Any) -> None:
            index.hnsw.efSearch = value
    else:
        values = ctx.nprobe

        def set_knob(value: Any) -> None:
            index.nprobe = value

    return Config(name, description, knob, values, search, search, set_knob=set_knob, build=build)


def faiss_hnsw(ctx: Context) -> Iterator[Config]:
    fa = need("faiss")
    build: Result = {}
    with building(build):
        index = fa.IndexHNSWFlat(DIMENSION, HNSW_M, fa.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EFC
        index.add(ctx.xb)
    description = f"IndexHNSWFlat M={HNSW_M} efC={HNSW_EFC} IP"
    yield faiss_config("faiss_hnsw", description, index, "efSearch", build, ctx)


def faiss_hnsw_sq8(ctx: Context) -> Iterator[Config]:
    fa = need("faiss")
    build: Result = {}
    with building(build):
        index = fa.IndexHNSWSQ(
            DIMENSION, fa.ScalarQuantizer.QT_8bit, HNSW_M, fa.METRIC_INNER_PRODUCT
        )
        index.hnsw.efConstruction = HNSW_EFC
        index.train(ctx.xb)  # the per-dimension min/max of the 8-bit code
        index.add(ctx.xb)
    description = f"IndexHNSWSQ QT_8bit M={HNSW_M} efC={HNSW_EFC} IP"
    yield faiss_config("faiss_hnsw_sq8", description, index, "efSearch", build, ctx)


def faiss_ivf(ctx: Context) -> Iterator[Config]:
    fa = need("faiss")
    build: Result = {}
    with building(build):
        quantizer = fa.IndexFlatIP(DIMENSION)
        index = fa.IndexIVFFlat(quantizer, DIMENSION, IVF_NLIST, fa.METRIC_INNER_PRODUCT)
        index.train(ctx.xb)
        index.add(ctx.xb)
    description = f"IndexIVFFlat nlist={IVF_NLIST} IP (trained on the train set)"
    yield faiss_config("faiss_ivf", description, index, "nprobe", build, ctx)


def hnswlib_system(ctx: Context) -> Iterator[Config]:
    hnswlib = need("hnswlib")
    build: Result = {}
    with building(build):
        index = hnswlib.Index(space="ip", dim=DIMENSION)
        index.init_index(max_elements=len(ctx.xb), ef_construction=HNSW_EFC, M=HNSW_M)
        index.set_num_threads(BUILD_THREADS)
        index.add_items(ctx.xb, np.arange(len(ctx.xb)))
    persisted = ctx.workdir / "hnswlib.bin"
    index.save_index(str(persisted))
    build["disk_mib"] = dir_mib(persisted)
    persisted.unlink()

    def search(threads: int) -> Callable[[FloatMatrix], IntMatrix]:
        return lambda q: index.knn_query(q, k=K, num_threads=threads)[0]

    yield Config(
        "hnswlib",
        f"space=ip M={HNSW_M} efC={HNSW_EFC}",
        "ef",
        ctx.ef,
        search(1),
        search(BATCH_THREADS),
        index.set_ef,
        build,
    )


def usearch_system(ctx: Context) -> Iterator[Config]:
    usearch_index = need("usearch.index")
    build: Result = {}
    with building(build):
        index = usearch_index.Index(
            ndim=DIMENSION, metric="ip", dtype="f32", connectivity=HNSW_M, expansion_add=HNSW_EFC
        )
        index.add(np.arange(len(ctx.xb)), ctx.xb, threads=BUILD_THREADS)
    persisted = ctx.workdir / "usearch.bin"
    index.save(str(persisted))
    build["disk_mib"] = dir_mib(persisted)
    persisted.unlink()

    def search(threads: int) -> Callable[[FloatMatrix], IntMatrix]:
        # Missing hits come back as the all-ones uint64 key, which reads as -1 in int64.
        def run(q: FloatMatrix) -> IntMatrix:
            return index.search(q, K, threads=threads).keys.reshape(len(q), K).astype(np.int64)

        return run

    def set_knob(value: Any) -> None:
        index.expansion_search = value

    description = f"metric=ip dtype=f32 connectivity={HNSW_M} expansion_add={HNSW_EFC}"
    yield Config(
        "usearch",
        description,
        "expansion_search",
        ctx.ef,
        search(1),
        search(BATCH_THREADS),
        set_knob,
        build,
    )


# -- systems: databases -----------------------------------------------------------------


def chroma_system(ctx: Context) -> Iterator[Config]:
    """Chroma with its default HNSW (M=16, efC=100), two ways of changing ef_search.

    ``chroma``: ``modify()`` alone (PEERS.md: stored but not applied to the loaded index);
    ``chroma_reopen``: ``modify()``, then the client re-opened, which applies it.
    """
    chromadb = need("chromadb")
    from chromadb.api.shared_system_client import SharedSystemClient
    from chromadb.config import Settings

    folder = ctx.workdir / "chroma"
    settings = Settings(anonymized_telemetry=False)  # no network calls from the bench
    build: Result = {}
    with building(build):
        client = chromadb.PersistentClient(path=str(folder), settings=settings)
        col = chroma_ingest(client, ctx.xb)
    build["disk_mib"] = dir_mib(folder)
    hnsw = col.configuration.get("hnsw") or {}
    live = {"col": col}  # the collection the search closures use; replaced on re-open

    def search(queries: FloatMatrix) -> Any:
        return live["col"].query(query_embeddings=queries, n_results=K, include=["distances"])

    def ids(found: Any) -> IntMatrix:
        return pad_ids(found["ids"])

    def modify(ef: int) -> None:
        live["col"].modify(configuration={"hnsw": {"ef_search": ef}})

    def reopen(ef: int) -> Result:
        modify(ef)
        SharedSystemClient.clear_system_cache()  # else PersistentClient returns the cached one
        start = time.perf_counter()
        client = chromadb.PersistentClient(path=str(folder), settings=settings)
        live["col"] = client.get_collection("pypi", embedding_function=None)
        search(ctx.xq[:1])  # loads the index
        # RSS too: each re-open loads the index again, and the old one may stay resident.
        return {"reopen_first_query_s": time.perf_counter() - start, "rss_mib": rss_mib()}

    params = {key: hnsw.get(key) for key in ("max_neighbors", "ef_construction", "ef_search")}
    base = f"PersistentClient, hnsw space=cosine, defaults {params}"
    values = thin(sorted({*ctx.ef, 100}), ctx.quick)
    make = partial(
        Config, knob="ef_search", single=search, batch=search, single_ids=ids, batch_ids=ids
    )
    # Without a re-open every row is the same index at ef_search 100: three values show it.
    yield make("chroma", f"{base}; ef_search by modify() only", values=thin(values, quick=True),
               set_knob=modify, build=build)  # fmt: skip
    yield make("chroma_reopen", f"{base}; modify() + client re-open", values=values,
               set_knob=reopen, build=build | {"shared_build_with": "chroma"})  # fmt: skip
    SharedSystemClient.clear_system_cache()


def thin(values: list[Any], quick: bool) -> list[Any]:
    """In a quick run, only the first, middle and last knob values."""
    if not quick or len(values) <= 3:
        return values
    return [values[0], values[len(values) // 2], values[-1]]


def lancedb_system(ctx: Context) -> Iterator[Config]:
    """LanceDB: a flat scan, IVF_PQ and IVF_HNSW_SQ (PEERS.md's configs), one table each."""
    need("lancedb")
    from lancedb.index import IvfHnswSq, IvfPq

    ivf_pq = IvfPq(distance_type="cosine", num_partitions=256, num_sub_vectors=48)
    hnsw_sq = IvfHnswSq(
        distance_type="cosine", num_partitions=4, m=HNSW_M, ef_construction=HNSW_EFC
    )
    pq_values = [{"nprobes": p} for p in (8, 16, 32, 64, 128)]
    pq_values += [{"nprobes": p, "refine_factor": 10} for p in (16, 32, 64, 128)]
    pq_values += [{"nprobes": p, "refine_factor": 50} for p in (64, 128)]
    sq_values = [{"nprobes": 4, "ef": ef} for ef in ctx.ef]
    # lance refuses ef below k * refine_factor ("ef must be greater than or equal to k").
    sq_values += [{"nprobes": 4, "ef": ef, "refine_factor": 10} for ef in (128, 256, 512)]
    specs = [
        LanceSpec("lancedb_flat", "flat scan (no index)", None, [None], LANCE_FLAT_SINGLE),
        LanceSpec(
            "lancedb_ivf_pq", "IVF_PQ num_partitions=256 num_sub_vectors=48", ivf_pq,
            thin(pq_values, ctx.quick), LANCE_INDEXED_SINGLE,
        ),
        LanceSpec(
            "lancedb_ivf_hnsw_sq", f"IVF_HNSW_SQ num_partitions=4 m={HNSW_M} "
            f"ef_construction={HNSW_EFC}", hnsw_sq, thin(sq_values, ctx.quick),
            LANCE_INDEXED_SINGLE,
        ),
    ]  # fmt: skip
    ctx.notes.append(f"lancedb: {LANCE_THREADS_NOTE}")
    for spec in specs:
        yield from lancedb_one(ctx, spec)


@dataclass
class LanceSpec:
    """One lancedb config: its own table, an index config (None: flat) and knob values."""

    name: str
    description: str
    index_config: Any
    values: list[Any]
    single_limit: int


def lancedb_one(ctx: Context, spec: LanceSpec) -> Iterator[Config]:
    import lancedb
    import pyarrow as pa

    folder = ctx.workdir / spec.name
    build: Result = {}
    with building(build) as mark:
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(ctx.xb.ravel()), DIMENSION)
        data = pa.table({"id": pa.array(np.arange(len(ctx.xb))), "vector": vectors})
        table = lancedb.connect(folder).create_table("pypi", data=data)
        del data, vectors
        mark("ingest")
        if spec.index_config is not None:
            table.create_index("vector", config=spec.index_config)
            mark("index")
    build["disk_mib"] = dir_mib(folder)
    knob = {"value": None}

    def query(vectors: FloatMatrix) -> Any:
        # Naming _distance in select() avoids a deprecation warning logged on every query.
        q = table.search(vectors).distance_type("cosine").limit(K).select(["id", "_distance"])
        for key, val in (knob["value"] or {}).items():
            q = getattr(q, key)(val)
        return q.to_arrow()

    def single(queries: FloatMatrix) -> Any:
        return query(queries[0])

    def single_ids(found: Any) -> IntMatrix:
        return pad_ids([found.column("id").to_pylist()])

    def batch(queries: FloatMatrix) -> IntMatrix:
        return lance_batch_ids(query(queries), len(queries))

    yield Config(
        spec.name,
        f"local dir; {spec.description}, distance_type=cosine",
        "query knobs",
        spec.values,
        single,
        batch,
        set_knob=lambda value: knob.update(value=value),
        build=build,
        single_limit=spec.single_limit,
        single_ids=single_ids,
    )


def qdrant_system(ctx: Context) -> Iterator[Config]:
    """qdrant-client local mode: numpy brute force, every point its own SQLite commit."""
    need("qdrant_client")
    from qdrant_client import QdrantClient, models

    folder = ctx.qdrant_dir / "qdrant"
    per_point_disk = qdrant_commit_probe(ctx.workdir / "qdrant-probe")
    build: Result = {"disk_commit_ms_per_point": per_point_disk * 1e3}
    with building(build), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = QdrantClient(path=str(folder))
        qdrant_ingest(client, ctx.xb)
    build["disk_mib"] = dir_mib(folder)
    notes = sorted({f"warned: {w.message}" for w in caught})
    if ctx.qdrant_dir != ctx.workdir:
        notes.append(
            f"folder on {ctx.qdrant_dir}, not the disk: local mode commits every point to "
            f"SQLite; on the disk that costs {per_point_disk * 1e3:.1f} ms a point "
            f"(~{per_point_disk * len(ctx.xb):,.0f} s for the train set), not in build s"
        )

    def single(queries: FloatMatrix) -> Any:
        return client.query_points("pypi", query=queries[0].tolist(), limit=K)

    def batch(queries: FloatMatrix) -> Any:
        requests = [models.QueryRequest(query=q.tolist(), limit=K) for q in queries]
        return client.query_batch_points("pypi", requests=requests)

    limit = 20 if ctx.quick else QDRANT_QUERIES
    description = "QdrantClient(path=...) local mode, cosine (numpy brute force)"
    yield Config(
        "qdrant_local",
        description,
        "none",
        [None],
        single,
        batch,
        build=build,
        single_limit=limit,
        batch_limit=limit,
        notes=notes,
        single_ids=lambda found: pad_ids([[p.id for p in found.points]]),
        batch_ids=lambda found: pad_ids([[p.id for p in r.points] for r in found]),
    )
    client.close()


def qdrant_commit_probe(folder: Path, points: int = 500) -> float:
    """Seconds per point of a local-mode upsert on the real disk (one commit per point)."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(folder))
    client.create_collection(
        "probe", vectors_config=models.VectorParams(size=DIMENSION, distance=models.Distance.COSINE)
    )
    start = time.perf_counter()
    client.upsert(
        "probe", points=models.Batch(ids=list(range(points)), vectors=[[0.1] * DIMENSION] * points)
    )
    elapsed = time.perf_counter() - start
    client.close()
    shutil.rmtree(folder, ignore_errors=True)
    return elapsed / points


# -- latentdb ---------------------------------------------------------------------------


def latentdb_system(ctx: Context) -> Iterator[Config]:
    """latentdb through its public API, one collection per index kind.

    A TypeError or AttributeError from the API (``index=``, ``optimize()``, ``params=`` not
    there yet) skips latentdb with a note; any other error skips that kind only.
    """
    latentdb = need("latentdb")
    for kind in ctx.latentdb_kinds:
        try:
            yield from latentdb_kind(ctx, latentdb, kind)
        except (TypeError, AttributeError) as exc:
            raise Skipped(f"API not there yet ({type(exc).__name__}: {exc})") from exc
        except Exception as exc:
            traceback.print_exc()
            ctx.notes.append(f"latentdb[{kind}]: failed: {type(exc).__name__}: {exc}")


def latentdb_kind(ctx: Context, latentdb: ModuleType, kind: str) -> Iterator[Config]:
    folder = ctx.workdir / f"latentdb-{kind}"
    build, extra = latentdb_build(ctx, latentdb, kind, folder)
    # Re-open: a fresh connection, then the first query loads the index (goal < 2 s).
    db = latentdb.connect(folder)
    try:
        start = time.perf_counter()
        col = db.get_collection("pypi")
        col.query(vectors=ctx.xq[:1], k=K, include=["distances"])
        extra["reopen_first_query_s"] = time.perf_counter() - start
        extra["status_after_reopen"] = as_dict(col.index_status())
        built = str(extra["status"].get("kind") or kind)
        knob: Result = {"value": None}  # None: no params=, the self-tuned defaults

        def search(queries: FloatMatrix) -> Any:
            return col.query(vectors=queries, k=K, include=("distances",), params=knob["value"])

        tuned = extra["status"].get("params")
        config = Config(
            f"latentdb_{kind}",
            f"index={kind!r} recall_target=0.95; built {built}, tuned params {tuned}",
            "params",
            latentdb_values(built, ctx),
            search,
            search,
            set_knob=lambda value: knob.update(value=value),
            build=build,
            extra=extra,
            single_ids=lambda found: pad_ids(found.ids),
            batch_ids=lambda found: pad_ids(found.ids),
        )
        yield config
        if built == "hnsw":
            extra["paired"] = paired_with_faiss(col, ctx)
        if kind == ctx.latentdb_kinds[0]:  # last: it changes the collection
            extra["churn"] = churn(col, ctx)
    finally:
        db.close()
        shutil.rmtree(folder, ignore_errors=True)


def latentdb_build(
    ctx: Context, latentdb: ModuleType, kind: str, folder: Path
) -> tuple[Result, Result]:
    """Create, ingest (timed), optimize (timed); the build record and the index status."""
    build: Result = {}
    ids = [str(i) for i in range(len(ctx.xb))]
    with latentdb.connect(folder) as db:
        col = db.create_collection(
            "pypi",
            dimension=DIMENSION,
            metric="cosine",
            embedder=None,
            model=MODEL,
            index=kind,
            recall_target=0.95,
        )
        for method in ("optimize", "index_status"):  # fail before a long ingest, not after
            getattr(col, method)
        with building(build) as mark:
            for lo in range(0, len(ids), LATENTDB_BATCH):
                col.add(
                    ids[lo : lo + LATENTDB_BATCH],
                    vectors=ctx.xb[lo : lo + LATENTDB_BATCH],
                    model=MODEL,
                )
            mark("ingest")
            col.optimize()
            mark("optimize")
        extra = {"status": as_dict(col.index_status())}
    build["disk_mib"] = dir_mib(folder)
    return build, extra


def paired_with_faiss(col: Any, ctx: Context) -> list[Result]:
    """qps1 of latentdb's query() against faiss's search on the very graph latentdb
    searches, in alternating passes: what latentdb's Python path costs, with the
    machine's drift over a long run (which sequential configs absorb) taken out.

    Reaches into latentdb's internals for the faiss index; nothing is changed there.
    """
    index = col._database.index(col._state)
    if len(index.sealed) != 1 or len(index.growing) or index.sealed[0][1].dead:
        return []  # not one clean graph: no like-for-like reference
    graph, queries = index.sealed[0][1].index, ctx.xq[: ctx.single or len(ctx.xq)]
    rows = []
    with thread_limit(1):
        for ef in PAIRED_EF:
            parameters = faiss.SearchParametersHNSW()
            parameters.efSearch = ef
            knob = {"ef": ef}
            calls = {
                "faiss": lambda q, p=parameters: graph.search(q, K, params=p),
                "latentdb": lambda q, k=knob: col.query(
                    vectors=q, k=K, include=("distances",), params=k
                ),
            }
            best, median, times = alternating_qps(calls, queries, max(ctx.repeats, 3))
            rows.append(
                {
                    "ef": ef,
                    "faiss_qps1": best["faiss"],
                    "latentdb_qps1": best["latentdb"],
                    "ratio": best["latentdb"] / best["faiss"],
                    "ratio_median": median["latentdb"] / median["faiss"],
                    "times_s": {name: [round(t, 5) for t in ts] for name, ts in times.items()},
                }
            )
            print(
                f"  paired ef={ef}: faiss {best['faiss']:,.0f} latentdb "
                f"{best['latentdb']:,.0f} qps1, ratio {rows[-1]['ratio']:.3f} "
                f"(median {rows[-1]['ratio_median']:.3f})",
                file=sys.stderr,
                flush=True,
            )
    return rows


def churn(col: Any, ctx: Context) -> Result:
    """The goal's churn: delete CHURN_DELETE of the rows, upsert CHURN_UPSERT of them
    back under new ids, then recall (against a numpy brute force over what is left) and
    deleted ids returned, one query at a time and in one batch; again after optimize()
    compacts the segments."""
    n = len(ctx.xb)
    rng = np.random.default_rng(7)
    doomed = rng.choice(n, int(n * CHURN_DELETE), replace=False)
    back = doomed[: int(n * CHURN_UPSERT)]  # these vectors return under new ids
    record: Result = {"deleted": len(doomed), "upserted": len(back)}
    start = time.perf_counter()
    for lo in range(0, len(doomed), LATENTDB_BATCH):
        col.delete([str(i) for i in doomed[lo : lo + LATENTDB_BATCH]])
    record["delete_s"] = time.perf_counter() - start
    start = time.perf_counter()
    col.upsert([f"n{i}" for i in back], vectors=ctx.xb[back], model=MODEL)
    record["upsert_s"] = time.perf_counter() - start
    alive = np.ones(n, dtype=bool)
    alive[doomed] = False
    rows = np.concatenate([np.flatnonzero(alive), back])
    names = np.array([str(i) for i in np.flatnonzero(alive)] + [f"n{i}" for i in back])
    queries = ctx.xq[: ctx.single or len(ctx.xq)]
    truth = names[exact_top_k(ctx.xb[rows], queries)[0]]
    dead = {str(i) for i in doomed}

    def measure(stage: str) -> None:
        single = [col.query(vectors=q, k=K, include=()).ids[0] for q in queries]
        batch = col.query(vectors=queries, k=K, include=()).ids
        for mode, found in (("single", single), ("batch", batch)):
            hits = [len(set(got) & set(want)) / K for got, want in zip(found, truth, strict=True)]
            record[f"recall_{mode}_{stage}"] = float(np.mean(hits))
            record[f"dead_{mode}_{stage}"] = sum(i in dead for row in found for i in row)
        record[f"status_{stage}"] = as_dict(col.index_status())

    measure("after")
    start = time.perf_counter()
    col.optimize()
    record["compact_s"] = time.perf_counter() - start
    measure("compacted")
    print(f"  churn: {record}", file=sys.stderr, flush=True)
    return record


def latentdb_values(kind: str, ctx: Context) -> list[Any]:
    """Defaults first (the headline), then the kind's knob swept like faiss's."""
    values: list[Any] = [None]
    if kind.startswith("hnsw"):
        values += [{"ef": ef} for ef in ctx.ef]
        mids = [{"ef": ef} for ef in (64, 256)]
    elif kind.startswith("ivf"):
        values += [{"nprobe": p} for p in ctx.nprobe]
        mids = [{"nprobe": p} for p in (16, 64)]
    else:
        return values
    if kind in ("hnsw-sq8", "ivf-pq") and not ctx.quick:
        values += [mid | {"rerank": r} for mid in mids for r in (2, 8)]
    return values


SYSTEMS: dict[str, Callable[[Context], Iterator[Config]]] = {
    "faiss_hnsw": faiss_hnsw,
    "faiss_hnsw_sq8": faiss_hnsw_sq8,
    "faiss_ivf": faiss_ivf,
    "hnswlib": hnswlib_system,
    "usearch": usearch_system,
    "chroma": chroma_system,
    "lancedb": lancedb_system,
    "qdrant": qdrant_system,
    "latentdb": latentdb_system,
}
PACKAGES = (
    "numpy",
    "faiss-cpu",
    "hnswlib",
    "usearch",
    "chromadb",
    "lancedb",
    "pyarrow",
    "qdrant-client",
    "latentdb",
    "matplotlib",
    "threadpoolctl",
)


def run_system(name: str, ctx: Context, results: list[Result]) -> None:
    """Build and sweep every config of one system; a failure costs only that system/config.

    Errors while building (inside the generator) end the system; errors while sweeping
    one config skip that config only.
    """
    print(f"== {name} (load {load_average()})", file=sys.stderr, flush=True)
    configs = SYSTEMS[name](ctx)
    while True:
        try:
            config = next(configs)
        except StopIteration:
            return
        except Skipped as exc:
            print(f"   skipped: {exc}", file=sys.stderr)
            ctx.notes.append(f"{name}: skipped: {exc}")
            return
        except Exception as exc:
            traceback.print_exc()
            ctx.notes.append(f"{name}: failed while building: {type(exc).__name__}: {exc}")
            return
        try:
            results.append(run_config(config, ctx))
        except Exception as exc:
            traceback.print_exc()
            missing = name == "latentdb" and isinstance(exc, TypeError | AttributeError)
            what = "skipped, API not there yet" if missing else "failed"
            ctx.notes.append(f"{config.name}: {what}: {type(exc).__name__}: {exc}")
        del config  # let the generator free this config's index before building the next


# -- report -----------------------------------------------------------------------------


def summary_table(results: list[Result]) -> list[str]:
    rows = [
        "| system | config | build s | RSS built MiB (+rise) | peak RSS MiB | disk MiB "
        "| qps1 @0.90 | qps1 @0.95 | qps1 @0.99 | qpsB @0.95 | max recall | queries 1 / B |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        b, s, sweep = r["build"], r["summary"], r["sweep"]
        rise = b.get("rss_built", 0.0) - b.get("rss_start", 0.0)
        queries = f"{sweep[0]['single_queries']} / {sweep[0].get('batch_queries', '-')}"
        rows.append(
            f"| {r['name']} | {r['description']} | {build_cell(b)} "
            f"| {fmt(b.get('rss_built'))} (+{fmt(rise)}) | {fmt(r['rss_peak'])} "
            f"| {fmt(b.get('disk_mib'))} | {fmt(s['qps1@0.90'])} | {fmt(s['qps1@0.95'])} "
            f"| {fmt(s['qps1@0.99'])} | {fmt(s['qpsB@0.95'])} | {s['max_recall']:.4f} "
            f"| {queries} |"
        )
    return rows


def latentdb_table(results: list[Result]) -> list[str]:
    """latentdb's headline: recall and QPS at its self-tuned defaults, re-open time."""
    ours = [r for r in results if r["name"].startswith("latentdb")]
    if not ours:
        return []
    rows = [
        "| config | built | tuned params | ingest s | optimize s | recall @defaults "
        "| qps1 @defaults | qpsB @defaults | re-open + first query s (goal < 2) |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in ours:
        status, phases = r["extra"].get("status", {}), r["build"].get("phases_s", {})
        first = r["sweep"][0]
        rows.append(
            f"| {r['name']} | {status.get('kind', '?')} | {status.get('params', '?')} "
            f"| {fmt(phases.get('ingest'), 1)} | {fmt(phases.get('optimize'), 1)} "
            f"| {first['recall']:.4f} | {fmt(first['qps1'])} | {fmt(first.get('qpsB'))} "
            f"| {fmt(r['extra'].get('reopen_first_query_s'), 2)} |"
        )
    lines = ["## latentdb at its defaults", "", *rows, ""]
    for r in ours:
        paired = r["extra"].get("paired")
        if not paired:
            continue
        lines += [
            f"### {r['name']}: query() against faiss on the same graph, interleaved",
            "",
            "Alternating passes of latentdb's `query()` and faiss's `search()` on the faiss "
            "index inside latentdb's segment: the cost of latentdb's Python path, with the "
            "machine's drift over the run taken out (best pass; median in brackets).",
            "",
            "| ef | faiss qps1 | latentdb qps1 | latentdb / faiss |",
            "|--:|--:|--:|--:|",
        ]
        lines += [
            f"| {p['ef']} | {fmt(p['faiss_qps1'])} | {fmt(p['latentdb_qps1'])} "
            f"| {p['ratio']:.2f} ({p['ratio_median']:.2f}) |"
            for p in paired
        ]
        lines.append("")
    for r in ours:
        c = r["extra"].get("churn")
        if not c:
            continue
        lines += [
            f"### {r['name']}: after deleting {c['deleted']:,} rows and upserting "
            f"{c['upserted']:,} under new ids",
            "",
            f"delete {c['delete_s']:.1f} s, upsert {c['upsert_s']:.1f} s; recall@10 at the "
            "defaults against a brute force over the rows left.",
            "",
            "| stage | recall single | recall batch | deleted ids returned | indexed "
            "| pending | tombstones |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for stage, label in (("after", "after the churn"), ("compacted", "after optimize()")):
            if stage == "compacted":
                label += f" ({c['compact_s']:.1f} s)"
            st = c[f"status_{stage}"]
            lines.append(
                f"| {label} | {c[f'recall_single_{stage}']:.4f} "
                f"| {c[f'recall_batch_{stage}']:.4f} "
                f"| {c[f'dead_single_{stage}'] + c[f'dead_batch_{stage}']} "
                f"| {st.get('indexed', '?'):,} | {st.get('pending', '?'):,} "
                f"| {st.get('deleted', '?'):,} |"
            )
        lines.append("")
    return lines


def sweep_tables(results: list[Result]) -> list[str]:
    """Every knob value of every config; extra timings (e.g. chroma's re-open) as columns."""
    lines = ["## Sweeps", ""]
    for r in results:
        keys = {key for row in r["sweep"] for key in row if key.endswith(("_s", "_mib"))}
        extra_keys = sorted(key for key in keys if not key.endswith("times_s"))
        lines += [
            f"### {r['name']}",
            "",
            f"{r['description']}. Knob: {r['knob']}. Load average after: {r['load_end']}.",
            "",
            f"| {r['knob']} | recall@10 | recall ε | qps1 | qpsB |"
            + "".join(f" {key} |" for key in extra_keys),
            "|---|--:|--:|--:|--:|" + "--:|" * len(extra_keys),
        ]
        for row in r["sweep"]:
            lines.append(
                f"| {row['label']} | {row['recall']:.4f} | {row['recall_eps']:.4f} "
                f"| {fmt(row['qps1'])} | {fmt(row.get('qpsB'))} |"
                + "".join(
                    f" {fmt(row.get(key), 3 if key.endswith('_s') else 0)} |" for key in extra_keys
                )
            )
        lines.append("")
    return lines


def render(report: Result) -> str:
    """The whole report as markdown: settings, summary, latentdb, notes, sweeps, machine."""
    cfg, info, versions = report["config"], report["machine"], report["versions"]
    libs = " · ".join(f"{name} {ver}" for name, ver in versions.items() if ver)
    lines = [
        f"# Approximate search, {cfg['train']:,} x {DIMENSION} (pypi-minilm)",
        "",
        f"{info['date']} · {info['cpu']} · {info['cpu_count']} CPUs · "
        f"python {info['python']} · {libs}",
        "",
        f"recall = recall@{K} by id against the file's exact top-{K} (ε: ann-benchmarks style, "
        f"within {EPSILON} of the {K}th true distance), over {cfg['queries']:,} queries unless "
        "the last column says fewer. qps1 = one query per call, 1 thread (BLAS, OpenMP, "
        f"faiss pinned); qpsB = all queries in one call, {BATCH_THREADS} threads; best of "
        f"{cfg['repeats']} timed passes after a warm-up. qps1 @x = best qps1 over knob values "
        f"reaching recall x. Builds use {BUILD_THREADS} threads. RSS in MiB includes the "
        f"loaded data set ({cfg['rss_after_load_mib']:,.0f} MiB after loading it); rise = "
        "RSS once built minus RSS before the build. Disk: faiss/hnswlib/usearch written to a "
        "file, the others their folder.",
        "",
        "## Summary",
        "",
        *summary_table(report["results"]),
        "",
        *latentdb_table(report["results"]),
        "## Notes",
        "",
        *([f"- {note}" for note in all_notes(report)] or ["- none"]),
        "",
        "![recall vs qps1](ann.png)",
        "",
        *sweep_tables(report["results"]),
        "## Machine",
        "",
        f"Threads: faiss OpenMP max {report['faiss_omp_threads']}; "
        + "; ".join(
            f"{p['internal_api']} {p['version']} ({p['file']}) {p['num_threads']}"
            for p in info["threadpools"]
        )
        + f". Process peak RSS {report['max_rss_mib']:,.0f} MiB. Wall time "
        f"{report['wall_s'] / 60:.1f} min. Load average (1/5/15 min) at start "
        f"{cfg['load_avg_at_start']}, at end {info['load_avg_1_5_15']}: the machine is shared, "
        "treat numbers taken under a load above the core count as noisy.",
        "",
    ]
    return "\n".join(lines)


def all_notes(report: Result) -> list[str]:
    """Run-wide notes (skips, failures), then each config's own."""
    own = [f"{r['name']}: {note}" for r in report["results"] for note in r["notes"]]
    return [*report["notes"], *own]


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (recall, qps) points no other point beats on both, by rising recall."""
    front: list[tuple[float, float]] = []
    for recall, qps in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or qps > front[-1][1]:
            front.append((recall, qps))
    return front[::-1]


def plot(results: list[Result], path: Path, title: str) -> str | None:
    """Recall against qps1 (log), one line per config, like ann-benchmarks; None if drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib does not import: no plot"
    fig, ax = plt.subplots(figsize=(11, 7.5))
    colors = plt.get_cmap("tab20")
    for i, r in enumerate(results):
        ours = r["name"].startswith("latentdb")
        color = colors((2 * i) % 20 + (2 * i // 20) % 2)  # dark shades first, then light
        front = pareto([(row["recall"], row["qps1"]) for row in r["sweep"]])
        recalls, qps = zip(*front, strict=True)
        width = 2.2 if ours else 1.0
        ax.plot(recalls, qps, "o-", markersize=3, color=color, lw=width, label=r["name"])
        if ours:  # the defaults row: what a user gets without tuning
            first = r["sweep"][0]
            ax.plot(first["recall"], first["qps1"], marker="*", markersize=14, color=color)
    ax.set_yscale("log")
    ax.set_xlim(0.7, 1.001)
    ax.set_xlabel(f"recall@{K}")
    ax.set_ylabel("queries per second (one query per call, 1 thread)")
    ax.set_title(f"{title}: recall vs qps1 (Pareto front per config; ★ latentdb defaults)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def versions() -> dict[str, str | None]:
    return package_versions(PACKAGES)


def write_report(
    args: argparse.Namespace, ctx: Context, results: list[Result], run: Result, started: float
) -> str:
    """Markdown, JSON and plot under --out; called after every system, so a crash keeps them."""
    sizes = {"train": len(ctx.xb), "queries": len(ctx.xq), "k": K, "single": ctx.single}
    report: Result = {
        "config": run | sizes | {"repeats": ctx.repeats, "quick": ctx.quick},
        "machine": machine_info(),
        "versions": versions(),
        "faiss_omp_threads": faiss.omp_get_max_threads() if faiss is not None else None,
        "results": results,
        "notes": list(ctx.notes),
        "max_rss_mib": max_rss_mib(),
        "wall_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    problem = (
        plot(results, args.out / "ann.png", f"{len(ctx.xb):,} x {DIMENSION}")
        if results
        else "no results: no plot"
    )
    if problem:
        report["notes"].append(problem)
    text = render(report)
    (args.out / "ann.md").write_text(text)
    (args.out / "ann.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return text


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ann-benchmarks HDF5")
    parser.add_argument("--queries", type=int, default=1000, help="test queries to use")
    parser.add_argument("--single", type=int, help="queries timed one per call (all)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per knob value")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma list to run")
    parser.add_argument("--latentdb-kinds", default=",".join(LATENTDB_KINDS))
    parser.add_argument("--out", type=Path, default=REPO / "bench/results", help="output dir")
    parser.add_argument("--workdir", type=Path, help="where indexes are persisted (a temp dir)")
    parser.add_argument("--qdrant-dir", type=Path, help="qdrant's folder (default /dev/shm)")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer knobs, queries")
    parser.add_argument("--train", type=int, help="use only the first N train vectors (smoke)")
    args = parser.parse_args(argv)
    args.systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    args.latentdb_kinds = [kind.strip() for kind in args.latentdb_kinds.split(",")]
    if args.quick:
        args.queries, args.repeats = min(args.queries, 200), 1
    args.single = min(args.single or args.queries, args.queries)
    if args.qdrant_dir is None and os.access("/dev/shm", os.W_OK):
        args.qdrant_dir = Path("/dev/shm")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    run: Result = {"data": str(args.data), "systems": args.systems}
    run["load_avg_at_start"] = load_average()
    xb, xq, truth = load_dataset(args.data, args.queries)
    if args.train and args.train < len(xb):
        xb = np.ascontiguousarray(xb[: args.train])
        truth = exact_top_k(xb, xq)
    run["rss_after_load_mib"] = rss_mib()
    with (
        tempfile.TemporaryDirectory(prefix="latentdb-ann-", dir=args.workdir) as tmp,
        tempfile.TemporaryDirectory(prefix="latentdb-ann-", dir=args.qdrant_dir or tmp) as qtmp,
    ):
        ctx = Context(
            xb,
            xq,
            truth,
            ef=QUICK_EF if args.quick else EF_SWEEP,
            nprobe=QUICK_NPROBE if args.quick else NPROBE_SWEEP,
            single=args.single,
            repeats=args.repeats,
            quick=args.quick,
            workdir=Path(tmp),
            qdrant_dir=Path(qtmp),
            latentdb_kinds=args.latentdb_kinds,
        )
        results: list[Result] = []
        text = ""
        for name in args.systems:
            run_system(name, ctx, results)
            text = write_report(args, ctx, results, run, started)
    print(text)


if __name__ == "__main__":
    main()
