"""Filtered queries as a user meets them (issue 18), for ``bench/filtered.py``.

For each selectivity (0.1 %, 1 %, 10 %, 50 %, an ``$and`` of two keys, and a 10 % filter
correlated with the vectors) the database is opened afresh, so no filter has read any
metadata key yet, and the same 1,000 queries are asked one at a time. Measured: the
first filtered query's latency (the index already loaded by one unfiltered query, timed
apart), recall@10 over the first 200 filtered queries and over all 1,000 against the
exact answers, qps1 over queries 2-200 and 2-1,000, and qps1 of a second pass (steady);
each beside the unfiltered qps1 of the same queries on the same open database. Then the
same with a writer thread adding rows (with metadata of the same distributions) while
the queries run: the exact answer of each query is taken over the rows committed before
it started (rows committed while it ran may only push true answers out, so recall reads
low if anything), and unfiltered qps1 is measured with the writer running too.

The data were not used to tune the planner: the shared PyPI MiniLM set, and a Gaussian
mixture generated here (``MIXTURE_SEED``): clusters around random centres, each spread
along its own random 12-dimensional subspace plus isotropic noise, unit rows. Every row
gets the keys ``u`` (uniform integer 0-999), ``g`` (one of five letters, uniform) and
``c`` (the row's rank along one random direction, scaled to 0-999: a filter on it keeps
one end of the space). Seeds are fixed; every figure is measured in the run.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    DIMENSION,
    MODEL,
    FloatMatrix,
    Result,
    load_average,
    load_dataset,
    thread_limit,
    unit_rows,
)

FIRST_FILTERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("0.1%", {"u": {"$lt": 1}}),
    ("1%", {"u": {"$lt": 10}}),
    ("10%", {"u": {"$lt": 100}}),
    ("50%", {"u": {"$lt": 500}}),
    ("and", {"$and": [{"u": {"$lt": 200}}, {"g": "a"}]}),  # 20 % x 20 % = 4 %
    ("10% along a direction", {"c": {"$lt": 100}}),
)
LETTERS = ("a", "b", "c", "d", "e")
METADATA_SEED = 18
MIXTURE_SEED = 1818
MIXTURE_CLUSTERS = 200
MIXTURE_SUBSPACE = 12
FIRST_WINDOW = 200  # queries the recall and the early qps1 are taken over
WRITE_BATCH = 20  # rows per add() of the writer
WRITE_PAUSE_S = 0.02  # between two adds: ~1,000 rows a second when nothing waits
INGEST_BATCH = 10_000
WRITER_ROWS = 40_000  # rows a writer may add in one case (it stops if it runs out)


@dataclass
class FirstData:
    """One data set: the collection's rows, the queries, rows for the writer, metadata."""

    name: str
    xb: FloatMatrix
    xq: FloatMatrix
    extra: FloatMatrix  # rows the writer adds
    columns: dict[str, np.ndarray]  # u, g, c per row of xb
    extra_columns: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)


def metadata_columns(
    vectors: FloatMatrix, rng: np.random.Generator, direction: np.ndarray, edges: np.ndarray
) -> dict[str, np.ndarray]:
    """u, g, c of each row; ``c`` from the projection on ``direction`` cut at ``edges``."""
    rows = vectors.shape[0]
    projection = vectors @ direction
    return {
        "u": rng.integers(0, 1000, size=rows),
        "g": np.asarray(LETTERS)[rng.integers(0, len(LETTERS), size=rows)],
        "c": np.searchsorted(edges, projection, side="right"),
    }


def with_metadata(name: str, xb: FloatMatrix, xq: FloatMatrix, extra: FloatMatrix) -> FirstData:
    rng = np.random.default_rng(METADATA_SEED)
    direction = rng.standard_normal(xb.shape[1]).astype(np.float32)
    edges = np.quantile(xb @ direction, np.arange(1, 1000) / 1000)  # 999 cuts: 0-999
    columns = metadata_columns(xb, rng, direction, edges)
    extra_columns = metadata_columns(extra, rng, direction, edges)
    return FirstData(name, xb, xq, extra, columns, extra_columns)


def pypi_data(path: Path, rows: int | None) -> FirstData:
    """The shared set; the writer adds train rows moved a little (new, similar texts)."""
    xb, xq, _ = load_dataset(path, 1000)
    if rows:
        xb = np.ascontiguousarray(xb[:rows])
    rng = np.random.default_rng(METADATA_SEED + 1)
    picked = xb[rng.integers(0, xb.shape[0], size=WRITER_ROWS)]
    noise = rng.standard_normal(picked.shape).astype(np.float32)
    extra = unit_rows(picked + 0.3 * noise / np.sqrt(picked.shape[1]))
    return with_metadata("pypi", xb, xq, extra)


def mixture_data(rows: int) -> FirstData:
    """A Gaussian mixture (see the module docstring): rows, 1,000 queries and
    WRITER_ROWS writer rows drawn from it alike."""
    rng = np.random.default_rng(MIXTURE_SEED)
    centres = rng.standard_normal((MIXTURE_CLUSTERS, DIMENSION)).astype(np.float32)
    bases = rng.standard_normal((MIXTURE_CLUSTERS, DIMENSION, MIXTURE_SUBSPACE)).astype(
        np.float32
    ) / np.sqrt(DIMENSION)
    weights = rng.dirichlet(np.full(MIXTURE_CLUSTERS, 2.0))

    def draw(count: int) -> FloatMatrix:
        cluster = rng.choice(MIXTURE_CLUSTERS, size=count, p=weights)
        spread = rng.standard_normal((count, MIXTURE_SUBSPACE)).astype(np.float32) * 3.0
        along = np.einsum("ndk,nk->nd", bases[cluster], spread)
        noise = rng.standard_normal((count, DIMENSION)).astype(np.float32) * 0.35
        return unit_rows(centres[cluster] + along + noise)

    return with_metadata("mixture", draw(rows), draw(1000), draw(WRITER_ROWS))


def where_mask(where: Mapping[str, Any], columns: dict[str, np.ndarray]) -> np.ndarray:
    """The rows a filter of FIRST_FILTERS allows (the two shapes it uses)."""
    if "$and" in where:
        return np.logical_and.reduce([where_mask(part, columns) for part in where["$and"]])
    ((key, condition),) = where.items()
    if isinstance(condition, Mapping):
        ((op, value),) = condition.items()
        assert op == "$lt", op
        return columns[key] < value
    return columns[key] == condition


def top_k(
    xb: FloatMatrix, rows: np.ndarray, queries: FloatMatrix, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k row numbers (within ``rows``) by cosine and their scores, -1 padded."""
    ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
    scores = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    if not rows.size:
        return ids, scores
    for lo in range(0, queries.shape[0], 250):
        part = queries[lo : lo + 250] @ xb[rows].T
        kept = min(k, rows.size)
        top = np.argpartition(-part, kept - 1, axis=1)[:, :kept]
        order = np.argsort(-np.take_along_axis(part, top, axis=1), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        ids[lo : lo + 250, :kept] = rows[top]
        scores[lo : lo + 250, :kept] = np.take_along_axis(part, top, axis=1)
    return ids, scores


def build(data: FirstData, folder: Path, latentdb: Any) -> Result:
    """The collection (index "auto", like a user's), reused when the folder holds it."""
    marker = folder / "built.txt"
    stamp = f"{data.name} {data.xb.shape} {METADATA_SEED} {MIXTURE_SEED}"
    if marker.exists() and marker.read_text() == stamp:
        return {"reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    with latentdb.connect(folder) as db:
        collection = db.create_collection(
            data.name, dimension=DIMENSION, metric="cosine", embedder=None, model=MODEL
        )
        ids = [str(i) for i in range(data.xb.shape[0])]
        for lo in range(0, len(ids), INGEST_BATCH):
            hi = lo + INGEST_BATCH
            collection.add(
                ids[lo:hi], vectors=data.xb[lo:hi], metadatas=rows_of(data.columns, lo, hi),
                model=MODEL,
            )  # fmt: skip
        ingest = time.perf_counter() - started
        collection.optimize()
        status = collection.index_status()
    marker.write_text(stamp)
    return {
        "ingest_s": ingest,
        "build_s": time.perf_counter() - started,
        "kind": status.kind,
        "params": dict(status.params),
        "tuned_recall": status.tuned_recall,
    }


def rows_of(columns: dict[str, np.ndarray], lo: int, hi: int) -> list[dict[str, Any]]:
    return [
        {"u": int(u), "g": str(g), "c": int(c)}
        for u, g, c in zip(
            columns["u"][lo:hi], columns["g"][lo:hi], columns["c"][lo:hi], strict=True
        )
    ]


class Writer:
    """Adds rows of ``data.extra`` in small batches until stopped; ``committed`` is how
    many have been acknowledged."""

    def __init__(self, collection: Any, data: FirstData, start: int) -> None:
        self.collection, self.data, self.start = collection, data, start
        self.committed = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-writer", daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                lo = self.start + self.committed
                hi = lo + WRITE_BATCH
                if hi > self.data.extra.shape[0]:
                    return
                self.collection.add(
                    [f"w{i}" for i in range(lo, hi)],
                    vectors=self.data.extra[lo:hi],
                    metadatas=rows_of(self.data.extra_columns, lo, hi),
                    model=MODEL,
                )
                self.committed += WRITE_BATCH
                time.sleep(WRITE_PAUSE_S)
        except BaseException as error:  # reported by the case
            self.error = error


@dataclass
class Timed:
    """Queries asked one at a time: wall seconds, the asking thread's CPU seconds, the ids
    found, and ``before()`` just before each."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    ids: list[list[str]] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)


def timed_queries(
    collection: Any,
    queries: FloatMatrix,
    where: Mapping[str, Any] | None,
    before: Callable[[], int],
) -> Timed:
    out = Timed()
    for row in range(queries.shape[0]):
        out.marks.append(before())
        started, cpu = time.perf_counter(), time.thread_time()
        result = collection.query(vectors=queries[row], k=10, where=where, include=[])
        out.cpu.append(time.thread_time() - cpu)
        out.seconds.append(time.perf_counter() - started)
        out.ids.append(result.ids[0])
    return out


def recall_of(
    data: FirstData, where: Mapping[str, Any], ids: list[list[str]], marks: list[int], start: int
) -> list[float]:
    """Per-query recall@10 against the exact answer over the base rows and the writer's
    rows committed before the query ([0, start + mark): each case that writes starts
    from a copy of the built collection, start 0)."""
    base_rows = np.flatnonzero(where_mask(where, data.columns))
    base_ids, base_scores = top_k(data.xb, base_rows, data.xq[: len(ids)])
    extra_allowed = where_mask(where, data.extra_columns)
    out = []
    for row, found in enumerate(ids):
        want = [f"{i}" for i in base_ids[row] if i >= 0]
        scores = list(base_scores[row][: len(want)])
        written = np.arange(0, start + marks[row])
        written = written[extra_allowed[written]]
        if written.size:
            extra_scores = data.extra[written] @ data.xq[row]
            merged = sorted(
                [
                    *zip(scores, want, strict=True),
                    *zip(extra_scores, [f"w{i}" for i in written], strict=True),
                ],
                reverse=True,
            )[:10]
            want = [name for _, name in merged]
        out.append(len(set(found) & set(want)) / max(len(want), 1))
    return out


def qps(seconds: list[float]) -> float:
    return len(seconds) / sum(seconds) if seconds else 0.0


def run_case(
    data: FirstData, folder: Path, name: str, where: dict[str, Any], *, writes: bool,
    queries: int, latentdb: Any, start: int,
) -> Result:  # fmt: skip
    """One selectivity from a fresh open (see the module docstring)."""
    xq = data.xq[:queries]
    window = min(FIRST_WINDOW, queries)
    with latentdb.connect(folder) as db:
        collection = db.get_collection(data.name)
        opened = time.perf_counter()
        collection.query(vectors=data.xq[-1], k=10, include=[])  # loads the index
        open_s = time.perf_counter() - opened
        writer = Writer(collection, data, start) if writes else None
        with writer if writer is not None else contextlib.nullcontext():
            before = (lambda: writer.committed) if writer is not None else (lambda: 0)
            unfiltered = [timed_queries(collection, xq[:window], None, before) for _ in range(2)]
            mark = before()
            clock, cpu = time.perf_counter(), time.thread_time()
            first = collection.query(vectors=xq[0], k=10, where=where, include=[], explain=True)
            first_latency, first_cpu = time.perf_counter() - clock, time.thread_time() - cpu
            rest = timed_queries(collection, xq[1:], where, before)
            ids, marks = [first.ids[0], *rest.ids], [mark, *rest.marks]
            steady = timed_queries(collection, xq, where, before)
            after = timed_queries(collection, xq[:window], None, before)
            plan = collection.query(vectors=xq[0], k=10, where=where, include=[], explain=True).plan
        if writer is not None and writer.error is not None:
            raise writer.error
        written = writer.committed if writer is not None else 0
    recalls = recall_of(data, where, ids, marks, start)
    base = unfiltered[1] if qps(unfiltered[1].seconds) >= qps(after.seconds) else after
    unfiltered_qps, unfiltered_cpu = qps(base.seconds), qps(base.cpu)
    seconds = rest.seconds
    row = {
        "filter": name,
        "where": where,
        "writes": writes,
        "allowed": int(where_mask(where, data.columns).sum()),
        "open_s": open_s,
        "first_ms": first_latency * 1e3,
        "first_cpu_ms": first_cpu * 1e3,
        "first_plan": None if first.plan is None else first.plan.strategy,
        "recall_first_window": float(np.mean(recalls[:window])),
        "recall_all": float(np.mean(recalls)),
        "min_query_recall_first_window": float(np.min(recalls[:window])),
        "qps1_2_to_window": qps(seconds[: window - 1]),
        "qps1_2_to_all": qps(seconds),
        "qps1_steady": qps(steady.seconds),
        "qps1_unfiltered": unfiltered_qps,
        "qps1_unfiltered_first_pass": qps(unfiltered[0].seconds),
        "ratio_2_to_window": qps(seconds[: window - 1]) / unfiltered_qps,
        "ratio_2_to_all": qps(seconds) / unfiltered_qps,
        "ratio_steady": qps(steady.seconds) / unfiltered_qps,
        # The same from the asking thread's CPU time: what the queries cost, without the
        # time they waited for a core (the machine is shared; background work runs on
        # the other core).
        "cpu_qps1_2_to_window": qps(rest.cpu[: window - 1]),
        "cpu_qps1_steady": qps(steady.cpu),
        "cpu_qps1_unfiltered": unfiltered_cpu,
        "cpu_ratio_2_to_window": qps(rest.cpu[: window - 1]) / unfiltered_cpu,
        "cpu_ratio_steady": qps(steady.cpu) / unfiltered_cpu,
        "p50_ms": float(np.median(seconds) * 1e3),
        "p99_ms": float(np.quantile(seconds, 0.99) * 1e3),
        "max_ms": float(np.max(seconds) * 1e3),
        "plan_after": None if plan is None else {
            "strategy": plan.strategy, "params": plan.params, "recall": plan.recall,
        },
        "rows_written": written,
        "load": load_average(),
    }  # fmt: skip
    print(
        f"  {data.name} {name}{' +writes' if writes else ''}: first {row['first_ms']:.0f} ms, "
        f"recall {row['recall_first_window']:.4f}/{row['recall_all']:.4f}, qps1 2-{window} "
        f"{row['qps1_2_to_window']:,.0f} ({row['ratio_2_to_window']:.2f}x), steady "
        f"{row['qps1_steady']:,.0f} ({row['ratio_steady']:.2f}x), unfiltered "
        f"{unfiltered_qps:,.0f}; CPU-time x {row['cpu_ratio_2_to_window']:.2f} / "
        f"{row['cpu_ratio_steady']:.2f}; then {row['plan_after']}",
        file=sys.stderr,
        flush=True,
    )
    return row


def first_queries(
    *, data_path: Path, workdir: Path, rows: int | None, queries: int, datasets: list[str]
) -> Result:
    """Every case on every data set, with and without writes."""
    import latentdb

    out: Result = {"load_avg_at_start": load_average(), "queries": queries, "datasets": {}}
    started = time.perf_counter()
    for name in datasets:
        data = pypi_data(data_path, rows) if name == "pypi" else mixture_data(rows or 100_000)
        pristine, folder = workdir / f"first-{name}-built", workdir / f"first-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        print(f"== first queries: {name} ({data.xb.shape[0]:,} rows)", file=sys.stderr, flush=True)
        with thread_limit(1):
            built = build(data, pristine, latentdb)
            cases = []
            for writes in (False, True):
                for filter_name, where in FIRST_FILTERS:
                    if writes or not folder.exists():  # a case that writes gets a copy
                        shutil.rmtree(folder, ignore_errors=True)
                        shutil.copytree(pristine, folder)
                    row = run_case(
                        data, folder, filter_name, where, writes=writes, queries=queries,
                        latentdb=latentdb, start=0,
                    )  # fmt: skip
                    cases.append(row)
            shutil.rmtree(folder, ignore_errors=True)
        out["datasets"][name] = {"rows": int(data.xb.shape[0]), "build": built, "cases": cases}
    out["wall_s"] = time.perf_counter() - started
    out["load_avg_at_end"] = load_average()
    return out


def first_tables(first: Result) -> list[str]:
    """The markdown of the first-queries section."""
    lines = [
        "## First queries on unseen data (issue 18)",
        "",
        f"Run {first.get('date', '?')}; load average at start {first['load_avg_at_start']}, "
        f"at end {first['load_avg_at_end']} (2 cores: figures under a load above 2 are "
        f"noisy); {first['wall_s'] / 60:.1f} min. How it is measured: see "
        "`bench/_filtered_first.py`. Each row: a fresh open, one unfiltered query to load "
        f"the index, 2 x {FIRST_WINDOW} unfiltered queries (qps1 baseline: the better of the "
        f"second pass and one after the filter's passes), then {first['queries']} filtered "
        "queries one at a time, then the same again (steady). recall = recall@10 against "
        "the exact answer over the rows committed before each query; goal >= the target "
        f"(0.95) over the first {FIRST_WINDOW}; first = the first filtered query on a key "
        "no filter has read (<= 200 ms); x = qps1 / unfiltered qps1 (>= 0.5 from the second "
        "query on); CPU x = the same ratio from the asking thread's CPU time (what the "
        "queries cost without waiting for a core; background work, the column read and the "
        "measuring, runs on the other core). Writes: a thread adds 20 rows, pauses 20 ms, "
        "again, while the queries run; the unfiltered baseline is taken with it running too.",
        "",
    ]
    if "peers_from" in first:
        lines += [
            f"The sections after this one are from the peers' run of {first['peers_from']}, "
            "kept as they were (`--first only`): its latentdb rows predate the measured "
            "planner.",
            "",
        ]
    for name, block in first["datasets"].items():
        built = block["build"]
        lines += [
            f"### {name}, {block['rows']:,} rows",
            "",
            "Index: " + (
                "reused from an earlier run of the same data" if built.get("reused") else
                f"{built['kind']} {built['params']} (tuned recall {built['tuned_recall']}), "
                f"built in {built['build_s']:.0f} s"
            ),
            "",
            "| filter | writes | rows allowed | first ms (CPU) | first plan | recall 1-200 (all) "
            "| qps1 2-200 (x) | qps1 2-1000 (x) | steady qps1 (x) | unfiltered qps1 "
            "| CPU x 2-200 / steady | p99 ms | plan after | rows written |",
            "|---|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|---|--:|",
        ]  # fmt: skip
        for row in block["cases"]:
            after = row["plan_after"] or {}
            plan = after.get("strategy", "?")
            if after.get("params"):
                plan += f" {after['params']}"
            if after.get("recall") is not None and after["recall"] < 1:
                plan += f" (measured >= {after['recall']:.3f})"
            lines.append(
                f"| {row['filter']} | {'yes' if row['writes'] else 'no'} | {row['allowed']:,} "
                f"| {row['first_ms']:.0f} ({row['first_cpu_ms']:.0f}) | {row['first_plan']} | "
                f"{row['recall_first_window']:.4f} ({row['recall_all']:.4f}) | "
                f"{row['qps1_2_to_window']:,.0f} ({row['ratio_2_to_window']:.2f}) | "
                f"{row['qps1_2_to_all']:,.0f} ({row['ratio_2_to_all']:.2f}) | "
                f"{row['qps1_steady']:,.0f} ({row['ratio_steady']:.2f}) | "
                f"{row['qps1_unfiltered']:,.0f} | {row['cpu_ratio_2_to_window']:.2f} / "
                f"{row['cpu_ratio_steady']:.2f} | {row['p99_ms']:.1f} | {plan} | "
                f"{row['rows_written']:,} |"
            )
        lines.append("")
    return lines
