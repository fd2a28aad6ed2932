"""Filtered vector search: latentdb's ``where=`` against faiss (a graph with an IDSelector,
an exact scan of the pre-sliced subset), Chroma, LanceDB and Qdrant, at several
selectivities, on the same data, in one process, one system after another.

Every train row gets the metadata ``{"bucket": row % 1000, "lang": ...}``, ``lang`` drawn
once from LANGS with the skewed LANG_WEIGHTS by a seeded RNG. The filters (FILTERS) let
through about 0.1 %, 1 %, 10 % and 50 % of the rows, plus one ``$and`` of two conditions
(~4 %), and "none" (no filter) for each system's own unfiltered speed. They are written
in the where language latentdb shares with Chroma and translated for each peer (SQL for
LanceDB, a ``models.Filter`` for Qdrant, a boolean mask for faiss and the ground truth).

The ground truth of each filter is the exact top-10 by cosine over the rows it allows
(numpy). Per system and filter we measure recall@10 against it (by id), *full* (the share
of queries that got min(10, matching rows) results), rows returned that the filter
excludes, qps1 (one query per call, one thread) and qpsB (the queries in one call on 2
threads) where the system has a batch path, in the habits of bench/ann.py: a warm-up,
best of ``--repeats`` timed passes, only the system's own call timed. The goal table
puts latentdb's filtered qps1 beside its own unfiltered qps1 and Chroma's filtered qps1.

Run from the repository root (~26 minutes on 2 cores, Qdrant local 7 of them)::

    .venv/bin/python bench/filtered.py
    .venv/bin/python bench/filtered.py --systems latentdb,faiss_exact_subset
    .venv/bin/python bench/filtered.py --train 5000 --quick            # smoke run

It writes ``filtered.md`` and ``filtered.json`` under ``--out`` (default
``bench/results``), after each system, so a run that dies late keeps what it measured.
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
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
    release_memory,
    rss_mib,
    seconds,
    thread_limit,
    time_calls,
)

# Shared with ann.py and exact.py; run as a script, bench/ is on sys.path.
from _filtered_first import first_queries, first_tables

Where = Mapping[str, Any]
BoolArray = npt.NDArray[np.bool_]

BUCKETS = 1000  # bucket = row % BUCKETS: a filter on it allows an exact share of the rows
LANGS = ("en", "de", "fr", "es", "ja")
LANG_WEIGHTS = (0.50, 0.20, 0.15, 0.10, 0.05)  # skewed, like real package summaries
LANG_SEED = 1000
FILTERS: tuple[tuple[str, Where | None], ...] = (
    ("none", None),
    ("0.1%", {"bucket": 7}),
    ("1%", {"bucket": {"$lt": 10}}),
    ("10%", {"bucket": {"$lt": 100}}),
    ("50%", {"bucket": {"$lt": 500}}),
    ("and", {"$and": [{"bucket": {"$lt": 200}}, {"lang": "de"}]}),  # 20 % x 20 % = ~4 %
)
FAISS_EF = [64, 256, 512]  # PEERS.md: 1 % -> recall 0.84 at ef 256, 0.94 at ef 512
QUICK_EF = [64, 256]
LANCE_HNSW_KNOBS = {"nprobes": 4, "ef": 64}  # recall 0.98 unfiltered in bench/ann.py
LATENTDB_BATCH = 10_000
# Slow systems time fewer queries, so that the whole run stays within ~25 minutes.
CHROMA_QUERIES = 100  # ~21 QPS filtered (PEERS.md)
LANCE_FLAT_SINGLE = 50  # flat scan, ~6 QPS one query at a time unfiltered
LANCE_INDEXED_SINGLE = 200  # ~3-5 ms of per-call overhead
LANCE_BATCH = 200
QDRANT_QUERIES = 20  # 0.8 QPS filtered: a payload filter evaluated in Python per point
QDRANT_BATCH = 10  # its batch is no faster: a Python loop over the requests
QDRANT_WARMUP = 2
PASS_BUDGET_S = 15.0  # a timed pass of a system slower than its cap expects is cut to this
MIN_QUERIES = 20  # ... but never below this many queries
# The goal (on qps1): recall and full results at every selectivity, and speed that holds up
# against latentdb's own unfiltered search and against Chroma's filtered search.
GOAL_RECALL, GOAL_FULL, GOAL_OF_UNFILTERED, GOAL_OF_CHROMA = 0.95, 1.0, 0.5, 50.0
FAISS_SELECTOR_NOTE = (
    "the selector only keeps excluded rows out of the result: the graph walk still spends its "
    "efSearch candidates on all rows, so when few rows pass, fewer than k allowed ones are "
    "found (full < 1) and recall falls; a larger ef buys it back at the cost of speed"
)
LANCE_SCALAR_NOTE = (
    "scalar indexes via create_index(col, config=BTree()/Bitmap()): create_scalar_index() "
    "is deprecated since lancedb 0.25 and warns"
)
# What of latentdb's QueryPlan the goal table shows (the JSON has all of it).
PLAN_KEYS = ("allowed", "estimated", "params", "exact_fallbacks", "filter_source")


@dataclass
class Filter:
    """One filter with what scoring needs: the rows it allows and the exact answers."""

    name: str
    where: Where | None
    mask: BoolArray  # (n,) rows the filter allows
    truth: Hits  # exact top-K over those rows, -1 / inf past the last allowed row

    @property
    def matches(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def allowed(self) -> IntMatrix:
        return np.flatnonzero(self.mask)


@dataclass
class Context:
    """The data and the settings every system runner reads."""

    xb: FloatMatrix
    xq: FloatMatrix
    metadata: list[Result]  # one {"bucket": int, "lang": str} per train row
    columns: dict[str, np.ndarray]  # the same as arrays, for masks and LanceDB
    filters: list[Filter]
    ef: list[int]
    single: int  # queries timed one per call (before per-system caps)
    repeats: int
    budget_s: float
    quick: bool
    workdir: Path
    qdrant_dir: Path
    notes: list[str] = field(default_factory=list)


@dataclass
class Searcher:
    """A system bound to one filter: ``single`` takes one query as a (1, d) matrix,
    ``batch`` several, both returning what the system returns; ``single_ids`` and
    ``batch_ids`` turn that into (nq, K) row ids, -1 where fewer came back, after the
    clock stops. ``extra`` is recorded with the filter's row (a plan, a subset's build).
    ``explain``, where the system has one, is asked after the timed passes too: a system
    that caches per filter may plan a repeated filter differently from a new one."""

    single: Callable[[FloatMatrix], Any]
    batch: Callable[[FloatMatrix], Any] | None
    single_ids: Callable[[Any], IntMatrix] = lambda raw: np.asarray(raw, dtype=np.int64)
    batch_ids: Callable[[Any], IntMatrix] = lambda raw: np.asarray(raw, dtype=np.int64)
    extra: Result = field(default_factory=dict)
    explain: Callable[[], Any] | None = None  # the plan now, asked after the timed passes


@dataclass
class Config:
    """One system config, built once; ``bind`` readies it for a filter outside the clock
    (a selector, a subset index, the filter in the system's own syntax)."""

    name: str
    description: str
    bind: Callable[[Filter], Searcher]
    build: Result = field(default_factory=dict)
    single_limit: int | None = None
    batch_limit: int | None = None
    warmup: int = WARMUP
    repeats: int | None = None  # None: --repeats
    paired: bool = False  # also time each filter in passes alternating with no filter
    notes: list[str] = field(default_factory=list)
    extra: Result = field(default_factory=dict)


# -- metadata and filters ---------------------------------------------------------------


def make_metadata(rows: int) -> tuple[list[Result], dict[str, np.ndarray]]:
    """``bucket = row % BUCKETS``; ``lang`` drawn with LANG_WEIGHTS by a seeded RNG."""
    bucket = np.arange(rows, dtype=np.int64) % BUCKETS
    rng = np.random.default_rng(LANG_SEED)
    lang = np.asarray(LANGS)[rng.choice(len(LANGS), size=rows, p=LANG_WEIGHTS)]
    records = [{"bucket": int(b), "lang": str(g)} for b, g in zip(bucket, lang, strict=True)]
    return records, {"bucket": bucket, "lang": lang}


def terms(where: Where) -> tuple[Any, ...]:
    """A where clause as a tree: ("$and" | "$or", [trees]) or ("field", key, op, operand).

    Several keys in one dict all must hold; a bare value is ``$eq``.
    """
    items: list[tuple[Any, ...]] = []
    for key, value in where.items():
        if key in ("$and", "$or"):
            items.append((key, [terms(clause) for clause in value]))
        elif isinstance(value, Mapping):
            items += [("field", key, op, operand) for op, operand in value.items()]
        else:
            items.append(("field", key, "$eq", value))
    return items[0] if len(items) == 1 else ("$and", items)


NUMPY_OPS: dict[str, Callable[[np.ndarray, Any], BoolArray]] = {
    "$eq": lambda col, v: col == v,
    "$ne": lambda col, v: col != v,
    "$gt": lambda col, v: col > v,
    "$gte": lambda col, v: col >= v,
    "$lt": lambda col, v: col < v,
    "$lte": lambda col, v: col <= v,
    "$in": lambda col, v: np.isin(col, list(v)),
    "$nin": lambda col, v: ~np.isin(col, list(v)),
}
SQL_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def where_mask(where: Where | None, columns: dict[str, np.ndarray]) -> BoolArray:
    """The rows a filter allows (every row has every key here)."""
    rows = len(next(iter(columns.values())))
    if not where:
        return np.ones(rows, dtype=bool)

    def run(term: tuple[Any, ...]) -> BoolArray:
        if term[0] == "field":
            _, key, op, operand = term
            return NUMPY_OPS[op](columns[key], operand)
        parts = [run(t) for t in term[1]]
        return np.logical_and.reduce(parts) if term[0] == "$and" else np.logical_or.reduce(parts)

    return run(terms(where))


def where_sql(where: Where | None) -> str | None:
    """A filter as a LanceDB (DataFusion) SQL condition."""
    if not where:
        return None

    def literal(value: Any) -> str:
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, str):
            return "'" + value.replace("'", "''") + "'"
        return repr(value)

    def run(term: tuple[Any, ...]) -> str:
        if term[0] == "field":
            _, key, op, operand = term
            if op in ("$in", "$nin"):
                values = ", ".join(literal(v) for v in operand)
                return f"{key} {'IN' if op == '$in' else 'NOT IN'} ({values})"
            return f"{key} {SQL_OPS[op]} {literal(operand)}"
        joiner = " AND " if term[0] == "$and" else " OR "
        return joiner.join(f"({run(t)})" for t in term[1])

    return run(terms(where))


def where_qdrant(where: Where | None) -> Any:
    """A filter as a Qdrant ``models.Filter`` (None: no filter)."""
    if not where:
        return None
    from qdrant_client import models

    def run(term: tuple[Any, ...]) -> Any:
        if term[0] != "field":
            items = [run(t) for t in term[1]]
            return models.Filter(must=items) if term[0] == "$and" else models.Filter(should=items)
        _, key, op, operand = term
        if op in ("$eq", "$ne"):
            match = models.FieldCondition(key=key, match=models.MatchValue(value=operand))
            return match if op == "$eq" else models.Filter(must_not=[match])
        if op == "$in":
            return models.FieldCondition(key=key, match=models.MatchAny(any=list(operand)))
        if op == "$nin":
            return models.FieldCondition(
                key=key, match=models.MatchExcept(**{"except": list(operand)})
            )
        return models.FieldCondition(key=key, range=models.Range(**{op[1:]: operand}))

    top = run(terms(where))
    return top if isinstance(top, models.Filter) else models.Filter(must=[top])


def make_filters(xb: FloatMatrix, xq: FloatMatrix, columns: dict[str, np.ndarray]) -> list[Filter]:
    """Each filter's mask and its exact top-K over the allowed rows (numpy, cosine)."""
    filters = []
    with thread_limit(BUILD_THREADS):
        for name, where in FILTERS:
            mask = where_mask(where, columns)
            allowed = np.flatnonzero(mask)
            ids, dist = exact_top_k(xb[allowed], xq)
            rows = np.where(ids >= 0, allowed[np.maximum(ids, 0)], -1)
            filters.append(Filter(name, where, mask, (rows, dist)))
    return filters


# -- measuring --------------------------------------------------------------------------


def score_filtered(xb: FloatMatrix, xq: FloatMatrix, found: IntMatrix, filt: Filter) -> Result:
    """recall@K by id against the filter's exact answers, its ε variant (ann-benchmarks:
    within EPSILON of the K-th true distance, and allowed by the filter), full, and how
    many returned rows the filter excludes. Queries expect min(K, matching rows) hits."""
    true_ids, true_dist = filt.truth
    queries = len(found)
    expected = min(K, filt.matches)
    valid = found >= 0
    returned = np.count_nonzero(valid, axis=1)
    if expected == 0:
        none_back = float(np.mean(returned == 0))
        return {"recall": none_back, "recall_eps": none_back, "full": 1.0, "outside": 0}
    hits = [
        np.intersect1d(found[i][valid[i]], true_ids[i][true_ids[i] >= 0]).size
        for i in range(queries)
    ]
    rows = np.maximum(found, 0)
    dist = 1.0 - np.einsum("qd,qkd->qk", xq[:queries], xb[rows])
    threshold = true_dist[:queries, expected - 1 : expected] + EPSILON
    close = valid & filt.mask[rows] & (dist <= threshold)
    return {
        "recall": float(np.mean(hits)) / expected,
        "recall_eps": float(np.mean(np.minimum(np.count_nonzero(close, axis=1), expected)))
        / expected,
        "full": float(np.mean(returned >= expected)),
        "outside": int(np.count_nonzero(valid & ~filt.mask[rows])),
    }


def paced(count: int, warm_s: float, warm_queries: int, budget_s: float) -> int:
    """Queries a timed pass may take: ``count``, or fewer when the warm-up says a pass
    would run past ``budget_s`` (never fewer than MIN_QUERIES)."""
    if warm_queries == 0 or warm_s <= 0:
        return count
    fits = int(budget_s / (warm_s / warm_queries))
    return min(count, max(fits, MIN_QUERIES))


def measure_single(searcher: Searcher, config: Config, filt: Filter, ctx: Context) -> Result:
    """qps1, recall and full of one query per call on one thread."""
    xq = ctx.xq
    count = capped(ctx.single, config.single_limit)

    def one_by_one(n: int) -> list[Any]:
        return [searcher.single(xq[i : i + 1]) for i in range(n)]

    with thread_limit(1):
        first_s, _ = seconds(lambda: searcher.single(xq[:1]))
        warm = min(config.warmup, count)
        warm_s, _ = seconds(lambda: one_by_one(warm))
        count = paced(count, warm_s, warm, ctx.budget_s)
        times, answers = time_calls(
            lambda: one_by_one(count), lambda: None, config.repeats or ctx.repeats
        )
    ids = np.vstack([searcher.single_ids(answer) for answer in answers])
    scored = score_filtered(ctx.xb, xq, ids, filt)
    return {
        "qps1": count / min(times),
        "single_queries": count,
        "single_times_s": [round(t, 5) for t in times],
        "first_call_s": first_s,
    } | {f"{key}1": value for key, value in scored.items()}


def measure_batch(searcher: Searcher, config: Config, filt: Filter, ctx: Context) -> Result:
    """qpsB, recall and full of the queries in one call on BATCH_THREADS."""
    assert searcher.batch is not None
    batch, xq = searcher.batch, ctx.xq
    count = capped(len(xq), config.batch_limit)
    with thread_limit(BATCH_THREADS):
        warm = min(config.warmup, count)
        warm_s, _ = seconds(lambda: batch(xq[:warm]))
        count = paced(count, warm_s, warm, ctx.budget_s)
        times, answer = time_calls(
            lambda: batch(xq[:count]), lambda: None, config.repeats or ctx.repeats
        )
    scored = score_filtered(ctx.xb, xq, searcher.batch_ids(answer), filt)
    return {
        "qpsB": count / min(times),
        "batch_queries": count,
        "batch_times_s": [round(t, 5) for t in times],
    } | {f"{key}B": value for key, value in scored.items()}


def measure(config: Config, filt: Filter, ctx: Context) -> Result:
    """One filter on one config: bind (untimed), time single and batch, score both.

    The headline recall / full come from whichever pass covered more queries (batch on a
    tie), as in bench/ann.py.
    """
    start = time.perf_counter()
    searcher = config.bind(filt)
    row: Result = {"filter": filt.name, "bind_s": time.perf_counter() - start}
    row |= searcher.extra
    row |= measure_single(searcher, config, filt, ctx)
    if searcher.batch is not None:
        row |= measure_batch(searcher, config, filt, ctx)
    use_batch = row.get("batch_queries", 0) >= row["single_queries"]
    suffix = "B" if use_batch else "1"
    for key in ("recall", "recall_eps", "full", "outside"):
        row[key] = row[f"{key}{suffix}"]
    row["recall_queries"] = row["batch_queries" if use_batch else "single_queries"]
    if searcher.explain is not None:
        row["plan"] = searcher.explain()
    if config.paired and filt.where is not None:
        row["paired"] = paired_with_unfiltered(config, searcher, row["single_queries"], ctx)
    print(
        f"  {config.name} [{filt.name}]: recall {row['recall']:.4f} full {row['full']:.2f} "
        f"qps1 {row['qps1']:,.0f} ({row['single_queries']} q) qpsB {fmt(row.get('qpsB'))}"
        + (f" outside {row['outside']}" if row["outside"] else "")
        + (f" x unfiltered {row['paired']['ratio']:.2f} (paired)" if "paired" in row else ""),
        file=sys.stderr,
        flush=True,
    )
    return row


def paired_with_unfiltered(config: Config, searcher: Searcher, count: int, ctx: Context) -> Result:
    """qps1 of a filter and of no filter on the same queries, in alternating passes (at
    least 3 rounds): the ratio the goal asks for, with the machine's drift taken out (the
    sequential rows are minutes apart on a shared machine)."""
    calls = {"filtered": searcher.single, "unfiltered": config.bind(ctx.filters[0]).single}
    times: dict[str, list[float]] = {name: [] for name in calls}
    xq = ctx.xq
    with thread_limit(1):
        for _ in range(max(ctx.repeats, 3)):
            for name, call in calls.items():
                for i in range(min(config.warmup, count)):
                    call(xq[i : i + 1])
                start = time.perf_counter()
                for i in range(count):
                    call(xq[i : i + 1])
                times[name].append(time.perf_counter() - start)
    best = {name: count / min(t) for name, t in times.items()}
    median = {name: count / float(np.median(t)) for name, t in times.items()}
    return {
        "queries": count,
        "qps1": best,
        "ratio": best["filtered"] / best["unfiltered"],
        "ratio_median": median["filtered"] / median["unfiltered"],
        "times_s": {name: [round(t, 5) for t in ts] for name, ts in times.items()},
    }


def run_config(config: Config, ctx: Context) -> Result:
    """Every filter on one config; a filter the system rejects is a note, not the end."""
    print(f"- {config.name}: {len(ctx.filters)} filters", file=sys.stderr, flush=True)
    memory: Result = {}
    rows = []
    with peak_rss(memory):
        for filt in ctx.filters:
            try:
                rows.append(measure(config, filt, ctx))
            except Exception as exc:
                traceback.print_exc()
                config.notes.append(f"[{filt.name}] failed: {type(exc).__name__}: {exc}")
            release_memory()  # a subset index or a selector of the last filter
    return {
        "name": config.name,
        "description": config.description,
        "build": config.build,
        "rss_peak": max(memory["peak"], config.build.get("rss_peak_build", 0.0)),
        "load_end": load_average(),
        "notes": config.notes,
        "extra": config.extra,
        "filters": {row["filter"]: row for row in rows},
    }


# -- systems: libraries -----------------------------------------------------------------


def faiss_hnsw_idselector(ctx: Context) -> Iterator[Config]:
    """One faiss HNSW graph, searched with ``SearchParametersHNSW(sel=IDSelectorBitmap)``
    at a few efSearch values: the reference for "a graph with a selector"."""
    fa = need("faiss")
    build: Result = {}
    with building(build):
        index = fa.IndexHNSWFlat(DIMENSION, HNSW_M, fa.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EFC
        index.add(ctx.xb)
    persisted = ctx.workdir / "faiss_hnsw.faiss"
    fa.write_index(index, str(persisted))
    build["disk_mib"] = dir_mib(persisted)
    persisted.unlink()

    def bind(ef: int, filt: Filter) -> Searcher:
        params = fa.SearchParametersHNSW()
        params.efSearch = ef
        keep: tuple[Any, ...] = ()
        if filt.where is not None:
            bitmap = np.packbits(filt.mask, bitorder="little")  # bit i of byte i // 8
            selector = fa.IDSelectorBitmap(len(bitmap), fa.swig_ptr(bitmap))
            params.sel = selector
            keep = (bitmap, selector)  # params holds raw pointers: keep both alive

        def search(queries: FloatMatrix, _keep: tuple[Any, ...] = keep) -> IntMatrix:
            return index.search(queries, K, params=params)[1]

        return Searcher(search, search)

    description = f"IndexHNSWFlat M={HNSW_M} efC={HNSW_EFC} IP, IDSelectorBitmap"
    for i, ef in enumerate(ctx.ef):
        shared = build if i == 0 else build | {"shared_build_with": ctx.ef[0]}
        yield Config(
            f"faiss_hnsw_idselector ef={ef}",
            f"{description}, efSearch={ef}",
            lambda filt, ef=ef: bind(ef, filt),
            build=shared,
            notes=[] if i else [FAISS_SELECTOR_NOTE],
        )


def faiss_exact_subset(ctx: Context) -> Iterator[Config]:
    """``IndexFlatIP`` over the allowed rows only, built per filter outside the clock: the
    floor of what an exact pre-filter costs once the rows are known."""
    fa = need("faiss")

    def bind(filt: Filter) -> Searcher:
        allowed = filt.allowed
        start = time.perf_counter()
        subset = fa.IndexFlatIP(DIMENSION)
        subset.add(ctx.xb[allowed])
        built_s = time.perf_counter() - start

        def search(queries: FloatMatrix) -> IntMatrix:
            return subset.search(queries, K)[1]

        def ids(positions: Any) -> IntMatrix:
            return np.where(positions >= 0, allowed[np.maximum(positions, 0)], -1)

        return Searcher(search, search, ids, ids, {"subset_build_s": built_s})

    yield Config(
        "faiss_exact_subset",
        "IndexFlatIP over the allowed rows (pre-sliced, built outside the clock)",
        bind,
        build={"build_s": 0.0},
    )


# -- systems: databases -----------------------------------------------------------------


def chroma_system(ctx: Context) -> Iterator[Config]:
    """Chroma with its default HNSW (M=16, efC=100), ``where=`` natively."""
    chromadb = need("chromadb")
    from chromadb.api.shared_system_client import SharedSystemClient
    from chromadb.config import Settings

    folder = ctx.workdir / "chroma"
    settings = Settings(anonymized_telemetry=False)  # no network calls from the bench
    build: Result = {}
    with building(build):
        client = chromadb.PersistentClient(path=str(folder), settings=settings)
        col = chroma_ingest(client, ctx.xb, ctx.metadata)
    build["disk_mib"] = dir_mib(folder)
    hnsw = col.configuration.get("hnsw") or {}
    params = {key: hnsw.get(key) for key in ("max_neighbors", "ef_construction", "ef_search")}

    def bind(filt: Filter) -> Searcher:
        where = dict(filt.where) if filt.where is not None else None

        def search(queries: FloatMatrix) -> Any:
            return col.query(
                query_embeddings=queries, n_results=K, where=where, include=["distances"]
            )

        def ids(found: Any) -> IntMatrix:
            return pad_ids(found["ids"])

        return Searcher(search, search, ids, ids)

    yield Config(
        "chroma",
        f"PersistentClient, hnsw space=cosine, defaults {params}; where= natively",
        bind,
        build=build,
        single_limit=CHROMA_QUERIES,
        batch_limit=CHROMA_QUERIES,
        notes=[
            f"only {CHROMA_QUERIES} queries per pass; ef_search left at its default (changing "
            "it needs a client re-open, PEERS.md)"
        ],
    )
    SharedSystemClient.clear_system_cache()


def lancedb_system(ctx: Context) -> Iterator[Config]:
    """LanceDB: a flat table, and one with an IVF_HNSW_SQ vector index plus scalar indexes
    on the filtered columns; ``.where(sql, prefilter=True)``."""
    need("lancedb")
    from lancedb.index import IvfHnswSq

    hnsw_sq = IvfHnswSq(
        distance_type="cosine", num_partitions=4, m=HNSW_M, ef_construction=HNSW_EFC
    )
    ctx.notes.append(
        "lancedb: searches on its own Rust thread pool, which threadpoolctl cannot pin: its "
        "qps1 is not a single-thread number"
    )
    yield from lancedb_one(ctx, "lancedb_flat", "flat scan (no index)", None, {})
    knobs = " ".join(f"{key}={value}" for key, value in LANCE_HNSW_KNOBS.items())
    yield from lancedb_one(
        ctx,
        "lancedb_ivf_hnsw_sq",
        f"IVF_HNSW_SQ num_partitions=4 m={HNSW_M} ef_construction={HNSW_EFC}, {knobs}; "
        "scalar indexes BTREE(bucket), BITMAP(lang)",
        hnsw_sq,
        LANCE_HNSW_KNOBS,
    )


def lancedb_one(
    ctx: Context, name: str, description: str, index_config: Any, knobs: Result
) -> Iterator[Config]:
    import lancedb
    import pyarrow as pa
    from lancedb.index import Bitmap, BTree

    folder = ctx.workdir / name
    build: Result = {}
    with building(build) as mark:
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(ctx.xb.ravel()), DIMENSION)
        data = pa.table(
            {
                "id": pa.array(np.arange(len(ctx.xb))),
                "bucket": pa.array(ctx.columns["bucket"]),
                "lang": pa.array(ctx.columns["lang"].tolist()),
                "vector": vectors,
            }
        )
        table = lancedb.connect(folder).create_table("pypi", data=data)
        del data, vectors
        mark("ingest")
        if index_config is not None:
            table.create_index("vector", config=index_config)
            table.create_index("bucket", config=BTree())
            table.create_index("lang", config=Bitmap())
            mark("index")
    build["disk_mib"] = dir_mib(folder)

    def bind(filt: Filter) -> Searcher:
        sql = where_sql(filt.where)

        def query(vectors: FloatMatrix) -> Any:
            q = table.search(vectors).distance_type("cosine")
            if sql is not None:
                q = q.where(sql, prefilter=True)
            # Naming _distance in select() avoids a deprecation warning logged on every query.
            q = q.limit(K).select(["id", "_distance"])
            for key, value in knobs.items():
                q = getattr(q, key)(value)
            return q.to_arrow()

        def single(queries: FloatMatrix) -> Any:
            return query(queries[0])

        def single_ids(found: Any) -> IntMatrix:
            return pad_ids([found.column("id").to_pylist()])

        def batch(queries: FloatMatrix) -> tuple[Any, int]:
            return query(queries), len(queries)

        def batch_ids(found: tuple[Any, int]) -> IntMatrix:
            return lance_batch_ids(*found)

        return Searcher(single, batch, single_ids, batch_ids, {"sql": sql})

    yield Config(
        name,
        f"local dir; {description}, distance_type=cosine",
        bind,
        build=build,
        single_limit=LANCE_INDEXED_SINGLE if index_config is not None else LANCE_FLAT_SINGLE,
        batch_limit=LANCE_BATCH,
        notes=[] if index_config is None else [LANCE_SCALAR_NOTE],
    )


def qdrant_system(ctx: Context) -> Iterator[Config]:
    """qdrant-client local mode: numpy brute force, payload filters evaluated in Python."""
    need("qdrant_client")
    from qdrant_client import QdrantClient, models

    folder = ctx.qdrant_dir / "qdrant"
    build: Result = {}
    with building(build), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = QdrantClient(path=str(folder))
        qdrant_ingest(client, ctx.xb, ctx.metadata)
    build["disk_mib"] = dir_mib(folder)
    notes = sorted({f"warned: {w.message}" for w in caught})
    notes.append(
        f"only {QDRANT_QUERIES} queries single and {QDRANT_BATCH} batch, warm-up "
        f"{QDRANT_WARMUP}, one timed pass: local mode evaluates the payload filter in Python "
        "for every point"
    )
    if ctx.qdrant_dir != ctx.workdir:
        notes.append(
            f"folder on {ctx.qdrant_dir.parent}, not the disk: local mode commits every point "
            "to SQLite, 1.5-9 ms a point on this disk (bench/ann.py), not in build s"
        )

    def bind(filt: Filter) -> Searcher:
        condition = where_qdrant(filt.where)

        def single(queries: FloatMatrix) -> Any:
            return client.query_points(
                "pypi", query=queries[0].tolist(), limit=K, query_filter=condition
            )

        def batch(queries: FloatMatrix) -> Any:
            requests = [
                models.QueryRequest(query=q.tolist(), limit=K, filter=condition) for q in queries
            ]
            return client.query_batch_points("pypi", requests=requests)

        return Searcher(
            single,
            batch,
            lambda found: pad_ids([[p.id for p in found.points]]),
            lambda found: pad_ids([[p.id for p in r.points] for r in found]),
        )

    yield Config(
        "qdrant_local",
        "QdrantClient(path=...) local mode, cosine, payload filter (models.Filter)",
        bind,
        build=build,
        single_limit=QDRANT_QUERIES,
        batch_limit=QDRANT_BATCH,
        warmup=QDRANT_WARMUP,
        repeats=1,
        notes=notes,
    )
    client.close()


# -- latentdb ---------------------------------------------------------------------------


def latentdb_system(ctx: Context) -> Iterator[Config]:
    """latentdb through its public API: ``index="auto"``, metadatas, ``query(where=)``;
    each filter's plan from ``query(explain=True)`` where the API has it."""
    latentdb = need("latentdb")
    folder = ctx.workdir / "latentdb"
    build: Result = {}
    ids = [str(i) for i in range(len(ctx.xb))]
    db = latentdb.connect(folder)
    try:
        col = db.create_collection(
            "pypi",
            dimension=DIMENSION,
            metric="cosine",
            embedder=None,
            model=MODEL,
            index="auto",
        )
        with building(build) as mark:
            for lo in range(0, len(ids), LATENTDB_BATCH):
                hi = lo + LATENTDB_BATCH
                col.add(
                    ids[lo:hi], vectors=ctx.xb[lo:hi], metadatas=ctx.metadata[lo:hi], model=MODEL
                )
            mark("ingest")
            col.optimize()
            mark("optimize")
        build["disk_mib"] = dir_mib(folder)
        extra: Result = {"status": as_dict(col.index_status())}
        include = ("distances",)

        def bind(filt: Filter) -> Searcher:
            where = filt.where

            def search(queries: FloatMatrix) -> Any:
                return col.query(vectors=queries, k=K, where=where, include=include)

            def found_ids(found: Any) -> IntMatrix:
                return pad_ids(found.ids)

            def explain() -> Any:
                return latentdb_plan(col, where, ctx.xq[:1], extra)

            extra_row = {"plan_first": explain()}  # before any timed query with this filter
            return Searcher(search, search, found_ids, found_ids, extra_row, explain)

        status = extra["status"]
        yield Config(
            "latentdb",
            f"index='auto'; built {status.get('kind', '?')}, tuned params "
            f"{status.get('params', '?')}",
            bind,
            build=build,
            extra=extra,
            paired=True,
        )
    finally:
        db.close()
        shutil.rmtree(folder, ignore_errors=True)


def latentdb_plan(col: Any, where: Where | None, query: FloatMatrix, extra: Result) -> Any:
    """What ``query(explain=True)`` says about a filter, or None where it is not accepted
    (the first TypeError is kept in ``extra["explain"]``)."""
    try:
        answer = col.query(vectors=query, k=K, where=where, include=("distances",), explain=True)
    except TypeError as exc:
        extra.setdefault("explain", f"query(explain=True) not accepted: {exc}")
        return None
    extra.setdefault("explain", "accepted")
    for name in ("plan", "explain", "explanation"):
        plan = getattr(answer, name, None)
        if plan is not None:
            break
    else:
        plan = None if hasattr(answer, "ids") else answer
    if plan is None:
        return None
    if isinstance(plan, str | int | float | list | tuple):
        return plan
    return as_dict(plan)


SYSTEMS: dict[str, Callable[[Context], Iterator[Config]]] = {
    "latentdb": latentdb_system,
    "faiss_exact_subset": faiss_exact_subset,
    "faiss_hnsw_idselector": faiss_hnsw_idselector,
    "chroma": chroma_system,
    "lancedb": lancedb_system,
    "qdrant": qdrant_system,
}
PACKAGES = (
    "latentdb",
    "numpy",
    "faiss-cpu",
    "chromadb",
    "lancedb",
    "pyarrow",
    "qdrant-client",
    "threadpoolctl",
)


def run_system(name: str, ctx: Context, results: list[Result]) -> None:
    """Build one system and run every filter on each of its configs; a failure costs only
    that system (while building) or that config (while measuring)."""
    print(f"== {name} (load {load_average()})", file=sys.stderr, flush=True)
    configs = SYSTEMS[name](ctx)
    while True:
        try:
            config = next(configs)
        except StopIteration:
            break
        except Skipped as exc:
            print(f"   skipped: {exc}", file=sys.stderr)
            ctx.notes.append(f"{name}: skipped: {exc}")
            break
        except Exception as exc:
            traceback.print_exc()
            ctx.notes.append(f"{name}: failed while building: {type(exc).__name__}: {exc}")
            break
        try:
            results.append(run_config(config, ctx))
        except Exception as exc:
            traceback.print_exc()
            ctx.notes.append(f"{config.name}: failed: {type(exc).__name__}: {exc}")
        del config  # let the generator free this config's index before building the next
    del configs
    release_memory()


# -- report -----------------------------------------------------------------------------


def filters_table(report: Result) -> list[str]:
    rows = [
        "| filter | where (latentdb / Chroma) | LanceDB SQL | rows allowed | share |",
        "|---|---|---|--:|--:|",
    ]
    for f in report["filters"]:
        where = f"`{json.dumps(f['where'])}`" if f["where"] is not None else "-"
        sql = f"`{f['sql']}`" if f["sql"] else "-"
        rows.append(
            f"| {f['name']} | {where} | {sql} | {f['matches']:,} | {f['share'] * 100:.2f} % |"
        )
    return rows


def qps(value: float | None) -> str:
    """Queries per second, with a decimal where below 10 (Qdrant's filtered ~0.5)."""
    return fmt(value, 1 if value is not None and value < 10 else 0)


def cell(row: Result | None) -> str:
    """recall / full / qps1 of one filter on one config."""
    if row is None:
        return "-"
    text = f"{row['recall']:.3f} / {row['full']:.2f} / {qps(row['qps1'])}"
    return text + (f" ({row['outside']} outside!)" if row["outside"] else "")


def summary_tables(report: Result) -> list[str]:
    names = [f["name"] for f in report["filters"]]
    head = "| system | " + " | ".join(names) + " |"
    rule = "|---|" + "--:|" * len(names)
    main = [head, rule]
    batch = [head, rule]
    for r in report["results"]:
        rows = r["filters"]
        main.append(f"| {r['name']} | " + " | ".join(cell(rows.get(n)) for n in names) + " |")
        batch.append(
            f"| {r['name']} | "
            + " | ".join(qps((rows.get(n) or {}).get("qpsB")) for n in names)
            + " |"
        )
    return [
        "## Summary: recall@10 / full / qps1",
        "",
        *main,
        "",
        f"### qpsB (the queries in one call, {BATCH_THREADS} threads)",
        "",
        *batch,
        "",
    ]


def goal_rows(report: Result) -> list[Result]:
    """latentdb per filter against its own unfiltered qps1 and Chroma's filtered qps1."""
    by_name = {r["name"]: r["filters"] for r in report["results"]}
    ours, chroma = by_name.get("latentdb"), by_name.get("chroma", {})
    if not ours or "none" not in ours:
        return []
    unfiltered = ours["none"]["qps1"]
    out = []
    for f in report["filters"]:
        row = ours.get(f["name"])
        if f["name"] == "none" or row is None:
            continue
        of_chroma = row["qps1"] / chroma[f["name"]]["qps1"] if f["name"] in chroma else None
        sequential = row["qps1"] / unfiltered
        # The interleaved ratio where there is one: both sides saw the same machine load.
        of_unfiltered = row["paired"]["ratio"] if "paired" in row else sequential
        ok = (
            row["recall"] >= GOAL_RECALL
            and row["full"] >= GOAL_FULL
            and of_unfiltered >= GOAL_OF_UNFILTERED
        )
        out.append(
            {
                "filter": f["name"],
                "share": f["share"],
                "recall": row["recall"],
                "full": row["full"],
                "outside": row["outside"],
                "qps1": row["qps1"],
                "of_unfiltered": of_unfiltered,
                "of_unfiltered_sequential": sequential,
                "paired_qps1": row.get("paired", {}).get("qps1"),
                "of_chroma": of_chroma,
                "chroma_ok": None if of_chroma is None else of_chroma >= GOAL_OF_CHROMA,
                "plan": row.get("plan"),
                "plan_first": row.get("plan_first"),
                "verdict": "PASS" if ok else "FAIL",
            }
        )
    return out


def plan_text(plan: Any, first: Any = None) -> str:
    """A plan in one short cell: its strategy and counts where it has them, else JSON;
    the first query's strategy too where it differed."""
    if plan is None:
        return "-"
    if isinstance(plan, dict) and "strategy" in plan:
        shown = {key: plan[key] for key in PLAN_KEYS if plan.get(key) not in (None, {}, 0)}
        text = plan["strategy"] + "".join(f"; {key} {val}" for key, val in shown.items())
        if isinstance(first, dict) and first.get("strategy") != plan["strategy"]:
            text += f" (first query: {first.get('strategy')})"
    else:
        text = plan if isinstance(plan, str) else json.dumps(plan, default=str)
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= 200 else text[:197] + "..."


def goal_table(report: Result) -> list[str]:
    rows = report["goal"]
    if not rows:
        return ["## Goal", "", "- latentdb's filtered and unfiltered rows are not both here", ""]
    unfiltered = next(r for r in report["results"] if r["name"] == "latentdb")["filters"]["none"]
    lines = [
        "## Goal: latentdb's filtered search",
        "",
        f"PASS = recall >= {GOAL_RECALL}, full = {GOAL_FULL:.1f} and qps1 >= "
        f"{GOAL_OF_UNFILTERED}x latentdb's own unfiltered qps1 on the same collection "
        f"({fmt(unfiltered['qps1'])} in its own row, recall {unfiltered['recall']:.3f}). "
        "x unfiltered is taken from passes that alternate the filter with no filter on the "
        "same queries (best of each; the sequential ratio in brackets, its rows minutes "
        f"apart). The issue also asks for >= {GOAL_OF_CHROMA:.0f}x Chroma's filtered qps1: "
        "its own column.",
        "",
        "| filter | share | recall | full | qps1 | x unfiltered (sequential) | x Chroma "
        f"(>= {GOAL_OF_CHROMA:.0f}) | verdict | plan (explain=True) |",
        "|---|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for g in rows:
        chroma = (
            "-"
            if g["of_chroma"] is None
            else f"{g['of_chroma']:,.1f} {'ok' if g['chroma_ok'] else 'FAIL'}"
        )
        lines.append(
            f"| {g['filter']} | {g['share'] * 100:.1f} % | {g['recall']:.4f} | {g['full']:.2f} "
            f"| {qps(g['qps1'])} | {g['of_unfiltered']:.2f} "
            f"({g['of_unfiltered_sequential']:.2f}) | {chroma} | **{g['verdict']}** "
            f"| {plan_text(g['plan'], g['plan_first'])} |"
        )
    if any(
        isinstance(g["plan_first"], dict)
        and isinstance(g["plan"], dict)
        and g["plan_first"].get("strategy") != g["plan"].get("strategy")
        for g in rows
    ):
        lines += [
            "",
            'Plans are asked after the timed passes; "first query" is the plan of the '
            "filter's first use. latentdb gives a filter used again an index of its own rows "
            "(a matrix, or an HNSW built in the background), so a filter's early passes may "
            "run before that index is ready, or beside its build: compare the sequential "
            "qps1 with the interleaved ratio, which was taken after them.",
        ]
    return [*lines, ""]


def builds_table(report: Result) -> list[str]:
    rows = [
        "| system | config | build s | RSS built MiB (+rise) | peak RSS MiB | disk MiB "
        "| queries 1 / B per filter |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for r in report["results"]:
        b = r["build"]
        rise = b.get("rss_built", 0.0) - b.get("rss_start", 0.0)
        counts = sorted(
            {(row["single_queries"], row.get("batch_queries")) for row in r["filters"].values()}
        )
        queries = ", ".join(f"{one} / {batch or '-'}" for one, batch in counts)
        shared = f" (shared, ef={b['shared_build_with']})" if "shared_build_with" in b else ""
        rows.append(
            f"| {r['name']} | {r['description']} | {build_cell(b)}{shared} "
            f"| {fmt(b.get('rss_built'))} (+{fmt(rise)}) | {fmt(r['rss_peak'])} "
            f"| {fmt(b.get('disk_mib'))} | {queries} |"
        )
    return ["## Builds", "", *rows, ""]


def detail_tables(report: Result) -> list[str]:
    lines = ["## Per filter", ""]
    for r in report["results"]:
        lines += [
            f"### {r['name']}",
            "",
            f"{r['description']}. Load average after: {r['load_end']}.",
            "",
            "| filter | recall@10 | recall ε | full | outside | qps1 | queries 1 | qpsB "
            "| queries B | first call s |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in r["filters"].values():
            lines.append(
                f"| {row['filter']} | {row['recall']:.4f} | {row['recall_eps']:.4f} "
                f"| {row['full']:.3f} | {row['outside']} | {qps(row['qps1'])} "
                f"| {row['single_queries']} | {qps(row.get('qpsB'))} "
                f"| {row.get('batch_queries', '-')} | {row['first_call_s']:.3f} |"
            )
        lines.append("")
    return lines


def render(report: Result) -> str:
    cfg, info, versions = report["config"], report["machine"], report["versions"]
    libs = " · ".join(f"{name} {ver}" for name, ver in versions.items() if ver)
    langs = ", ".join(f"{lang} {w:.0%}" for lang, w in zip(LANGS, LANG_WEIGHTS, strict=True))
    lines = [
        f"# Filtered search, {cfg['train']:,} x {DIMENSION} (pypi-minilm)",
        "",
        f"{info['date']} · {info['cpu']} · {info['cpu_count']} CPUs · "
        f"python {info['python']} · {libs} · load average at start "
        f"{cfg['load_avg_at_start']}, at end {info['load_avg_1_5_15']}",
        "",
        f"Metadata per train row: `bucket = row % {BUCKETS}`, `lang` drawn once ({langs}; "
        f"numpy default_rng({LANG_SEED})). Ground truth per filter: the exact top-{K} by "
        "cosine over the rows it allows (numpy). recall = recall@10 by id against it; "
        f"full = share of queries that got min({K}, rows allowed) results; outside = returned "
        "rows the filter excludes (should be 0). qps1 = one query per call, 1 thread (BLAS, "
        f"OpenMP, faiss pinned); qpsB = the queries in one call, {BATCH_THREADS} threads; "
        f"best of {cfg['repeats']} timed passes after a warm-up of {WARMUP} queries, only the "
        f"system's own call timed. {cfg['queries']:,} queries unless capped (slow peers; a "
        f"pass estimated above {cfg['budget_s']:.0f} s is cut, to no fewer than "
        f"{MIN_QUERIES}): see the Builds table.",
        "",
        *(first_tables(report["first"]) if "first" in report else []),
        "## Filters",
        "",
        *filters_table(report),
        "",
        *goal_table(report),
        *summary_tables(report),
        *builds_table(report),
        "## Notes",
        "",
        *([f"- {note}" for note in all_notes(report)] or ["- none"]),
        "",
        *detail_tables(report),
        "## Machine",
        "",
        "Threads: "
        + "; ".join(
            f"{p['internal_api']} {p['version']} ({p['file']}) {p['num_threads']}"
            for p in info["threadpools"]
        )
        + f". Process peak RSS {report['max_rss_mib']:,.0f} MiB. Wall time "
        f"{report['wall_s'] / 60:.1f} min. The machine is shared: treat numbers taken under a "
        "load above the core count as noisy.",
        "",
    ]
    return "\n".join(lines)


def all_notes(report: Result) -> list[str]:
    own = [f"{r['name']}: {note}" for r in report["results"] for note in r["notes"]]
    ours = next((r for r in report["results"] if r["name"] == "latentdb"), None)
    if ours is not None and "explain" in ours["extra"]:
        own.insert(0, f"latentdb: explain: {ours['extra']['explain']}")
    return [*report["notes"], *own]


def write_report(
    args: argparse.Namespace, ctx: Context, results: list[Result], run: Result, started: float
) -> str:
    """Markdown and JSON under --out; called after every system, so a crash keeps them."""
    sizes = {"train": len(ctx.xb), "queries": len(ctx.xq), "k": K, "single": ctx.single}
    report: Result = {
        "config": run
        | sizes
        | {"repeats": ctx.repeats, "quick": ctx.quick, "budget_s": ctx.budget_s},
        "machine": machine_info(),
        "versions": package_versions(PACKAGES),
        "filters": [
            {
                "name": f.name,
                "where": f.where,
                "sql": where_sql(f.where),
                "matches": f.matches,
                "share": f.matches / len(ctx.xb),
            }
            for f in ctx.filters
        ],
        "results": results,
        "notes": list(ctx.notes),
        "max_rss_mib": max_rss_mib(),
        "wall_s": time.perf_counter() - started,
    }
    report["goal"] = goal_rows(report)
    args.out.mkdir(parents=True, exist_ok=True)
    text = render(report)
    (args.out / "filtered.md").write_text(text)
    (args.out / "filtered.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return text


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ann-benchmarks HDF5")
    parser.add_argument("--queries", type=int, default=1000, help="test queries to use")
    parser.add_argument("--single", type=int, help="queries timed one per call (all)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per filter")
    parser.add_argument(
        "--budget-s", type=float, default=PASS_BUDGET_S, help="cut a timed pass to about this"
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma list to run")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results", help="output dir")
    parser.add_argument("--workdir", type=Path, help="where indexes are persisted (a temp dir)")
    parser.add_argument("--qdrant-dir", type=Path, help="qdrant's folder (default /dev/shm)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 queries, 1 pass")
    parser.add_argument("--train", type=int, help="use only the first N train vectors (smoke)")
    parser.add_argument(
        "--first",
        choices=("with", "only", "skip"),
        default="with",
        help="the first-queries section (fresh opens, unseen data, writes): with the peers "
        "(default), only it (kept beside the peers' tables of the last run), or not",
    )
    parser.add_argument(
        "--first-datasets", default="pypi,mixture", help="data sets of the first-queries section"
    )
    parser.add_argument("--first-rows", type=int, help="rows per data set there (100,000)")
    parser.add_argument("--first-queries", type=int, default=1000, help="queries per case")
    args = parser.parse_args(argv)
    args.systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    if args.quick:
        args.queries, args.repeats = min(args.queries, 200), 1
    args.single = min(args.single or args.queries, args.queries)
    if args.qdrant_dir is None and os.access("/dev/shm", os.W_OK):
        args.qdrant_dir = Path("/dev/shm")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.first != "only":
        peers(args)
    if args.first != "skip":
        print(write_first(args))


def write_first(args: argparse.Namespace) -> str:
    """Run the first-queries section and write it into filtered.{md,json} beside the
    peers' results there (from this run, or from the last one: their own date says)."""
    with tempfile.TemporaryDirectory(prefix="latentdb-first-", dir=args.workdir) as tmp:
        first = first_queries(
            data_path=args.data,
            workdir=args.workdir or Path(tmp),
            rows=args.first_rows or args.train,
            queries=args.first_queries,
            datasets=[name.strip() for name in args.first_datasets.split(",") if name.strip()],
        )
    first["date"] = machine_info()["date"]
    first["versions"] = package_versions(PACKAGES)
    path = args.out / "filtered.json"
    report = json.loads(path.read_text()) if path.exists() else None
    args.out.mkdir(parents=True, exist_ok=True)
    if report is None or "results" not in report:
        report = {"first": first}
        text = "\n".join(["# Filtered search", "", *first_tables(first)])
    else:
        if args.first == "only":  # the peers' tables below are the last run's
            first["peers_from"] = report["machine"]["date"]
        report["first"] = first
        text = render(report)
    (args.out / "filtered.md").write_text(text)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return text


def peers(args: argparse.Namespace) -> None:
    """latentdb and the peers at each selectivity, on the shared data (the tables after
    the first-queries section)."""
    started = time.perf_counter()
    run: Result = {"data": str(args.data), "systems": args.systems}
    run["load_avg_at_start"] = load_average()
    xb, xq, file_truth = load_dataset(args.data, args.queries)
    whole = not args.train or args.train >= len(xb)
    if not whole:
        xb = np.ascontiguousarray(xb[: args.train])
    metadata, columns = make_metadata(len(xb))
    start = time.perf_counter()
    filters = make_filters(xb, xq, columns)
    run["ground_truth_s"] = time.perf_counter() - start
    if whole:
        # The unfiltered truth recomputed here against the file's: they should agree.
        pairs = zip(filters[0].truth[0], file_truth[0], strict=True)
        agree = np.mean([np.intersect1d(a, b).size / K for a, b in pairs])
        run["truth_agreement_with_file"] = float(agree)
    run["rss_after_load_mib"] = rss_mib()
    with (
        tempfile.TemporaryDirectory(prefix="latentdb-filtered-", dir=args.workdir) as tmp,
        tempfile.TemporaryDirectory(prefix="latentdb-filtered-", dir=args.qdrant_dir or tmp) as qt,
    ):
        ctx = Context(
            xb,
            xq,
            metadata,
            columns,
            filters,
            ef=QUICK_EF if args.quick else FAISS_EF,
            single=args.single,
            repeats=args.repeats,
            budget_s=args.budget_s,
            quick=args.quick,
            workdir=Path(tmp),
            qdrant_dir=Path(qt),
        )
        results: list[Result] = []
        text = ""
        for name in args.systems:
            run_system(name, ctx, results)
            text = write_report(args, ctx, results, run, started)
    print(text)


if __name__ == "__main__":
    main()
