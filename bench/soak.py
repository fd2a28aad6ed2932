"""Kill soak: SIGKILL writer processes mid-add/upsert/update/delete/optimize() and prove,
after every kill, that the database returns every acknowledged write bit for bit and
nothing that was deleted or replaced.

One database folder holds four cosine collections (32-d) with ANN indexes small enough
to seal often (``seal_rows`` 500-1000): ``hnsw``, ``hnsw-sq8``, ``ivf-pq`` and ``hnsw``
with ``reduce=16``. Each is seeded and optimized by this process. Then, round after
round, one or two writer processes (``_soak_worker.py``; two at once on the same
collection or on two collections of the folder) run a random plan of batches — add
(with some re-added deleted ids), upsert (existing, deleted and new ids), update (all
fields or one), delete, ``optimize()`` — printing ``ACK`` after each call returns, and
are killed with SIGKILL:

- ``timer`` rounds: after a random delay (which may fall while the child opens the
  database and catches up, during a write, or while a background seal runs);
- ``optimize`` rounds: a random fraction of the way into an ``optimize()`` call of a
  collection big enough that it takes a moment (rebuild, tuning and save).

Two writers are killed a random moment apart, so the second keeps writing after the
first died. Every value is derived from (writer, batch, row), so this process keeps the
model of acknowledged state: per id its vector, document and metadata, or deleted.
Writers of one round touch disjoint ids, so the order between them does not matter.

After each round this process reopens the database and checks every collection:

- the batch in flight at the kill (or one that raised) is applied whole or not at all
  (read back; a mix is a *partial* batch), and the model takes what was found;
- ``get`` of every id ever written (vectors, documents, metadatas) equals the model:
  vectors bit for bit as float32 (*lost*: a live id missing or different), no deleted
  id comes back (*resurrected*), ``count()`` and ``get()`` of all ids agree;
- queries (``exact=True`` and ANN, k=10) with the vectors that deleted and updated ids
  held before, and with live rows' vectors (recently written ones first): no hit is a
  deleted id or a ``None`` id (*resurrected*), every hit's distance is the distance to
  the model's current vector of that id (else *stale*: an old vector still indexed),
  and each live probe finds its own id at distance ~0 with exact search (else *lost*);
  ANN misses of the own id are counted, as recall, not as failures. One query per
  collection also asks for the default ``include`` (documents and metadatas).

Run from the repository root::

    .venv/bin/python bench/soak.py                 # 120 kills, ~6 min on 2 cores
    .venv/bin/python bench/soak.py --quick         # 10 kills, ~40 s

Writes ``soak.md`` and ``soak.json`` under ``--out`` (default bench/results); ``--name``
changes the file names. Exit status 1 when anything was lost, resurrected, partial or
failed to reopen.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, load_average, machine_info, package_versions
from _soak_worker import DIMENSION, MODEL, batch_values

import latentdb

WORKER = Path(__file__).with_name("_soak_worker.py")
WRITE_OPS = ("add", "upsert", "update", "delete")
K = 10
# Cosine distances are computed in float32 by the engine and in float64 here; a hit whose
# distance is further than this from the one its current vector gives is a stale row.
DISTANCE_TOLERANCE = 1e-4
SELF_DISTANCE = 1e-5  # a row's own vector as query: distance 0 up to rounding
EXAMPLES = 8  # examples kept per kind of finding
# Query probes per check and collection: this many of the latest deleted or replaced
# vectors and of the latest written rows, plus a third as many older ones of each.
PROBES = 150


@dataclass(frozen=True)
class CollectionSetup:
    name: str
    index: dict[str, Any]
    reduce: int | None = None


COLLECTIONS = (
    CollectionSetup("hnsw", {"kind": "hnsw", "seal_rows": 500}),
    CollectionSetup("hnsw-sq8", {"kind": "hnsw-sq8", "seal_rows": 500}),
    CollectionSetup("ivf-pq", {"kind": "ivf-pq", "seal_rows": 1000}),
    CollectionSetup("hnsw-reduce16", {"kind": "hnsw", "seal_rows": 500}, reduce=16),
)
# The first collection takes half the rounds: it is where optimize() is cheapest to
# repeat; the others make sure every kind of segment is built, extended and killed.
COLLECTION_WEIGHTS = (0.4, 0.2, 0.2, 0.2)


@dataclass(frozen=True)
class Row:
    vector: np.ndarray
    document: str
    metadata: dict[str, Any]

    def same(self, other: Row | None) -> bool:
        return (
            other is not None
            and np.array_equal(self.vector.view(np.uint32), other.vector.view(np.uint32))
            and self.document == other.document
            and self.metadata == other.metadata
        )


@dataclass
class Model:
    """What a collection must hold: the acknowledged state."""

    rows: dict[str, Row] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)  # ids written once, deleted since
    # Vectors an id held before (deleted or replaced), newest last.
    ghosts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    touched: list[str] = field(default_factory=list)  # ids written since the last check

    def set(self, key: str, row: Row | None) -> None:
        old = self.rows.get(key)
        if old is not None and (row is None or not np.array_equal(old.vector, row.vector)):
            self.ghosts.setdefault(key, []).append(old.vector)
            del self.ghosts[key][:-3]
        if row is None:
            self.rows.pop(key, None)
            self.absent.add(key)
        else:
            self.rows[key] = row
            self.absent.discard(key)
        self.touched.append(key)


def batch_effect(
    writer: str, number: int, batch: dict[str, Any], before: dict[str, Row | None]
) -> dict[str, Row | None]:
    """Each id of a write batch after it is applied (None: deleted)."""
    op, ids = batch["op"], batch["ids"]
    if op == "delete":
        return dict.fromkeys(ids)
    vectors, documents, metadatas = batch_values(writer, number, len(ids))
    after: dict[str, Row | None] = {}
    for position, key in enumerate(ids):
        new = Row(vectors[position], documents[position], metadatas[position])
        if op == "update":
            old = before[key]
            if old is None:  # not stored (only if a row was lost): update writes nothing
                after[key] = None
                continue
            fields = batch.get("fields", "all")
            new = Row(
                new.vector if fields in ("all", "vectors") else old.vector,
                new.document if fields in ("all", "documents") else old.document,
                new.metadata if fields in ("all", "metadatas") else old.metadata,
            )
        after[key] = new
    return after


# -- plans ----------------------------------------------------------------------------


def plan_batches(
    rng: random.Random,
    writer: str,
    live: list[str],
    absent: list[str],
    count: int,
    *,
    optimize_at: int | None,
    crowded: bool,
) -> list[dict[str, Any]]:
    """A writer's batches over its own ids (``live``/``absent`` are not shared with the
    other writer of the round), valid if each applies in turn."""
    live_set, absent_set = set(live), set(absent)
    # optimize() takes seconds where a write batch takes ~20 ms: rare in plans, so that
    # timer kills fall on writes about as often as on optimize().
    weights = {"add": 30, "upsert": 20, "update": 20, "delete": 18, "optimize": 1}
    if crowded:  # keep the collection from growing without bound
        weights |= {"add": 8, "delete": 40}
    batches: list[dict[str, Any]] = []
    for number in range(count):
        op = "optimize" if number == optimize_at else None
        while op is None:
            op = rng.choices(list(weights), list(weights.values()))[0]
            if op in ("update", "delete") and len(live_set) < 100:
                op = None
        if op == "optimize":
            batches.append({"op": op})
            continue
        fresh = iter(f"{writer}-{number}-{i}" for i in range(1000))
        if op == "add":
            size = rng.randint(20, 120)
            again = rng.sample(sorted(absent_set), min(len(absent_set), size // 5))
            ids = again + [next(fresh) for _ in range(size - len(again))]
        elif op == "upsert":
            size = rng.randint(20, 80)
            old = rng.sample(sorted(live_set), min(len(live_set), size // 2))
            again = rng.sample(sorted(absent_set), min(len(absent_set), size // 5))
            ids = old + again + [next(fresh) for _ in range(size - len(old) - len(again))]
        else:
            ids = rng.sample(sorted(live_set), rng.randint(10, 60))
        rng.shuffle(ids)
        batch: dict[str, Any] = {"op": op, "ids": ids}
        if op == "update":
            batch["fields"] = rng.choice(("all", "all", "vectors", "documents", "metadatas"))
        batches.append(batch)
        if op == "delete":
            live_set.difference_update(ids)
            absent_set.update(ids)
        else:
            absent_set.difference_update(ids)
            live_set.update(ids)
    return batches


# -- writer processes -----------------------------------------------------------------


class Writer:
    """A started child: imports latentdb at once, gets its plan later."""

    def __init__(self, log: Path) -> None:
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            bufsize=1,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.seen: list[str] = []
        self.times: list[float] = []
        self.tag = ""
        self.collection = ""
        self.batches: list[dict[str, Any]] = []

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put((time.monotonic(), line.strip()))

    def start(self, folder: Path, collection: str, tag: str, batches: list[dict[str, Any]]) -> None:
        self.tag, self.collection, self.batches = tag, collection, batches
        plan = {"folder": str(folder), "collection": collection, "writer": tag, "batches": batches}
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(plan) + "\n")
        self.process.stdin.flush()

    def wait_for(self, prefix: str, timeout: float) -> bool:
        """Collect lines until one starts with ``prefix`` (True) or the time is up."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                _, line = self.lines.get(timeout=left)
            except queue.Empty:
                return False
            self.seen.append(line)
            self.times.append(time.monotonic())
            if line.startswith(prefix):
                return True
            if line in ("STOP", "DONE"):
                return False
        return False

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.reader.join()
        while not self.lines.empty():
            at, line = self.lines.get()
            self.seen.append(line)
            self.times.append(at)
        if self.process.stdin is not None:
            self.process.stdin.close()

    def optimize_seconds(self) -> list[float]:
        """How long each acknowledged optimize() took."""
        begun: dict[str, float] = {}
        took = []
        for at, line in zip(self.times, self.seen, strict=True):
            word, _, rest = line.partition(" ")
            if word == "BEGIN" and rest.endswith("optimize"):
                begun[rest.split()[0]] = at
            elif word == "ACK" and rest in begun:
                took.append(at - begun[rest])
        return took

    def outcome(self) -> dict[str, Any]:
        """ACKed batch numbers, the batch left unresolved (in flight, or failed), the op
        in flight at the kill, and errors."""
        acked: list[int] = []
        errors: list[str] = []
        unresolved: int | None = None
        in_flight = "open"  # the plan was sent: importing or opening
        for line in self.seen:
            word, _, rest = line.partition(" ")
            if word == "READY":
                in_flight = "between-calls"
            elif word == "BEGIN":
                number = int(rest.split()[0])
                in_flight = self.batches[number]["op"]
                unresolved = number if in_flight in WRITE_OPS else None
            elif word == "ACK":
                acked.append(int(rest))
                unresolved, in_flight = None, "between-calls"
            elif word == "ERR":
                errors.append(rest.split(" ", 1)[1])
                in_flight = "between-calls"
            elif word in ("STOP", "DONE"):
                in_flight = "idle"
        return {"acked": acked, "unresolved": unresolved, "in_flight": in_flight, "errors": errors}


# -- checks ---------------------------------------------------------------------------


class Findings:
    """Counts of each kind of failure, distinct ids, and a few examples."""

    def __init__(self) -> None:
        self.ids: dict[str, set[str]] = {}
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, key: str | None, example: str) -> None:
        self.counts[kind] += 1
        if key is not None:
            self.ids.setdefault(kind, set()).add(key)
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES:
            shown.append(example)

    def distinct(self, kind: str) -> int:
        return len(self.ids.get(kind, ()))


def read_rows(collection: Any, ids: list[str]) -> dict[str, Row]:
    found: dict[str, Row] = {}
    for start in range(0, len(ids), 5000):
        got = collection.get(
            ids[start : start + 5000], include=["vectors", "documents", "metadatas"]
        )
        for position, key in enumerate(got.ids):
            found[key] = Row(
                got.vectors[position], got.documents[position], got.metadatas[position]
            )
    return found


def resolve(
    collection: Any,
    model: Model,
    writer: str,
    number: int,
    batch: dict[str, Any],
    findings: Findings,
    tally: Counter[str],
) -> None:
    """Learn by reading back whether an unacknowledged batch was applied: whole or not
    at all is right, a mix is a partial batch. The model takes what was found."""
    ids = batch["ids"]
    before = {key: model.rows.get(key) for key in ids}
    after = batch_effect(writer, number, batch, before)
    found = read_rows(collection, ids)

    def matches(key: str, expected: Row | None) -> bool:
        return key not in found if expected is None else expected.same(found.get(key))

    as_after = [key for key in ids if matches(key, after[key])]
    as_before = [key for key in ids if matches(key, before[key])]
    if len(as_after) == len(ids):
        tally["applied"] += 1
        for key in ids:
            model.set(key, after[key])
    elif len(as_before) == len(ids):
        tally["not_applied"] += 1
    else:
        tally["partial"] += 1
        neither = set(ids) - set(as_after) - set(as_before)
        findings.add(
            "partial",
            f"{writer}/{number}",
            f"{writer} batch {number} ({batch['op']}, {len(ids)} ids): {len(as_after)} "
            f"applied, {len(as_before)} not, {len(neither)} neither",
        )
        for key in as_after:
            if key not in as_before:
                model.set(key, after[key])


def check_collection(
    name: str, collection: Any, model: Model, rng: random.Random, findings: Findings
) -> dict[str, int]:
    """Every acknowledged row bit for bit by get(); no deleted id or old vector by query."""
    stats: Counter[str] = Counter()
    live, absent = list(model.rows), sorted(model.absent)
    found = read_rows(collection, live + absent)
    for key in live:
        if not model.rows[key].same(found.get(key)):
            what = "missing" if key not in found else "differs"
            findings.add("lost", f"{name}/{key}", f"{name}: get({key!r}) {what}")
    for key in absent:
        if key in found:
            findings.add("resurrected_get", f"{name}/{key}", f"{name}: deleted {key!r} by get()")
    every = collection.get(include=[]).ids
    unknown = set(every) - set(model.rows)
    for key in sorted(unknown)[:EXAMPLES]:
        findings.add("unknown_rows", f"{name}/{key}", f"{name}: get() lists {key!r}")
    count = collection.count()
    if count != len(model.rows) or len(every) != len(model.rows):
        findings.add(
            "count_mismatch",
            None,
            f"{name}: count() {count}, get() {len(every)} ids, model {len(model.rows)}",
        )
    stats["rows_checked"] = len(live)
    stats["deleted_checked"] = len(absent)

    # Probes: vectors deleted or replaced ids held (the latest first), and live rows.
    ghost_ids = [key for key in dict.fromkeys(reversed(model.touched)) if key in model.ghosts]
    older = [key for key in model.ghosts if key not in set(ghost_ids)]
    ghost_ids = ghost_ids[:PROBES] + rng.sample(older, min(len(older), PROBES // 3))
    ghosts = [(key, vector) for key in ghost_ids for vector in model.ghosts[key][-2:]]
    recent = [key for key in dict.fromkeys(reversed(model.touched)) if key in model.rows]
    recent = recent[:PROBES]
    rest = sorted(set(model.rows) - set(recent))
    probes = recent + rng.sample(rest, min(len(rest), PROBES // 3))
    queries = [v for _, v in ghosts] + [model.rows[key].vector for key in probes]
    owners = [None] * len(ghosts) + probes
    sources = [key for key, _ in ghosts] + probes  # whose vector each query is
    stats["ghost_queries"] = len(ghosts)
    stats["live_queries"] = len(probes)
    if not queries:
        return dict(stats)
    matrix = np.stack(queries)
    for exact in (True, False):
        mode = "exact" if exact else "ann"
        result = collection.query(vectors=matrix, k=K, include=["distances"], exact=exact)
        for position, (ids, distances) in enumerate(zip(result.ids, result.distances, strict=True)):
            query = matrix[position].astype(np.float64)
            owner = owners[position]
            for hit, distance in zip(ids, distances, strict=False):
                if hit is None:
                    findings.add(
                        f"resurrected_{mode}", f"{name}/None@{sources[position]}",
                        f"{name}: {mode} query with {sources[position]!r}'s vector: hit id "
                        f"None at {distance:.3g}",
                    )  # fmt: skip
                    continue
                row = model.rows.get(hit)
                if row is None:
                    findings.add(
                        f"resurrected_{mode}", f"{name}/{hit}",
                        f"{name}: {mode} query returned deleted {hit!r} at {distance:.3g}",
                    )  # fmt: skip
                    continue
                expected = 1.0 - float(query @ row.vector.astype(np.float64))
                if abs(float(distance) - expected) > DISTANCE_TOLERANCE:
                    old = [1.0 - float(query @ g) for g in model.ghosts.get(hit, [])]
                    stale = any(abs(float(distance) - d) < 1e-3 for d in old)
                    findings.add(
                        f"{'stale' if stale else 'distance'}_{mode}", f"{name}/{hit}",
                        f"{name}: {mode} hit {hit!r} at {distance:.4g}, its vector gives "
                        f"{expected:.4g}",
                    )  # fmt: skip
            if owner is not None:
                top = dict(zip(ids, distances, strict=False))
                if owner not in top or top[owner] > SELF_DISTANCE:
                    if exact:
                        findings.add(
                            "lost_exact_search", f"{name}/{owner}",
                            f"{name}: exact query with {owner!r}'s vector misses it",
                        )  # fmt: skip
                    else:
                        stats["ann_self_misses"] += 1
    try:  # the default include reads documents and metadatas of every hit
        collection.query(vectors=matrix[: min(20, len(matrix))], k=K)
    except Exception as error:
        findings.add(
            "query_error", None, f"{name}: default include: {type(error).__name__}: {error}"
        )
    return dict(stats)


# -- the soak -------------------------------------------------------------------------


@dataclass
class Run:
    folder: Path
    logs: Path
    rng: random.Random
    models: dict[str, Model]
    findings: Findings = field(default_factory=Findings)
    kills: Counter[str] = field(default_factory=Counter)
    kills_by_collection: Counter[str] = field(default_factory=Counter)
    acked_batches: Counter[str] = field(default_factory=Counter)
    acked_rows: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)
    writer_errors: Counter[str] = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)
    reopen_failures: list[str] = field(default_factory=list)
    verify_errors: list[str] = field(default_factory=list)
    optimize_seconds: dict[str, list[float]] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    verify_seconds: list[float] = field(default_factory=list)
    spare: list[Writer] = field(default_factory=list)
    started: int = 0

    def writer(self) -> Writer:
        """A child that has imported latentdb (two are kept warm, started a round
        ahead, so that neither writer of a round is still importing when it starts)."""
        while len(self.spare) < 3:
            self.started += 1
            self.spare.append(Writer(self.logs / f"writer{self.started}.log"))
        return self.spare.pop(0)


def seed(run: Run, rows: int, *, flat: bool) -> None:
    db = latentdb.connect(run.folder)
    for setup in COLLECTIONS:
        collection = db.create_collection(
            setup.name, dimension=DIMENSION, metric="cosine", embedder=None, model=MODEL,
            index="flat" if flat else setup.index, reduce=None if flat else setup.reduce,
        )  # fmt: skip
        model = run.models.setdefault(setup.name, Model())
        for number in range(rows // 500):
            batch = {"op": "add", "ids": [f"seed-{number}-{i}" for i in range(500)]}
            vectors, documents, metadatas = batch_values("seed", number, 500)
            collection.add(
                batch["ids"], vectors=vectors, documents=documents, metadatas=metadatas, model=MODEL
            )
            for key, row in batch_effect("seed", number, batch, {}).items():
                model.set(key, row)
        collection.delete([f"seed-0-{i}" for i in range(50)])
        for i in range(50):
            model.set(f"seed-0-{i}", None)
        started = time.monotonic()
        collection.optimize()
        run.optimize_seconds.setdefault(setup.name, []).append(time.monotonic() - started)
    db.close()


def play_round(run: Run, number: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = run.rng
    two = rng.random() < args.two_writers
    names = [s.name for s in COLLECTIONS]
    first = rng.choices(names, COLLECTION_WEIGHTS)[0]
    chosen = [first]
    if two:
        chosen.append(first if rng.random() < 0.7 else rng.choice([n for n in names if n != first]))
    draw = rng.random()
    mode = "optimize" if draw < args.optimize_kills else "open" if draw > 0.9 else "timer"
    # Split each collection's ids between its writers: they never touch the same id.
    pools: list[tuple[list[str], list[str]]] = []
    for name in dict.fromkeys(chosen):
        model = run.models[name]
        live, absent = sorted(model.rows), sorted(model.absent)
        if chosen.count(name) == 2:
            rng.shuffle(live)
            rng.shuffle(absent)
            pools += [(live[0::2], absent[0::2]), (live[1::2], absent[1::2])]
        else:
            pools.append((live, absent))
    if len(chosen) == 2 and chosen[0] == chosen[1]:
        shared = set(pools[0][0] + pools[0][1]) & set(pools[1][0] + pools[1][1])
        assert not shared, "two writers of one collection must not share ids"
    writers: list[Writer] = []
    for index, name in enumerate(chosen):
        live, absent = pools[index]
        tag = f"r{number}w{index}"
        crowded = len(run.models[name].rows) > args.max_rows
        optimize_at = rng.randint(1, 3) if mode == "optimize" and index == 0 else None
        batches = plan_batches(
            rng, tag, live, absent, args.batches, optimize_at=optimize_at, crowded=crowded
        )
        writer = run.writer()
        writer.start(run.folder, name, tag, batches)
        writers.append(writer)

    started = time.monotonic()
    delays: list[float] = []
    if mode == "optimize":
        lead = writers[0]
        target = next(i for i, b in enumerate(lead.batches) if b["op"] == "optimize")
        took = run.optimize_seconds.get(chosen[0], [1.0])
        expected = float(np.median(took[-8:]))
        reached = lead.wait_for(f"BEGIN {target} optimize", timeout=60)
        delay = rng.uniform(0.0, 1.1 * expected) if reached else 0.0
        time.sleep(delay)
        delays.append(time.monotonic() - started)
    elif mode == "open":  # while the database opens and catches up
        time.sleep(rng.uniform(0.0, 0.08))
        delays.append(time.monotonic() - started)
    else:
        for writer in writers:
            writer.wait_for("READY", timeout=60)
        time.sleep(rng.uniform(0.05, args.max_delay))
        delays.append(time.monotonic() - started)
    writers[0].kill()
    if len(writers) == 2:
        time.sleep(rng.uniform(0.0, 1.0))  # the other keeps writing a while
        delays.append(time.monotonic() - started)
        writers[1].kill()

    record: dict[str, Any] = {"round": number, "mode": mode, "collections": chosen, "writers": []}
    for writer, delay in zip(writers, delays, strict=True):
        outcome = writer.outcome()
        model = run.models[writer.collection]
        run.optimize_seconds.setdefault(writer.collection, []).extend(writer.optimize_seconds())
        for acked in outcome["acked"]:
            batch = writer.batches[acked]
            run.acked_batches[batch["op"]] += 1
            if batch["op"] == "optimize":
                continue
            run.acked_rows[batch["op"]] += len(batch["ids"])
            before = {key: model.rows.get(key) for key in batch["ids"]}
            for key, row in batch_effect(writer.tag, acked, batch, before).items():
                model.set(key, row)
        for error in outcome["errors"]:
            kind = error.split(":", 1)[0]
            run.writer_errors[kind] += 1
            if len(run.error_examples) < 20:
                run.error_examples.append(f"{writer.tag} ({writer.collection}): {error}")
        run.kills[outcome["in_flight"]] += 1
        run.kills_by_collection[writer.collection] += 1
        record["writers"].append(
            {
                "tag": writer.tag,
                "collection": writer.collection,
                "killed_at_s": round(delay, 3),
                "in_flight": outcome["in_flight"],
                "acked": len(outcome["acked"]),
                "unresolved": outcome["unresolved"],
                "errors": outcome["errors"],
            }
        )
    record["verify"] = verify(run, writers)
    return record


def verify(run: Run, writers: list[Writer]) -> dict[str, Any]:
    started = time.monotonic()
    before = Counter(run.findings.counts)
    db = None
    try:
        db = latentdb.connect(run.folder)
        collections = {s.name: db.get_collection(s.name) for s in COLLECTIONS}
        if writers:  # after a kill, the collections written; at the end, all
            written = {writer.collection for writer in writers}
            collections = {n: c for n, c in collections.items() if n in written}
    except Exception as error:
        run.reopen_failures.append(f"{type(error).__name__}: {error}")
        if db is not None:
            db.close()
        return {"reopen_failure": f"{type(error).__name__}: {error}"}
    stats: dict[str, Any] = {}
    try:
        for writer in writers:
            outcome = writer.outcome()
            if outcome["unresolved"] is not None:
                number = outcome["unresolved"]
                resolve(
                    collections[writer.collection], run.models[writer.collection], writer.tag,
                    number, writer.batches[number], run.findings, run.in_flight,
                )  # fmt: skip
        for name, collection in collections.items():
            stats[name] = check_collection(
                name, collection, run.models[name], run.rng, run.findings
            )
            run.models[name].touched.clear()
    except Exception as error:
        run.verify_errors.append(f"{type(error).__name__}: {error}")
        stats["error"] = f"{type(error).__name__}: {error}"
    finally:
        try:
            db.close()
        except Exception as error:
            run.verify_errors.append(f"close: {type(error).__name__}: {error}")
    seconds = time.monotonic() - started
    run.verify_seconds.append(seconds)
    stats["seconds"] = round(seconds, 3)
    stats["new_findings"] = dict(run.findings.counts - before)
    return stats


def final_check(run: Run) -> dict[str, Any]:
    """No kill: optimize every collection, close, reopen and check once more."""
    db = latentdb.connect(run.folder)
    for setup in COLLECTIONS:
        db.get_collection(setup.name).optimize()
    db.close()
    return verify(run, [])


# -- report ---------------------------------------------------------------------------


def git_state() -> dict[str, str]:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "latentdb")
    return {
        "commit": git("rev-parse", "HEAD"),
        "subject": git("log", "-1", "--format=%s"),
        "latentdb_files_modified": str(len(dirty.splitlines())) if dirty else "0",
        "latentdb_path": str(Path(latentdb.__file__).parent),
    }


def summarize(
    run: Run, args: argparse.Namespace, seconds: float, final: dict[str, Any]
) -> dict[str, Any]:
    f = run.findings
    resurrected_kinds = [
        "resurrected_get", "resurrected_exact", "resurrected_ann", "stale_exact", "stale_ann",
    ]  # fmt: skip
    resurrected_ids = set().union(*(f.ids.get(kind, set()) for kind in resurrected_kinds))
    lost_ids = f.ids.get("lost", set()) | f.ids.get("lost_exact_search", set())
    wrong_ids = f.ids.get("distance_exact", set()) | f.ids.get("distance_ann", set())
    ann_queries = sum(
        v.get("live_queries", 0)
        for r in run.rounds
        for v in r["verify"].values()
        if isinstance(v, dict)
    )
    ann_misses = sum(
        v.get("ann_self_misses", 0)
        for r in run.rounds
        for v in r["verify"].values()
        if isinstance(v, dict)
    )
    return {
        "kills": sum(run.kills.values()),
        "kills_by_op_in_flight": dict(run.kills.most_common()),
        "kills_by_collection": dict(run.kills_by_collection.most_common()),
        "rounds": len(run.rounds),
        "rounds_two_writers": sum(len(r["writers"]) == 2 for r in run.rounds),
        "rounds_two_writers_same_collection": sum(
            len(r["collections"]) == 2 and r["collections"][0] == r["collections"][1]
            for r in run.rounds
        ),
        "rounds_optimize_kill": sum(r["mode"] == "optimize" for r in run.rounds),
        "rounds_open_kill": sum(r["mode"] == "open" for r in run.rounds),
        "acknowledged_batches": dict(run.acked_batches),
        "acknowledged_rows": dict(run.acked_rows),
        "acknowledged_batches_total": sum(run.acked_batches.values()),
        "acknowledged_rows_total": sum(run.acked_rows.values()),
        "in_flight_batches": dict(run.in_flight),
        "partial_batches": run.in_flight.get("partial", 0),
        "lost_ids": len(lost_ids),
        "resurrected_ids": len(resurrected_ids),
        "wrong_distance_ids": len(wrong_ids),
        "count_mismatches": f.counts["count_mismatch"] + f.counts["unknown_rows"],
        "query_errors": f.counts["query_error"],
        "findings_by_kind": {
            kind: {
                "hits": f.counts[kind],
                "distinct_ids": f.distinct(kind),
                "distinct_ids_by_collection": dict(
                    Counter(key.split("/", 1)[0] for key in f.ids.get(kind, ()))
                ),
            }
            for kind in sorted(f.counts)
        },
        "examples": f.examples,
        "reopen_failures": len(run.reopen_failures),
        "reopen_failure_messages": run.reopen_failures[:10],
        "verify_errors": run.verify_errors[:10],
        "writer_errors": dict(run.writer_errors),
        "writer_error_examples": run.error_examples,
        "ann_self_queries": ann_queries,
        "ann_self_misses": ann_misses,
        "final_check": final,
        "final_rows": {name: len(m.rows) for name, m in run.models.items()},
        "final_deleted_ids": {name: len(m.absent) for name, m in run.models.items()},
        "verify_seconds_median": round(float(np.median(run.verify_seconds)), 3)
        if run.verify_seconds
        else None,
        "runtime_s": round(seconds, 1),
        "arguments": {k: str(v) for k, v in vars(args).items()},
    }


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    s = summary
    goals = [
        ("lost acknowledged rows (get differs or missing, or exact search misses its own "
         "vector)", s["lost_ids"]),
        ("resurrected ids (deleted id or stale vector returned by get/query)",
         s["resurrected_ids"]),
        ("ids returned at a distance no vector of theirs gives", s["wrong_distance_ids"]),
        ("partial batches (in flight at a kill, neither whole nor absent)",
         s["partial_batches"]),
        ("checks where count() or the ids of get() disagreed with the model",
         s["count_mismatches"]),
        ("reopen failures", s["reopen_failures"]),
        ("reads that raised while checking (default-include queries too)",
         len(s["verify_errors"]) + s["query_errors"]),
    ]  # fmt: skip
    batches, rows = s["acknowledged_batches"], s["acknowledged_rows"]
    final = s["final_check"].get("new_findings", {})
    lines = [
        "# Kill soak (bench/soak.py)",
        "",
        f"Run {meta['machine']['date']} on {meta['machine']['cpu_count']} cores "
        f"({meta['machine']['cpu']}), repository at `{meta['git']['commit'][:10]}` "
        f"({meta['git']['subject']}; {meta['git']['latentdb_files_modified']} files under "
        f"latentdb/ modified in the working tree), latentdb imported from "
        f"`{meta['git']['latentdb_path']}`, `{meta['command']}`. Runtime {s['runtime_s']} s.",
        "",
        *([s["arguments"]["note"], ""] if s["arguments"]["note"] else []),
        (
            '**Control run: every collection exact (`index="flat"`), no ANN segment.**'
            if s["arguments"]["control_flat"] == "True"
            else "Collections (cosine, 32-d): "
            + ", ".join(
                f"`{c.name}` index={c.index}" + (f" reduce={c.reduce}" if c.reduce else "")
                for c in COLLECTIONS
            )
            + "."
        ),
        "",
        "| goal | measured | |",
        "|---|--:|---|",
        *[f"| {what} | {n} | {'PASS' if n == 0 else 'FAIL'} |" for what, n in goals],
        "",
        f"**Kills: {s['kills']}** (SIGKILL of a writer process) in {s['rounds']} rounds: "
        f"{s['rounds_two_writers']} rounds with two writers at once "
        f"({s['rounds_two_writers_same_collection']} on the same collection), "
        f"{s['rounds_optimize_kill']} rounds aimed at `optimize()`, {s['rounds_open_kill']} "
        "killed within 0.08 s of the start (aimed at the open and catch-up).",
        "",
        "| operation in flight at the kill | kills |",
        "|---|--:|",
        *[f"| {op} | {n} |" for op, n in s["kills_by_op_in_flight"].items()],
        "",
        "| collection | kills |",
        "|---|--:|",
        *[f"| {name} | {n} |" for name, n in s["kills_by_collection"].items()],
        "",
        f"Acknowledged: {s['acknowledged_batches_total']} batches, "
        f"{s['acknowledged_rows_total']} rows written (ids in acknowledged write batches).",
        "",
        "| op | acknowledged batches | rows |",
        "|---|--:|--:|",
        *[
            f"| {op} | {batches.get(op, 0)} | {rows.get(op, '-')} |"
            for op in (*WRITE_OPS, "optimize")
        ],
        "",
        "Write batches in flight at a kill (or that raised), resolved by reading back: "
        + ", ".join(f"{k} {v}" for k, v in sorted(s["in_flight_batches"].items()))
        + ".",
        "",
        f"Rows at the end: {s['final_rows']}; deleted ids checked each time: "
        f"{s['final_deleted_ids']}. Median check after a kill: {s['verify_seconds_median']} s.",
        "",
        "## Findings",
        "",
    ]
    if s["findings_by_kind"]:
        lines += ["| kind | hits | distinct ids | by collection |", "|---|--:|--:|---|"]
        lines += [
            f"| {k} | {v['hits']} | {v['distinct_ids']} | "
            + ", ".join(f"{c} {n}" for c, n in v["distinct_ids_by_collection"].items())
            + " |"
            for k, v in s["findings_by_kind"].items()
        ]
        lines += [
            "",
            "Hits count every time a check saw the problem (a row that stays wrong is seen "
            "again after each later kill); a `None` id counts once per query vector that "
            "found it.",
        ]
        lines += ["", "Examples:", ""]
        for kind, shown in s["examples"].items():
            lines += [f"- {kind}: " + "; ".join(f"`{e}`" for e in shown[:4])]
    else:
        lines.append("None: every check after every kill passed.")
    lines += [
        "",
        f"ANN self-queries (a live row's own vector, k={K}): {s['ann_self_misses']} of "
        f"{s['ann_self_queries']} missed their own id (recall, not a failure; the exact "
        "search must and is counted above).",
        "",
        "Writer errors (a call that raised in a child; a failed write stops that child): "
        + (", ".join(f"{k} x{v}" for k, v in s["writer_errors"].items()) or "none")
        + ".",
    ]
    for example in s["writer_error_examples"][:6]:
        lines.append(f"- `{example}`")
    if s["reopen_failure_messages"] or s["verify_errors"]:
        lines += ["", "Reopen failures and check errors:", ""]
        lines += [f"- `{m}`" for m in s["reopen_failure_messages"] + s["verify_errors"]]
    lines += [
        "",
        "Final check without a kill (optimize every collection, close, reopen, check): "
        + (", ".join(f"{k} {v}" for k, v in final.items()) or "no findings")
        + ".",
        "",
        "How it works: see the docstring of bench/soak.py and bench/README.md.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=120)
    parser.add_argument("--quick", action="store_true", help="10 kills")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--seed-rows", type=int, default=3000)
    parser.add_argument("--max-rows", type=int, default=8000, help="past this, plans delete more")
    parser.add_argument("--batches", type=int, default=100, help="batches planned per writer")
    parser.add_argument("--max-delay", type=float, default=2.5, help="timer kills: seconds")
    parser.add_argument("--two-writers", type=float, default=0.4, help="share of rounds")
    parser.add_argument("--optimize-kills", type=float, default=0.2, help="share of rounds")
    parser.add_argument(
        "--control-flat",
        action="store_true",
        help="every collection exact (index='flat'): a control run of the checks themselves",
    )
    parser.add_argument("--note", default="", help="a line for the report (what was tested)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    parser.add_argument("--name", default="soak")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.kills = 10
    base = Path(tempfile.mkdtemp(prefix="soak-", dir=args.workdir))
    run = Run(folder=base / "db", logs=base / "logs", rng=random.Random(args.seed), models={})
    run.logs.mkdir(parents=True)
    meta = {
        "machine": machine_info(),
        "git": git_state(),
        "packages": package_versions(["faiss-cpu", "numpy"]),
        "command": "bench/soak.py " + " ".join(sys.argv[1:]),
        "workdir": str(base),
    }
    started = time.monotonic()
    run.writer()  # children import latentdb while the seed is written
    seed(run, args.seed_rows, flat=args.control_flat)
    number = 0
    while sum(run.kills.values()) < args.kills:
        record = play_round(run, number, args)
        run.rounds.append(record)
        new = record["verify"].get("new_findings", {})
        print(
            f"round {number}: {record['mode']:8} "
            + " ".join(
                f"{w['collection']}:{w['in_flight']}/{w['acked']}" for w in record["writers"]
            )
            + f"  check {record['verify'].get('seconds', '-')} s"
            + (f"  FOUND {new}" if new else ""),
            flush=True,
        )
        number += 1
    for writer in run.spare:
        writer.kill()
    final = final_check(run)
    seconds = time.monotonic() - started
    meta["machine"]["load_avg_end"] = load_average()
    summary = summarize(run, args, seconds, final)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(markdown(summary, meta))
    payload = {"summary": summary, "meta": meta, "rounds": run.rounds}
    (args.out / f"{args.name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(markdown(summary, meta))
    shutil.rmtree(base / "db", ignore_errors=True)
    if args.control_flat:
        print("control run: every collection was created with index='flat'")
    failed = summary["lost_ids"] + summary["resurrected_ids"] + summary["partial_batches"]
    failed += summary["wrong_distance_ids"] + summary["count_mismatches"]
    failed += summary["query_errors"]
    return 1 if failed or summary["reopen_failures"] or summary["verify_errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
