"""Writer child of bench/soak.py: runs one plan of batches until it is killed.

``soak.py`` imports this file too, for the functions that derive every stored value
from (writer, batch, row), so the parent knows each value without it being sent back.

Protocol (one line each, flushed):

1. The child imports latentdb and prints ``LOADED`` (children are started ahead of
   their round, so a round does not wait for the import).
2. It reads one JSON line: ``{"folder", "collection", "writer", "batches": [...]}``,
   each batch ``{"op": "add" | "upsert" | "update" | "delete" | "optimize",
   "ids": [...], "fields": "all" | "vectors" | "documents" | "metadatas"}``.
3. It opens the database and the collection and prints ``READY``.
4. Per batch ``b``: ``BEGIN b op``, the call, then ``ACK b`` once the call has
   returned. A write that raises prints ``ERR b Type: message`` and the child stops
   writing (``STOP``): the parent resolves that batch like the one in flight at a kill.
   An ``optimize()`` that raises prints ``ERR`` and the plan goes on.
5. After the last batch: ``DONE``, then it waits (blocked on stdin) to be killed.
"""

from __future__ import annotations

import json
import sys
import zlib
from typing import Any

import numpy as np

# The model the soak's vectors are written as (collections require writes of vectors
# to name it).
MODEL = "soak/random"

DIMENSION = 32
FIELDS = ("vectors", "documents", "metadatas")


def _seed(writer: str, batch: int, row: int) -> list[int]:
    return [zlib.crc32(writer.encode()), batch, row]


def row_vector(writer: str, batch: int, row: int) -> np.ndarray:
    """A unit-length float32 vector fixed by (writer, batch, row).

    Normalized in float64 and rounded once: a cosine collection keeps a row that is
    unit length already bit for bit, so the stored vector must equal this one exactly.
    """
    raw = np.random.default_rng(_seed(writer, batch, row)).standard_normal(DIMENSION)
    return (raw / np.linalg.norm(raw)).astype(np.float32)


def row_document(writer: str, batch: int, row: int) -> str:
    return f"soak {writer} batch {batch} row {row}"


def row_metadata(writer: str, batch: int, row: int) -> dict[str, Any]:
    return {"writer": writer, "batch": batch, "row": row, "weight": batch + row / 8}


def batch_values(
    writer: str, batch: int, size: int
) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    """Vectors (size, DIMENSION), documents and metadatas of one batch."""
    rows = range(size)
    vectors = np.stack([row_vector(writer, batch, r) for r in rows]) if size else None
    documents = [row_document(writer, batch, r) for r in rows]
    metadatas = [row_metadata(writer, batch, r) for r in rows]
    return (
        np.empty((0, DIMENSION), np.float32) if vectors is None else vectors,
        documents,
        metadatas,
    )


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_batch(collection: Any, writer: str, number: int, batch: dict[str, Any]) -> None:
    op, ids = batch["op"], batch.get("ids", [])
    if op == "optimize":
        collection.optimize()
        return
    if op == "delete":
        collection.delete(ids)
        return
    vectors, documents, metadatas = batch_values(writer, number, len(ids))
    if op in ("add", "upsert"):
        getattr(collection, op)(ids, vectors=vectors, documents=documents, metadatas=metadatas)
        return
    fields = batch.get("fields", "all")
    collection.update(
        ids,
        vectors=vectors if fields in ("all", "vectors") else None,
        documents=documents if fields in ("all", "documents") else None,
        metadatas=metadatas if fields in ("all", "metadatas") else None,
        model=MODEL,
    )


def main() -> None:
    import latentdb

    say("LOADED")
    line = sys.stdin.readline()
    if not line:
        return
    plan = json.loads(line)
    db = latentdb.connect(plan["folder"])
    collection = db.get_collection(plan["collection"])
    say("READY")
    writer = plan["writer"]
    for number, batch in enumerate(plan["batches"]):
        say(f"BEGIN {number} {batch['op']}")
        try:
            run_batch(collection, writer, number, batch)
        except Exception as error:  # reported to the parent, which counts it by type
            message = " ".join(str(error).split())[:300]
            say(f"ERR {number} {type(error).__module__}.{type(error).__name__}: {message}")
            if batch["op"] != "optimize":
                say("STOP")
                break
        else:
            say(f"ACK {number}")
    else:
        say("DONE")
    sys.stdin.readline()  # wait for the kill


if __name__ == "__main__":
    main()
