"""Durability and multi-process behaviour, with real processes and real files.

- A writer killed with SIGKILL at a random moment keeps every acknowledged batch, whole,
  and no batch is ever partly there.
- Two processes on one folder see each other's adds, updates and deletes on their next
  read, and concurrent writers leave every row and an intact SQLite file.
- Closing and reopening gives back exactly the records a sequence of writes produced.

Child processes run ``tests/_workers/durability_worker.py``; this module imports the
same file for the helpers that derive each row from its batch and row numbers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentdb

WORKER_PATH = Path(__file__).parent / "_workers" / "durability_worker.py"
_spec = importlib.util.spec_from_file_location("_durability_worker", WORKER_PATH)
assert _spec is not None and _spec.loader is not None
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

DIMENSION = worker.DIMENSION
INCLUDE_ALL = ["vectors", "documents", "metadatas"]
# How long one line from a child may take before the test fails instead of hanging.
LINE_TIMEOUT = 30.0


# -- child processes -------------------------------------------------------------------


class Child:
    """A worker process with line-based stdin/stdout and reads that time out.

    stdout and stderr are drained by threads into queues, so a read never blocks past
    its timeout and a chatty stderr never stalls the child. Always used as a context
    manager: leaving it kills the process if it still runs and reaps it.
    """

    def __init__(self, *args: object) -> None:
        self.args = [str(a) for a in args]
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER_PATH), *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # end of output

    def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        process = self.process
        if process.poll() is None:
            process.kill()
        process.wait(timeout=LINE_TIMEOUT)
        for thread in self._threads:
            thread.join(timeout=LINE_TIMEOUT)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):  # stdin of a dead child: broken pipe
                    stream.close()

    def stderr(self) -> str:
        return "".join(self._stderr)

    def readline(self, timeout: float = LINE_TIMEOUT) -> str:
        """The next stdout line; fails on timeout or when the child's output ended."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"child {self.args} said nothing for {timeout} s\n{self.stderr()}")
        if line is None:
            self.process.wait(timeout=LINE_TIMEOUT)
            pytest.fail(
                f"child {self.args} ended (exit {self.process.returncode}) instead of "
                f"answering\n{self.stderr()}"
            )
        return line

    def remaining_lines(self) -> list[str]:
        """Every line left once the child has ended (it must have ended)."""
        lines = []
        while True:
            line = self._lines.get(timeout=LINE_TIMEOUT)
            if line is None:
                return lines
            lines.append(line)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def request(self, **command: Any) -> Any:
        """Send one JSON command to a ``serve`` child; its result (it must succeed)."""
        self.send(json.dumps(command))
        answer = json.loads(self.readline())
        assert answer["ok"], f"child failed {command['op']}: {answer['error']}"
        return answer["result"]

    def finish(self) -> None:
        """Wait for a child that is ending on its own, and require a clean exit."""
        try:
            code = self.process.wait(timeout=LINE_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"child {self.args} did not exit\n{self.stderr()}")
        assert code == 0, f"child {self.args} exited {code}\n{self.stderr()}"


def serve(folder: Path, collection: str) -> Child:
    child = Child("serve", folder, collection)
    try:
        assert json.loads(child.readline()) == {"ok": True, "result": "READY"}
    except BaseException:
        child.close()
        raise
    return child


# -- helpers ---------------------------------------------------------------------------


def create(db: latentdb.Database, name: str) -> latentdb.Collection:
    return db.create_collection(
        name, dimension=DIMENSION, metric=worker.METRIC, embedder=None, model=worker.MODEL
    )


def canonical(metadata: dict[str, Any] | None) -> str:
    """Metadata as sorted JSON: tells True from 1 and 1 from 1.0, unlike ``==``."""
    return json.dumps(metadata, sort_keys=True)


def integrity(folder: Path) -> str:
    with contextlib.closing(sqlite3.connect(folder / "latentdb.sqlite3")) as connection:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(row[0]) for row in rows)


def parse_id(record_id: str) -> tuple[str, int, int]:
    """(prefix, batch, row) of an id made by ``worker.row_id``."""
    head, row = record_id.rsplit("-", 1)
    split = len(head.rstrip("0123456789"))
    return head[:split], int(head[split:]), int(row)


def assert_rows_exact(got: latentdb.GetResult) -> None:
    """Every record read equals the row its id was derived from, field by field."""
    assert got.vectors is not None and got.documents is not None and got.metadatas is not None
    for position, record_id in enumerate(got.ids):
        prefix, batch, row = parse_id(record_id)
        expected = worker.row_vector(prefix, batch, row)
        assert got.vectors[position].dtype == np.float32
        assert np.array_equal(got.vectors[position], expected), record_id
        assert got.documents[position] == worker.row_document(prefix, batch, row)
        assert canonical(got.metadatas[position]) == canonical(
            worker.row_metadata(prefix, batch, row)
        )


def assert_nearest_is_itself(
    collection: latentdb.Collection, ids: list[str], vectors: np.ndarray
) -> None:
    """Querying each stored vector finds its own id first, at distance ~0."""
    found = collection.query(vectors=vectors, k=1)
    assert found.distances is not None
    assert [hits[0] if hits else None for hits in found.ids] == ids
    assert np.all(found.distances[:, 0] <= 1e-4)


# -- 1. crash safety -------------------------------------------------------------------

CRASH_BATCH = 50


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", range(5))
def test_sigkill_keeps_acknowledged_batches_whole(tmp_path: Path, seed: int) -> None:
    chance = random.Random(seed)
    folder = tmp_path / "db"
    acks_before_kill = chance.randint(1, 25)
    delay = chance.uniform(0.0, 0.05)

    with Child("write", folder, "crash", "b", 0, CRASH_BATCH) as child:
        assert child.readline() == "READY"
        acked: list[int] = []
        while len(acked) < acks_before_kill:
            line = child.readline()
            assert line == f"ACK {len(acked)}", line
            acked.append(len(acked))
        time.sleep(delay)
        child.process.send_signal(signal.SIGKILL)
        assert child.process.wait(timeout=LINE_TIMEOUT) == -signal.SIGKILL
        # ACKs the child printed before it died are acknowledged writes too: a line only
        # reaches the pipe after its add() returned.
        for line in child.remaining_lines():
            assert line == f"ACK {len(acked)}", line
            acked.append(len(acked))
    last_acked = acked[-1]

    assert integrity(folder) == "ok"
    with latentdb.connect(folder) as db:
        collection = db.get_collection("crash")
        got = collection.get(include=INCLUDE_ALL)
        rows_by_batch: dict[int, set[int]] = defaultdict(set)
        for record_id in got.ids:
            prefix, batch, row = parse_id(record_id)
            assert prefix == "b"
            rows_by_batch[batch].add(row)
        all_rows = set(range(CRASH_BATCH))
        partial = {b: len(rows) for b, rows in rows_by_batch.items() if rows != all_rows}
        assert not partial, f"batches only partly stored (batch: rows): {partial}"
        lost = [b for b in range(last_acked + 1) if b not in rows_by_batch]
        assert not lost, f"acknowledged batches lost: {lost} (last ACK {last_acked})"
        # Only the batch in flight when the kill landed may be there unacknowledged.
        assert set(rows_by_batch) <= set(range(last_acked + 2))
        assert_rows_exact(got)
        assert collection.count() == len(got.ids) == CRASH_BATCH * len(rows_by_batch)
        assert got.vectors is not None
        first_rows = [i for i, record_id in enumerate(got.ids) if record_id.endswith("-0")]
        assert_nearest_is_itself(
            collection, [got.ids[i] for i in first_rows], got.vectors[first_rows]
        )

        # The database takes writes again, and they last.
        fresh = np.full(DIMENSION, 99.5, dtype=np.float32)
        collection.add(["after-crash"], vectors=fresh[None], documents=["new"], model=worker.MODEL)
        assert collection.count() == len(got.ids) + 1
        found = collection.query(vectors=fresh, k=1)
        assert found.ids == [["after-crash"]]
    with latentdb.connect(folder) as db:
        collection = db.get_collection("crash")
        assert collection.count() == len(got.ids) + 1
        again = collection.get(["after-crash"], include=INCLUDE_ALL)
        assert again.vectors is not None
        assert np.array_equal(again.vectors[0], fresh)
        assert again.documents == ["new"]
    assert integrity(folder) == "ok"


# -- 2. two processes on one folder ----------------------------------------------------


def rows(prefix: str, batch: int, size: int) -> dict[str, Any]:
    ids, vectors, documents, metadatas = worker.batch_rows(prefix, batch, size)
    return {
        "ids": ids,
        "vectors": vectors,
        "documents": documents,
        "metadatas": metadatas,
        "model": worker.MODEL,
    }


def child_get(child: Child, ids: list[str] | None) -> latentdb.GetResult:
    result = child.request(op="get", ids=ids)
    return latentdb.GetResult(
        ids=result["ids"],
        vectors=np.asarray(result["vectors"], dtype=np.float32).reshape(-1, DIMENSION),
        documents=result["documents"],
        metadatas=result["metadatas"],
    )


def child_query(child: Child, vector: np.ndarray, k: int) -> tuple[list[str], list[float]]:
    result = child.request(op="query", vector=vector.tolist(), k=k)
    return result["ids"], result["distances"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_second_process_sees_writes_and_deletes(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    with latentdb.connect(folder) as db:
        collection = create(db, "shared")
        first = rows("a", 0, 10)
        collection.add(**first)
        assert collection.count() == 10
        # Load our own index now, so later reads must catch up with the child's writes.
        assert collection.query(vectors=first["vectors"][0], k=1).ids == [["a0-0"]]

        with serve(folder, "shared") as child:
            # The child loads its index on its first query.
            assert child.request(op="count") == 10
            ids, distances = child_query(child, first["vectors"][3], 1)
            assert ids == ["a0-3"] and distances[0] <= 1e-4

            # Parent adds -> the child's next count, get and query see them.
            second = rows("a", 1, 10)
            collection.add(**second)
            assert child.request(op="count") == 20
            got = child_get(child, second["ids"])
            assert got.ids == second["ids"]
            assert_rows_exact(got)
            ids, distances = child_query(child, second["vectors"][7], 1)
            assert ids == ["a1-7"] and distances[0] <= 1e-4
            ids, _ = child_query(child, second["vectors"][7], 50)
            assert sorted(ids) == sorted(first["ids"] + second["ids"])

            # Child adds -> the parent's next count, get and query see them.
            theirs = rows("c", 0, 10)
            child.request(
                op="add",
                ids=theirs["ids"],
                vectors=theirs["vectors"].tolist(),
                documents=theirs["documents"],
                metadatas=theirs["metadatas"],
            )
            assert collection.count() == 30
            got = collection.get(theirs["ids"], include=INCLUDE_ALL)
            assert got.ids == theirs["ids"]
            assert_rows_exact(got)
            assert_nearest_is_itself(collection, theirs["ids"], theirs["vectors"])
            everything = collection.query(vectors=theirs["vectors"][0], k=50).ids[0]
            assert sorted(everything) == sorted(first["ids"] + second["ids"] + theirs["ids"])

            # Parent deletes -> gone for the child: not counted, not got, never queried.
            assert collection.delete(["a0-3", "a1-7"]) == 2
            assert child.request(op="count") == 28
            assert child_get(child, ["a0-3", "a1-7", "a0-4"]).ids == ["a0-4"]
            for vector in (first["vectors"][3], second["vectors"][7]):
                ids, _ = child_query(child, vector, 50)
                assert len(ids) == 28
                assert "a0-3" not in ids and "a1-7" not in ids

            # Child deletes -> gone for the parent.
            assert child.request(op="delete", ids=["c0-0", "c0-5", "missing"]) == 2
            assert collection.count() == 26
            assert collection.get(["c0-0", "c0-5", "c0-1"]).ids == ["c0-1"]
            for vector in (theirs["vectors"][0], theirs["vectors"][5]):
                ids = collection.query(vectors=vector, k=50).ids[0]
                assert len(ids) == 26
                assert "c0-0" not in ids and "c0-5" not in ids

            # Parent updates a vector -> the child finds the record at its new place only.
            moved = np.full(DIMENSION, -7.25, dtype=np.float32)
            collection.update(
                ["a0-4"], vectors=moved[None], documents=["moved"], model=worker.MODEL
            )
            got = child_get(child, ["a0-4"])
            assert got.vectors is not None
            assert np.array_equal(got.vectors[0], moved)
            assert got.documents == ["moved"]
            ids, distances = child_query(child, moved, 1)
            assert ids == ["a0-4"] and distances[0] <= 1e-4
            ids, _ = child_query(child, first["vectors"][4], 1)
            assert ids != ["a0-4"]

            # Child upserts (replacing one record, adding one) -> the parent sees both.
            replaced = np.full(DIMENSION, 3.5, dtype=np.float32)
            added = np.full(DIMENSION, -3.5, dtype=np.float32)
            child.request(
                op="upsert",
                ids=["c0-1", "c0-new"],
                vectors=[replaced.tolist(), added.tolist()],
                documents=["replaced", None],
                metadatas=[{"v": 2}, None],
            )
            assert collection.count() == 27
            got = collection.get(["c0-1", "c0-new"], include=INCLUDE_ALL)
            assert got.ids == ["c0-1", "c0-new"]
            assert got.vectors is not None
            assert np.array_equal(got.vectors, np.stack([replaced, added]))
            assert got.documents == ["replaced", None]
            assert got.metadatas == [{"v": 2}, None]
            assert_nearest_is_itself(collection, ["c0-1", "c0-new"], np.stack([replaced, added]))

            # Child deletes and re-adds an id with a new vector -> one record, new vector.
            assert child.request(op="delete", ids=["a1-0"]) == 1
            reborn = np.full(DIMENSION, 11.0, dtype=np.float32)
            child.request(op="add", ids=["a1-0"], vectors=[reborn.tolist()])
            ids = collection.query(vectors=reborn, k=50).ids[0]
            assert ids[0] == "a1-0" and ids.count("a1-0") == 1 and len(ids) == 27
            ids = collection.query(vectors=second["vectors"][0], k=1).ids[0]
            assert ids != ["a1-0"]

            # Both agree on the whole collection at the end.
            ours = collection.get(include=INCLUDE_ALL)
            shown = child_get(child, None)
            assert shown.ids == ours.ids
            assert np.array_equal(shown.vectors, ours.vectors)
            assert shown.documents == ours.documents
            assert shown.metadatas == ours.metadatas

            child.send(json.dumps({"op": "quit"}))
            child.finish()
    assert integrity(folder) == "ok"


CONCURRENT_BATCHES = 20
CONCURRENT_BATCH = 25


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_concurrent_writers_keep_every_row(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    prefixes = ("p", "q")
    with latentdb.connect(folder) as db:
        collection = create(db, "busy")
        seed_rows = rows("s", 0, CONCURRENT_BATCH)
        collection.add(**seed_rows)
        # Load our index before the writers start, so it has to catch up afterwards.
        assert_nearest_is_itself(collection, seed_rows["ids"], seed_rows["vectors"])

        with contextlib.ExitStack() as stack:
            writers = [
                stack.enter_context(
                    Child(
                        "write",
                        folder,
                        "busy",
                        prefix,
                        CONCURRENT_BATCHES,
                        CONCURRENT_BATCH,
                        "--wait-go",
                    )
                )
                for prefix in prefixes
            ]
            for writer in writers:
                assert writer.readline() == "READY"
            for writer in writers:
                writer.send("GO")

            # Read while they write: every read sees whole batches only, never fewer
            # rows than before.
            seen = CONCURRENT_BATCH
            expected_total = CONCURRENT_BATCH * (1 + len(prefixes) * CONCURRENT_BATCHES)
            deadline = time.monotonic() + 60
            while seen < expected_total and time.monotonic() < deadline:
                count = collection.count()
                assert count % CONCURRENT_BATCH == 0, count
                assert count >= seen
                seen = count
                ids = collection.query(vectors=seed_rows["vectors"][0], k=5).ids[0]
                assert ids[0] == "s0-0"
                time.sleep(0.005)

            for writer in writers:
                for batch in range(CONCURRENT_BATCHES):
                    assert writer.readline() == f"ACK {batch}"
                assert writer.readline() == "DONE"
                writer.finish()

        expected_ids = list(seed_rows["ids"])
        for prefix in prefixes:
            for batch in range(CONCURRENT_BATCHES):
                expected_ids += worker.batch_rows(prefix, batch, CONCURRENT_BATCH)[0]
        assert collection.count() == len(expected_ids)
        got = collection.get(include=INCLUDE_ALL)
        assert sorted(got.ids) == sorted(expected_ids)
        assert_rows_exact(got)
        # Our index caught up with 800 rows written by others.
        assert got.vectors is not None
        assert_nearest_is_itself(collection, got.ids, got.vectors)
        # Each writer's batches were stored in its own order.
        for prefix in prefixes:
            mine = [parse_id(i)[1] for i in got.ids if i.startswith(prefix)]
            assert mine == sorted(mine)

    assert integrity(folder) == "ok"
    with latentdb.connect(folder) as db:
        reopened = db.get_collection("busy")
        again = reopened.get(include=INCLUDE_ALL)
        assert again.ids == got.ids
        assert np.array_equal(again.vectors, got.vectors)
        assert_nearest_is_itself(reopened, again.ids, again.vectors)


RACE_ROUNDS = 80
RACERS = ("w", "x", "y", "z")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_processes_racing_to_create_the_same_database(tmp_path: Path) -> None:
    """Four processes open a folder that does not exist yet at the same moment.

    Each round is a new folder; all of them must open it, create or get the one
    collection, and write. Repeated because one round hits the race only sometimes.
    """
    with contextlib.ExitStack() as stack:
        racers = [
            stack.enter_context(Child("race", tmp_path, "race", prefix, RACE_ROUNDS, 2, 10))
            for prefix in RACERS
        ]
        for racer in racers:
            assert racer.readline() == "LOADED"
        failures = []
        for round_number in range(RACE_ROUNDS):
            for racer in racers:
                racer.send("GO")
            for racer in racers:
                line = racer.readline()
                if line != f"DONE {round_number}":
                    failures.append(line)
        for racer in racers:
            racer.finish()
    assert not failures, (
        f"{len(failures)} of {RACE_ROUNDS * len(RACERS)} opens of a new database by "
        f"racing processes failed:\n" + "\n".join(failures)
    )
    for round_number in range(RACE_ROUNDS):
        folder = tmp_path / f"round{round_number}"
        assert integrity(folder) == "ok"
        with latentdb.connect(folder) as db:
            assert db.list_collections() == ["race"]
            got = db.get_collection("race").get(include=INCLUDE_ALL)
            assert len(got.ids) == len(RACERS) * 2 * 10
            assert_rows_exact(got)


def test_opening_a_new_database_waits_for_a_held_lock(tmp_path: Path) -> None:
    """The race above, made deterministic: a new, still empty SQLite file whose write
    lock is held by another connection (as a second process holds it while it writes a
    database) must make connect wait for the lock (the store's busy timeout), not fail.
    (latentdb creates its own files whole, under another name; a file of 0 bytes is
    refused, tests/test_faults.py.)"""
    folder = tmp_path / "db"
    folder.mkdir()
    holder = sqlite3.connect(
        folder / "latentdb.sqlite3", isolation_level=None, check_same_thread=False
    )
    try:
        holder.execute("PRAGMA user_version = 0")  # writes the header: a SQLite file
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.5, holder.execute, args=("COMMIT",))
        release.start()
        try:
            started = time.monotonic()
            with latentdb.connect(folder) as db:
                waited = time.monotonic() - started
                collection = create(db, "waited")
                collection.add(**rows("w", 0, 5))
                assert collection.count() == 5
        finally:
            release.join()
    finally:
        holder.close()
    assert waited >= 0.4
    assert integrity(folder) == "ok"


# -- 3. reopen gives back exactly what was acknowledged --------------------------------

Record = tuple[np.ndarray, str | None, dict[str, Any] | None]

DOCUMENTS = ("plain", "naïve café", "emoji ☕🙂", "", "line\nbreak", "quote ' \" \\")


def random_metadata(chance: random.Random) -> dict[str, Any] | None:
    if chance.random() < 0.2:
        return None
    return {
        "group": chance.randrange(4),
        "flag": chance.random() < 0.5,
        "score": chance.uniform(-1e6, 1e6),
        "big": chance.randrange(-(2**63), 2**63),
        "name": chance.choice(DOCUMENTS),
        "one": chance.choice([1, 1.0, True, "1"]),
    }


def random_document(chance: random.Random) -> str | None:
    return None if chance.random() < 0.2 else chance.choice(DOCUMENTS)


def assert_matches_model(collection: latentdb.Collection, model: dict[str, Record]) -> None:
    assert collection.count() == len(model)
    got = collection.get(include=INCLUDE_ALL)
    # get() without ids lists records in insertion order; an upsert keeps a record's
    # place, a delete and re-add moves it to the end, like a dict.
    assert got.ids == list(model)
    assert got.vectors is not None and got.documents is not None and got.metadatas is not None
    expected_vectors = np.stack([record[0] for record in model.values()])
    assert got.vectors.dtype == np.float32
    assert np.array_equal(got.vectors, expected_vectors)
    assert got.documents == [record[1] for record in model.values()]
    assert [canonical(m) for m in got.metadatas] == [
        canonical(record[2]) for record in model.values()
    ]
    # By id, in an arbitrary order, with a missing id left out.
    some = list(model)[::3][::-1]
    picked = collection.get([*some, "never-stored"], include=INCLUDE_ALL)
    assert picked.ids == some
    assert picked.vectors is not None
    assert np.array_equal(picked.vectors, np.stack([model[i][0] for i in some]))
    assert_nearest_is_itself(collection, list(model), expected_vectors)


@pytest.mark.parametrize("seed", range(3))
def test_reopen_returns_exactly_the_acknowledged_records(tmp_path: Path, seed: int) -> None:
    chance = random.Random(seed)
    numbers = np.random.default_rng(seed)
    folder = tmp_path / "db"
    model: dict[str, Record] = {}
    deleted: list[str] = []
    counter = 0

    def vectors(count: int) -> np.ndarray:
        return numbers.standard_normal((count, DIMENSION)).astype(np.float32)

    def new_ids(count: int) -> list[str]:
        nonlocal counter
        counter += count
        return [f"id-{n}" for n in range(counter - count, counter)]

    with latentdb.connect(folder) as db:
        collection = create(db, "model")
        for _ in range(120):
            op = chance.choice(["add", "add", "upsert", "update", "delete", "where", "bad"])
            if op == "add" or not model:
                ids = new_ids(chance.randint(1, 20))
                if deleted and chance.random() < 0.5:  # bring a deleted id back
                    ids.append(deleted.pop(chance.randrange(len(deleted))))
                matrix = vectors(len(ids))
                documents = [random_document(chance) for _ in ids]
                metadatas = [random_metadata(chance) for _ in ids]
                collection.add(
                    ids,
                    vectors=matrix,
                    documents=documents,
                    metadatas=metadatas,
                    model=worker.MODEL,
                )
                for i, record_id in enumerate(ids):
                    model[record_id] = (matrix[i], documents[i], metadatas[i])
            elif op == "upsert":
                ids = chance.sample(list(model), min(len(model), chance.randint(1, 8)))
                ids += new_ids(chance.randint(0, 5))
                matrix = vectors(len(ids))
                documents = [random_document(chance) for _ in ids]
                metadatas = [random_metadata(chance) for _ in ids]
                if chance.random() < 0.5:  # upsert replaces every field, even unsent ones
                    collection.upsert(ids, vectors=matrix, model=worker.MODEL)
                    documents, metadatas = [None] * len(ids), [None] * len(ids)
                else:
                    collection.upsert(
                        ids,
                        vectors=matrix,
                        documents=documents,
                        metadatas=metadatas,
                        model=worker.MODEL,
                    )
                for i, record_id in enumerate(ids):
                    model[record_id] = (matrix[i], documents[i], metadatas[i])
            elif op == "update":
                ids = chance.sample(list(model), min(len(model), chance.randint(1, 8)))
                fields = chance.choice(
                    [{"v"}, {"d"}, {"m"}, {"v", "d"}, {"d", "m"}, {"v", "d", "m"}]
                )
                matrix = vectors(len(ids)) if "v" in fields else None
                documents = [random_document(chance) for _ in ids] if "d" in fields else None
                metadatas = [random_metadata(chance) for _ in ids] if "m" in fields else None
                collection.update(
                    ids,
                    vectors=matrix,
                    documents=documents,
                    metadatas=metadatas,
                    model=worker.MODEL,
                )
                for i, record_id in enumerate(ids):
                    vector, document, metadata = model[record_id]
                    model[record_id] = (
                        vector if matrix is None else matrix[i],
                        document if documents is None else documents[i],
                        metadata if metadatas is None else metadatas[i],
                    )
            elif op == "delete":
                ids = chance.sample(list(model), min(len(model), chance.randint(1, 6)))
                assert collection.delete([*ids, "never-stored"]) == len(ids)
                for record_id in ids:
                    del model[record_id]
                deleted += ids
            elif op == "where":
                group = chance.randrange(4)
                doomed = [i for i, (_, _, meta) in model.items() if meta and meta["group"] == group]
                assert collection.delete(where={"group": group}) == len(doomed)
                for record_id in doomed:
                    del model[record_id]
                deleted += doomed
            else:  # a failing write changes nothing
                before = list(model)
                ids = [*new_ids(3), chance.choice(before)]
                with pytest.raises(latentdb.DuplicateIdError):
                    collection.add(ids, vectors=vectors(len(ids)), model=worker.MODEL)
                with pytest.raises(latentdb.RecordNotFoundError):
                    collection.update([before[0], "never-stored"], documents=["x", "y"])
                assert collection.get(ids[:3]).ids == []
            if chance.random() < 0.1:
                assert_matches_model(collection, model)
        assert_matches_model(collection, model)

    assert integrity(folder) == "ok"
    with latentdb.connect(folder) as db:
        assert db.list_collections() == ["model"]
        reopened = db.get_collection("model")
        assert reopened.space.dimension == DIMENSION and reopened.space.metric == "l2"
        assert_matches_model(reopened, model)
    # And once more in a fresh process, which has never seen these writes in memory.
    with serve(folder, "model") as child:
        assert child.request(op="count") == len(model)
        shown = child_get(child, None)
        assert shown.ids == list(model)
        assert np.array_equal(shown.vectors, np.stack([r[0] for r in model.values()]))
        assert shown.documents == [r[1] for r in model.values()]
        assert [canonical(m) for m in shown.metadatas or []] == [
            canonical(r[2]) for r in model.values()
        ]
        child.send(json.dumps({"op": "quit"}))
        child.finish()
