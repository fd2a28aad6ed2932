"""Child process for tests/test_durability.py: writes batches, or serves a line protocol.

Run as ``python durability_worker.py MODE ...``; the test module also imports this file
(by path) for the helpers that derive every row from its batch and row numbers, so parent
and child agree on each stored value without passing it around.

Modes:

``write FOLDER COLLECTION PREFIX BATCHES BATCH_SIZE [--wait-go]``
    Opens the database, gets or creates the collection, prints ``READY``; with
    ``--wait-go`` waits for a ``GO`` line on stdin. Then adds ``BATCHES`` batches of
    ``BATCH_SIZE`` rows (0 means until killed), printing ``ACK <batch>`` once each ``add``
    has returned, and ``DONE`` at the end.

``race BASE COLLECTION PREFIX ROUNDS BATCHES BATCH_SIZE``
    Imports latentdb and prints ``LOADED``. Then, once per round, waits for ``GO``,
    opens the new database ``BASE/round<r>`` (several children race to create it),
    writes ``BATCHES`` batches and prints ``DONE <r>``, or ``FAIL <r> <error>`` when
    opening or writing raised.

``serve FOLDER COLLECTION``
    Opens the database and answers one JSON command per stdin line with one JSON line:
    ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "Type: message"}``.
    Commands: ``{"op": "count"}``, ``{"op": "get", "ids": [...]}`` (null for all),
    ``{"op": "query", "vector": [...], "k": n}``, ``{"op": "add" | "upsert", "ids": [...],
    "vectors": [[...]], "documents": [...], "metadatas": [...]}``, ``{"op": "update", ...}``
    (fields may be left out), ``{"op": "delete", "ids": [...]}``, ``{"op": "quit"}``.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

DIMENSION = 8
METRIC = "l2"
MODEL = "test"


def row_id(prefix: str, batch: int, row: int) -> str:
    return f"{prefix}{batch}-{row}"


def row_vector(prefix: str, batch: int, row: int) -> np.ndarray:
    """A float32 vector fixed by (prefix, batch, row): the parent recomputes it exactly."""
    tag = sum(ord(c) * 131**i for i, c in enumerate(prefix))
    rng = np.random.default_rng([tag, batch, row])
    return rng.standard_normal(DIMENSION).astype(np.float32)


def row_document(prefix: str, batch: int, row: int) -> str:
    return f"document {prefix} batch {batch} row {row}"


def row_metadata(prefix: str, batch: int, row: int) -> dict[str, Any]:
    return {
        "prefix": prefix,
        "batch": batch,
        "row": row,
        "even": row % 2 == 0,
        "weight": batch + row / 8,
    }


def batch_rows(
    prefix: str, batch: int, size: int
) -> tuple[list[str], np.ndarray, list[str], list[dict[str, Any]]]:
    """Ids, vectors (size, DIMENSION), documents and metadatas of one batch."""
    rows = range(size)
    ids = [row_id(prefix, batch, r) for r in rows]
    vectors = np.stack([row_vector(prefix, batch, r) for r in rows])
    documents = [row_document(prefix, batch, r) for r in rows]
    metadatas = [row_metadata(prefix, batch, r) for r in rows]
    return ids, vectors, documents, metadatas


def open_collection(folder: str, name: str) -> tuple[Any, Any]:
    import latentdb

    db = latentdb.connect(folder)
    collection = db.get_or_create_collection(
        name, dimension=DIMENSION, metric=METRIC, embedder=None, model=MODEL
    )
    return db, collection


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_for_go() -> None:
    if sys.stdin.readline().strip() != "GO":
        raise SystemExit("expected GO")


def write(argv: list[str]) -> None:
    folder, name, prefix, batches, size = argv[:5]
    db, collection = open_collection(folder, name)
    say("READY")
    if "--wait-go" in argv[5:]:
        wait_for_go()
    total = int(batches)
    batch = 0
    while total == 0 or batch < total:
        ids, vectors, documents, metadatas = batch_rows(prefix, batch, int(size))
        collection.add(ids, vectors=vectors, documents=documents, metadatas=metadatas, model=MODEL)
        say(f"ACK {batch}")
        batch += 1
    db.close()
    say("DONE")


def race(argv: list[str]) -> None:
    """Round after round, on ``GO`` open ``BASE/round<r>`` (new) and write to it."""
    base, name, prefix, rounds, batches, size = argv[:6]
    import latentdb  # the slow part, done before the races

    say("LOADED")
    for round_number in range(int(rounds)):
        wait_for_go()
        try:
            db, collection = open_collection(f"{base}/round{round_number}", name)
            with db:
                for batch in range(int(batches)):
                    ids, vectors, documents, metadatas = batch_rows(prefix, batch, int(size))
                    collection.add(
                        ids, vectors=vectors, documents=documents, metadatas=metadatas, model=MODEL
                    )
        except (latentdb.LatentDBError, sqlite3.Error) as error:
            where = traceback.extract_tb(error.__traceback__)[-1]
            say(
                f"FAIL {round_number} {type(error).__module__}.{type(error).__name__}: {error} "
                f"(at {Path(where.filename).name}:{where.lineno} {where.line})"
            )
        else:
            say(f"DONE {round_number}")


def serve(argv: list[str]) -> None:
    import latentdb

    folder, name = argv[:2]
    db = latentdb.connect(folder)
    collection = db.get_collection(name)
    say(json.dumps({"ok": True, "result": "READY"}))
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            break
        try:
            result = run(collection, command)
        except latentdb.LatentDBError as error:
            say(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
        else:
            say(json.dumps({"ok": True, "result": result}))
    db.close()


def run(collection: Any, command: dict[str, Any]) -> Any:
    op = command["op"]
    if op == "count":
        return collection.count()
    if op == "get":
        got = collection.get(command["ids"], include=["vectors", "documents", "metadatas"])
        return {
            "ids": got.ids,
            "vectors": got.vectors.tolist(),
            "documents": got.documents,
            "metadatas": got.metadatas,
        }
    if op == "query":
        found = collection.query(
            vectors=np.asarray(command["vector"], dtype=np.float32),
            k=command["k"],
            include=["distances"],
        )
        return {"ids": found.ids[0], "distances": found.distances[0].tolist()}
    if op in ("add", "upsert", "update"):
        vectors = command.get("vectors")
        getattr(collection, op)(
            command["ids"],
            vectors=None if vectors is None else np.asarray(vectors, dtype=np.float32),
            documents=command.get("documents"),
            metadatas=command.get("metadatas"),
            model=MODEL,
        )
        return None
    if op == "delete":
        return collection.delete(command["ids"])
    raise ValueError(f"unknown op {op!r}")


if __name__ == "__main__":
    modes = {"write": write, "race": race, "serve": serve}
    modes[sys.argv[1]](sys.argv[2:])
