"""Text queries and hybrid search on PyPI package summaries (issue 18).

The goals: a text query end to end (embed, search, fetch: ``query(texts=..., k=10)``
with the default include) takes at most 25 ms (p50) on 2 cores with the model loaded,
while another process keeps one core busy, and one text never runs on more threads than
it needs; hybrid search keeps its BM25 side at most 50 ms (p99) on 50k documents for
queries full of stopwords, and the fused top 10 of queries without stopwords stays what
it was.

One collection with the default embedder ("minilm") holds the first ``--docs`` train
texts of the data set as documents, with their precomputed vectors (the same model's),
so nothing of the corpus is embedded again. Queries come from the test split (texts the
collection does not hold): the first eight words of each summary that has at least two
stopwords and one other word among them ("stopwords": "A Python library for the ...")
and the very same words without their stopwords ("content"); plus a few queries made of
stopwords only.

1. **Embedding one text.** ``embed_texts([q])`` now (one session thread) against an ONNX
   Runtime session with an intra-op pool of every core (how it ran before), interleaved
   query by query, with a busy loop pinned to core 0 and without; and a batch of
   ``--batch-texts`` summaries both ways (now: batches side by side on every core;
   before: one batch at a time on the intra-op pool), in ABBA rounds.
2. **Text queries end to end**, with and without the busy loop: ``query(texts=q, k=10)``,
   and its parts (``embed_texts([q])``, and ``query(vectors=v, k=10)``).
3. **Hybrid search** (``hybrid=True, k=10``): the whole query, and the BM25 side alone
   (the store's ``text_ranking`` over the 50 candidates hybrid fusion reads), now
   (stopwords left out, common words scoring without bringing documents in) and as
   before (an OR of every word, stopwords included, BM25 over every match), with how
   many documents the old OR matched. The quality check fuses the same vector ranking
   with the old text ranking and with the new one and compares the top 10 (overlap out
   of 10, and the share of queries whose top 10 is identical, in order). The same is
   measured for other thresholds of "common word" (``--shares``; 1: none), to show what
   the default costs and buys.

Every timing pass is repeated (``--rounds``) with the variants interleaved, and reported
as p50/p99 over all calls, with the spread of the per-round p50s. The load average at
start and end is printed: the 2-core machine is shared, and a high load slows all of it.

Run from the repository root (about 15 minutes on 2 cores, most of it building the
collection; ``--keep DIR`` keeps it for the next run)::

    .venv/bin/python bench/text.py
    .venv/bin/python bench/text.py --keep /tmp/text-50k      # build once, reuse after
    .venv/bin/python bench/text.py --docs 5000 --queries 40 --rounds 1 --out /tmp/text

It prints a markdown report and writes ``text.md`` and ``text.json`` under ``--out``
(default ``bench/results``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# Shared with the other benchmarks; run as a script, bench/ is on sys.path.
from _common import DEFAULT_DATA, REPO, Result, load_average, machine_info, require_data

import latentdb
from latentdb.embed import MINILM_MODEL, OnnxBertEmbedder, get_embedder
from latentdb.embed import _onnx as onnx_embedder
from latentdb.query import candidates, fts_query, fuse
from latentdb.query._hybrid import COMMON_ROWS, COMMON_SHARE, STOPWORDS
from latentdb.store import TextMatch

DEFAULT_TEXTS = REPO.parent / "shared/data/pypi-minilm-100k.texts.jsonl.gz"
K = 10
DEPTH = candidates(K)  # what a hybrid query of k=10 reads of each ranking
QUERY_GOAL_MS = 25.0  # text query end to end, p50, one core busy
HYBRID_GOAL_MS = 50.0  # BM25 side, p99, queries full of stopwords
QUERY_WORDS = 8
ONLY_STOPWORDS = [
    "the who",
    "to be or not to be",
    "what is this",
    "how to do it",
    "all of them",
    "it is what it is",
    "here and there",
    "about",
    "the",
    "for",
]
_WORD = re.compile(r"\w+")


# -- data -------------------------------------------------------------------------------


def load_corpus(
    data: Path, texts: Path, docs: int
) -> tuple[np.ndarray, list[str], list[str], list[list[str]]]:
    """The first ``docs`` train vectors with their texts, every test text, and the ids
    of each test text's 10 nearest documents among those (by the file's neighbours)."""
    with h5py.File(require_data(data), "r") as f:
        vectors = np.asarray(f["train"][:docs], dtype=np.float32)
        neighbours = np.asarray(f["neighbors"][:], dtype=np.int64)
    nearest = [[str(i) for i in row[row < docs][:K]] for row in neighbours]
    train: list[str] = []
    test: list[str] = []
    with gzip.open(require_data(texts), "rt", encoding="utf-8") as lines:
        for row in map(json.loads, lines):
            if row["split"] == "test":
                test.append(row["text"])
            elif len(train) < docs:
                train.append(row["text"])
    if len(train) < docs:
        raise SystemExit(f"--docs {docs}: the texts file has only {len(train)} train texts")
    return vectors, train, test, nearest


def make_queries(test: list[str], count: int) -> tuple[list[str], list[str], list[int]]:
    """(with stopwords, the same without, which test texts): the first QUERY_WORDS words
    of test texts that hold at least two stopwords and one other word among them."""
    full, content, sources = [], [], []
    for position, text in enumerate(test):
        words = _WORD.findall(text)[:QUERY_WORDS]
        kept = [word for word in words if word.lower() not in STOPWORDS]
        if len(kept) >= 1 and len(words) - len(kept) >= 2:
            full.append(" ".join(words))
            content.append(" ".join(kept))
            sources.append(position)
        if len(full) == count:
            break
    return full, content, sources


def open_collection(folder: Path, vectors: np.ndarray, documents: list[str]) -> Any:
    """The collection in ``folder``, built there first when it does not hold it yet."""
    database = latentdb.connect(folder)
    if "pypi" in database.list_collections():
        collection = database.get_collection("pypi")
        if collection.count() == len(documents):
            print(f"reusing {folder}", file=sys.stderr, flush=True)
            return database, collection
        database.delete_collection("pypi")
    started = time.perf_counter()
    collection = database.create_collection("pypi")  # the default embedder, "minilm"
    for lo in range(0, len(documents), 5000):
        collection.add(
            [str(i) for i in range(lo, min(lo + 5000, len(documents)))],
            vectors=vectors[lo : lo + 5000],
            documents=documents[lo : lo + 5000],
            model=MINILM_MODEL,
        )
    collection.optimize()
    print(f"built in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return database, collection


# -- measuring --------------------------------------------------------------------------


@contextmanager
def busy_core() -> Iterator[None]:
    """Another process spinning on core 0 for the duration of the block."""
    spinner = subprocess.Popen(
        [sys.executable, "-c", "import os\nos.sched_setaffinity(0, {0})\nwhile True: pass"]
    )
    time.sleep(0.5)  # running, and pinned
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def ms(seconds: list[float]) -> Result:
    """p50 and p99 of a list of durations, in milliseconds."""
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50": 1e3 * statistics.median(ordered),
        "p99": 1e3 * p99,
        "mean": 1e3 * statistics.fmean(ordered),
        "calls": len(ordered),
    }


def timed_rounds(
    calls: dict[str, Callable[[str], Any]], queries: list[str], rounds: int
) -> dict[str, Result]:
    """Each call on each query, the calls interleaved query by query (their order
    reversed every other round); p50/p99 over all calls, and each round's p50. Wall
    time, and this process's CPU time (all its threads), which other processes' load
    changes less: wall time above CPU time is time spent waiting for a core."""
    times: dict[str, list[list[float]]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for query in queries[:3]:  # warm-up
        for call in calls.values():
            call(query)
    for round_ in range(rounds):
        for name in names:
            times[name].append([])
        order = names[::-1] if round_ % 2 else names
        for query in queries:
            for name in order:
                start, start_cpu = time.perf_counter(), time.process_time()
                calls[name](query)
                times[name][-1].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    out: dict[str, Result] = {}
    for name, per_round in times.items():
        out[name] = ms([t for one in per_round for t in one])
        out[name]["round_p50s"] = [1e3 * statistics.median(one) for one in per_round]
        out[name]["cpu"] = ms(cpu[name])
    return out


# -- 1. embedding threads ---------------------------------------------------------------


def pool_session_embedder(threads: int) -> OnnxBertEmbedder:
    """The default model on a session with an intra-op pool of ``threads`` threads that
    runs one batch at a time: how the embedder ran before issue 18."""
    import onnxruntime
    from safetensors.numpy import load_file

    current = get_embedder("minilm")
    assert isinstance(current, OnnxBertEmbedder)
    before = OnnxBertEmbedder("minilm-intra-op-pool", path=current.path, model=current.model)
    settings = before._settings
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    graph = onnx_embedder.bert_graph(settings, load_file(str(current.path / "model.safetensors")))
    before._tokenizer = onnx_embedder._load_tokenizer(current.path, settings.max_length)
    before._session = onnxruntime.InferenceSession(
        graph, options, providers=["CPUExecutionProvider"]
    )
    before.threads = 1  # one batch at a time: the pool is the session's
    return before


def embedding_threads(queries: list[str], batch: list[str], rounds: int) -> Result:
    now = get_embedder("minilm")
    assert isinstance(now, OnnxBertEmbedder)
    before = pool_session_embedder(now.threads)
    calls = {
        "one thread (now)": lambda q: now.embed_texts([q]),
        f"intra-op pool of {now.threads} (before)": lambda q: before.embed_texts([q]),
    }
    single = {"no busy loop": timed_rounds(calls, queries, rounds)}
    with busy_core():
        single["busy loop on core 0"] = timed_rounds(calls, queries, rounds)
    options = now._session.get_session_options()
    batches: dict[str, list[float]] = {"now": [], "before": []}
    now.embed_texts(batch[:64])
    before.embed_texts(batch[:64])
    for round_ in range(max(2, rounds)):
        for name in ("now", "before") if round_ % 2 == 0 else ("before", "now"):
            embedder = now if name == "now" else before
            start = time.perf_counter()
            embedder.embed_texts(batch)
            batches[name].append(len(batch) / (time.perf_counter() - start))
    ratios = [a / b for a, b in zip(batches["now"], batches["before"], strict=True)]
    return {
        "session": {
            "intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
            "allow_spinning": options.get_session_config_entry("session.intra_op.allow_spinning"),
            "batches_at_once": now.threads,
        },
        "single": single,
        "batch": {
            "texts": len(batch),
            "texts_per_s": batches,
            "paired_ratio_median": statistics.median(ratios),
        },
    }


# -- 2. text queries --------------------------------------------------------------------


def text_queries(collection: Any, queries: list[str], rounds: int) -> Result:
    embedder = get_embedder("minilm")
    vectors = {q: embedder.embed_texts([q])[0] for q in queries}
    calls = {
        "query(texts=q, k=10)": lambda q: collection.query(texts=q, k=K),
        "embed_texts([q])": lambda q: embedder.embed_texts([q]),
        "query(vectors=v, k=10)": lambda q: collection.query(
            vectors=vectors[q], k=K, model=MINILM_MODEL
        ),
    }
    out = {"no busy loop": timed_rounds(calls, queries, rounds)}
    with busy_core():
        out["busy loop on core 0"] = timed_rounds(calls, queries, rounds)
    return out


# -- 3. hybrid --------------------------------------------------------------------------


def old_match(text: str) -> str | None:
    """The text side as it was: an OR of every word, quoted (latentdb before issue 18)."""
    words = _WORD.findall(text)
    if not words:
        return None
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in dict.fromkeys(words))


def with_share(match: TextMatch | None, share: float) -> TextMatch | None:
    return None if match is None else match._replace(common_share=share)


class Hybrid:
    """The store's text ranking and the fusion, called as the engine calls them."""

    def __init__(self, collection: Any, folder: Path) -> None:
        self.collection = collection
        self.store = collection._database.store
        self.collection_id = collection._state.row.id
        with sqlite3.connect(folder / "latentdb.sqlite3") as connection:
            rows = connection.execute(
                "SELECT id, key FROM records WHERE collection_id = ?", (self.collection_id,)
            ).fetchall()
        self.key_of = dict(rows)
        self.id_of = {key: record_id for record_id, key in rows}
        self.folder = folder

    def ranking(self, match: str | TextMatch | None) -> list[int]:
        if match is None:
            return []
        return list(self.store.text_ranking(self.collection_id, match, DEPTH))

    def vector_keys(self, text: str) -> np.ndarray:
        ids = self.collection.query(texts=text, k=DEPTH, include=[]).ids[0]
        return np.array([self.key_of[i] for i in ids], dtype=np.int64)

    def fused(self, vector_keys: np.ndarray, ranking: list[int]) -> list[str]:
        keys, _ = fuse(vector_keys, ranking, K, (1.0, 1.0))
        return [self.id_of[key] for key in keys]

    def old_matches(self, text: str) -> int:
        match = old_match(text)
        if match is None:
            return 0
        with sqlite3.connect(self.folder / "latentdb.sqlite3") as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM records_fts WHERE records_fts MATCH ?", (match,)
            ).fetchone()
        return int(count)


def overlaps(
    hybrid: Hybrid, queries: list[str], nearest: list[list[str]], shares: list[float]
) -> Result:
    """Fused top 10 with the old text ranking against the new one (per share), and how
    many of each query's source summary's 10 nearest documents either finds (a proxy
    for relevance: the query is the start of that summary)."""
    vector = {q: hybrid.vector_keys(q) for q in queries}
    old = {q: hybrid.fused(vector[q], hybrid.ranking(old_match(q))) for q in queries}

    def found(fused: dict[str, list[str]]) -> float:
        return statistics.fmean(
            len(set(fused[q]) & set(near)) / max(1, len(near))
            for q, near in zip(queries, nearest, strict=True)
        )

    out: Result = {"source_neighbours_found_before": found(old)}
    for share in shares:
        shared, same, text_shared = [], 0, []
        new: dict[str, list[str]] = {}
        for q in queries:
            ranking = hybrid.ranking(with_share(fts_query(q), share))
            new[q] = hybrid.fused(vector[q], ranking)
            shared.append(len(set(new[q]) & set(old[q])))
            same += new[q] == old[q]
            old_text = set(hybrid.ranking(old_match(q)))
            text_shared.append(len(set(ranking) & old_text) / max(1, len(old_text)))
        out[share_name(share)] = {
            "top10_overlap_mean": statistics.fmean(shared),
            "top10_overlap_min": min(shared),
            "top10_identical_share": same / len(queries),
            "text_top50_overlap_mean": statistics.fmean(text_shared),
            "source_neighbours_found": found(new),
        }
    # The engine's own hybrid answer matches the new fusion computed here.
    agree = 0
    for q in queries:
        engine = hybrid.collection.query(texts=q, k=K, hybrid=True, include=[]).ids[0]
        agree += engine == hybrid.fused(vector[q], hybrid.ranking(fts_query(q)))
    out["engine_agrees_share"] = agree / len(queries)
    return out


def share_name(share: float) -> str:
    """How a 'common word' threshold is named in the report."""
    return "no common words (stopwords left out only)" if share >= 1 else f"common above {share:g}"


def hybrid_search(
    hybrid: Hybrid, sets: dict[str, list[str]], shares: list[float], rounds: int
) -> Result:
    out: Result = {}
    for name, queries in sets.items():
        calls: dict[str, Callable[[str], Any]] = {
            "hybrid query (now)": lambda q: hybrid.collection.query(texts=q, k=K, hybrid=True),
            "BM25 side, before (OR of every word)": lambda q: hybrid.ranking(old_match(q)),
        }
        for share in shares:
            calls[f"BM25 side, {share_name(share)}"] = lambda q, s=share: hybrid.ranking(
                with_share(fts_query(q), s)
            )
        print(f"hybrid: {name} ({len(queries)} queries)", file=sys.stderr, flush=True)
        matched = [hybrid.old_matches(q) for q in queries]
        ranked = [len(hybrid.ranking(fts_query(q))) for q in queries]
        out[name] = {
            "queries": len(queries),
            "examples": queries[:3],
            "old_or_matches_mean": statistics.fmean(matched),
            "old_or_matches_max": max(matched),
            "text_ranking_length_mean": statistics.fmean(ranked),
            "timings": timed_rounds(calls, queries, rounds),
        }
    return out


def per_query(hybrid: Hybrid, queries: list[str]) -> list[Result]:
    """Stopword-only queries one by one: old matches, new ranking, best of 5 times."""
    rows = []
    for q in queries:
        best: dict[str, float] = {}
        for label, match in (("before", old_match(q)), ("now", fts_query(q))):
            times = []
            for _ in range(5):
                start = time.perf_counter()
                hybrid.ranking(match)
                times.append(time.perf_counter() - start)
            best[label] = 1e3 * min(times)
        top = hybrid.ranking(fts_query(q))[:1]
        rows.append(
            {
                "query": q,
                "old_or_matches": hybrid.old_matches(q),
                "ranked": len(hybrid.ranking(fts_query(q))),
                "before_ms": best["before"],
                "now_ms": best["now"],
                "first_document": hybrid.collection.get(ids=[hybrid.id_of[top[0]]]).documents[0]
                if top
                else None,
            }
        )
    return rows


# -- report -----------------------------------------------------------------------------


def spread(result: Result) -> str:
    p50s = result["round_p50s"]
    return f"{min(p50s):.1f}-{max(p50s):.1f}"


def timing_table(timings: dict[str, Result]) -> list[str]:
    lines = [
        "| call | p50 ms | p99 ms | mean ms | round p50s | CPU p50 ms | CPU p99 ms | calls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in timings.items():
        lines.append(
            f"| {name} | {r['p50']:.1f} | {r['p99']:.1f} | {r['mean']:.1f} | {spread(r)} "
            f"| {r['cpu']['p50']:.1f} | {r['cpu']['p99']:.1f} | {r['calls']} |"
        )
    return lines


def render(report: Result) -> str:
    config = report["config"]
    lines = [
        "# Text queries and hybrid search (issue 18)",
        "",
        f"{config['docs']:,} PyPI summaries as documents with their vectors, default embedder "
        f"(`minilm`, ONNX Runtime); {config['queries']} queries from the test split, "
        f"{config['rounds']} rounds. Load average (1, 5, 15 min) at start "
        f"{report['load_avg_at_start']}, at end {report['load_avg_at_end']}, at the start of "
        "each section "
        + ", ".join(f"{name} {load}" for name, load in report["load_avg_by_section"].items())
        + "; "
        f"{report['machine']['cpu_count']} cores, {report['machine']['cpu']}. "
        "'busy loop on core 0': another process spins there throughout. CPU: this "
        "process's CPU time per call (all its threads); wall time above it is time spent "
        "waiting for a core.",
        "",
    ]
    embedding = report["embedding"]
    session = embedding["session"]
    lines += [
        "## 1. Embedding one text",
        "",
        f"Session now: intra_op_num_threads {session['intra_op_num_threads']}, inter_op "
        f"{session['inter_op_num_threads']}, allow_spinning {session['allow_spinning']}; "
        f"a call of several batches runs {session['batches_at_once']} at once.",
        "",
    ]
    for phase, timings in embedding["single"].items():
        lines += [f"### {phase}", "", *timing_table(timings), ""]
    batch = embedding["batch"]
    lines += [
        f"Batch of {batch['texts']} summaries, texts/s per round: now "
        f"{', '.join(f'{x:.0f}' for x in batch['texts_per_s']['now'])}; before "
        f"{', '.join(f'{x:.0f}' for x in batch['texts_per_s']['before'])}; paired ratio "
        f"now/before, median {batch['paired_ratio_median']:.2f}.",
        "",
    ]
    lines += ["## 2. Text queries end to end", ""]
    for phase, timings in report["text_queries"].items():
        lines += [f"### {phase}", "", *timing_table(timings), ""]
    busy = report["text_queries"]["busy loop on core 0"]["query(texts=q, k=10)"]
    verdict = "PASS" if busy["p50"] <= QUERY_GOAL_MS else "FAIL"
    lines += [
        f"**{verdict}**: text query p50 with a busy loop on core 0 {busy['p50']:.1f} ms "
        f"(goal <= {QUERY_GOAL_MS:.0f} ms).",
        "",
        "## 3. Hybrid search",
        "",
        "Now: the query's stopwords are left out (a query of stopwords only ranks the "
        "documents holding them all), and words in more than a share of the documents "
        f"(default {COMMON_SHARE:g}, and more than {COMMON_ROWS:,} documents) count in "
        "the score but bring no document in by themselves (when every word is common, "
        "documents must hold them all). 'Before': an OR of every word, stopwords included, "
        "BM25 over every match.",
        "",
    ]
    for name, result in report["hybrid"].items():
        lines += [
            f"### {name} (e.g. {', '.join(repr(q) for q in result['examples'])})",
            "",
            f"The old OR matched {result['old_or_matches_mean']:,.0f} documents on average "
            f"(at most {result['old_or_matches_max']:,}); the new text ranking holds "
            f"{result['text_ranking_length_mean']:.1f} of the {DEPTH} it may.",
            "",
            *timing_table(result["timings"]),
            "",
        ]
    stopwords = report["hybrid"]["stopwords"]["timings"]
    bm25 = stopwords[f"BM25 side, {share_name(COMMON_SHARE)}"]
    verdict = "PASS" if bm25["p99"] <= HYBRID_GOAL_MS else "FAIL"
    lines += [
        f"**{verdict}**: BM25 side p99 on queries full of stopwords {bm25['p99']:.1f} ms "
        f"(goal <= {HYBRID_GOAL_MS:.0f} ms).",
        "",
        "### Fused top 10 against the old text ranking (same vector ranking)",
        "",
        "Overlap: of the 10 fused with the old text ranking, how many the new one keeps. "
        "Source neighbours: of the 10 documents nearest the whole summary the query "
        "begins (the data set's neighbours), the share in the fused top 10, a proxy for "
        "relevance.",
        "",
        "| queries | rule | overlap of 10 (mean) | least | identical lists "
        "| text top-50 overlap | source neighbours found (before) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in report["overlap"].items():
        before = result["source_neighbours_found_before"]
        for rule, r in result.items():
            if not isinstance(r, dict):
                continue
            lines.append(
                f"| {name} | {rule} | {r['top10_overlap_mean']:.2f} | {r['top10_overlap_min']} "
                f"| {100 * r['top10_identical_share']:.0f}% "
                f"| {100 * r['text_top50_overlap_mean']:.0f}% "
                f"| {100 * r['source_neighbours_found']:.1f}% ({100 * before:.1f}%) |"
            )
    agrees = ", ".join(
        f"{name} {100 * r['engine_agrees_share']:.0f}%" for name, r in report["overlap"].items()
    )
    lines += [
        "",
        f"The engine's hybrid answer equals the fusion computed here: {agrees} of queries.",
        "",
        "### Queries of stopwords only (best of 5)",
        "",
        "| query | old OR matched | ranked now | before ms | now ms | first document now |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["only_stopwords"]:
        first = (row["first_document"] or "")[:70].replace("|", "/")
        lines.append(
            f"| {row['query']} | {row['old_or_matches']:,} | {row['ranked']} | "
            f"{row['before_ms']:.1f} | {row['now_ms']:.1f} | {first} |"
        )
    lines += ["", f"Wall time {report['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS)
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-texts", type=int, default=512)
    parser.add_argument(
        "--shares", type=str, default="1,0.1,0.05,0.02", help="'common word' shares to compare"
    )
    parser.add_argument("--keep", type=Path, default=None, help="build or reuse here")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_at_start = load_average()
    print(f"load average at start: {load_at_start}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    shares = sorted({float(x) for x in args.shares.split(",")} | {COMMON_SHARE}, reverse=True)
    vectors, documents, test, nearest = load_corpus(args.data, args.texts, args.docs)
    full, content, sources = make_queries(test, args.queries)
    source_nearest = [nearest[i] for i in sources]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="latentdb-text-"))
    try:
        database, collection = open_collection(folder, vectors, documents)
        with database:
            get_embedder("minilm").embed_texts(["load the model"])
            loads = {"embedding": load_average()}
            print(f"embedding threads, load {loads['embedding']}", file=sys.stderr, flush=True)
            embedding = embedding_threads(full, documents[: args.batch_texts], args.rounds)
            loads["text queries"] = load_average()
            print(f"text queries, load {loads['text queries']}", file=sys.stderr, flush=True)
            text = text_queries(collection, full, args.rounds)
            hybrid = Hybrid(collection, folder)
            sets = {"stopwords": full, "content": content}
            loads["hybrid"] = load_average()
            hybrid_result = hybrid_search(hybrid, sets, shares, args.rounds)
            print("overlap", file=sys.stderr, flush=True)
            overlap = {
                name: overlaps(hybrid, queries, source_nearest, shares)
                for name, queries in sets.items()
            }
            only = per_query(hybrid, ONLY_STOPWORDS)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    report: Result = {
        "config": {
            "docs": args.docs,
            "queries": len(full),
            "rounds": args.rounds,
            "k": K,
            "depth": DEPTH,
            "common_share": COMMON_SHARE,
            "common_rows": COMMON_ROWS,
            "shares": shares,
            "sqlite": sqlite3.sqlite_version,
        },
        "load_avg_at_start": load_at_start,
        "load_avg_by_section": loads,
        "machine": machine_info(),
        "embedding": embedding,
        "text_queries": text,
        "hybrid": hybrid_result,
        "overlap": overlap,
        "only_stopwords": only,
    }
    report["load_avg_at_end"] = load_average()
    report["wall_s"] = time.perf_counter() - started
    print(f"load average at end: {report['load_avg_at_end']}", file=sys.stderr, flush=True)
    markdown = render(report)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text.md").write_text(markdown)
    (args.out / "text.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
