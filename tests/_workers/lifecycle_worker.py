"""Child process for tests/test_lifecycle.py: a writer that the state machine SIGKILLs.

Run as ``python lifecycle_worker.py``. It imports latentdb, prints ``LOADED`` and waits
for one JSON line (so a spare child can be started early and wait, loaded):

``{"folder": ..., "collection": ..., "quiet": seconds, "ops": [op, ...]}``

Then it opens the database, prints ``READY``, runs the operations one by one and prints
``ACK <i>`` once operation ``i`` has returned (``FAIL <i> <error>`` if it raised), then
``DONE``, and waits for its stdin to close. ``quiet`` replaces the pause the index waits
for after the last write before it seals the growing segment in the background, so that
seals run (and are killed) in the child too.

The test module imports this file (by path) for :func:`run_op`, so the parent's own
writes and the child's go through the same code. An op is a dict:
``{"op": "add" | "upsert", "ids", "vectors", "documents", "metadatas"}``,
``{"op": "update", "ids", and any of "vectors", "documents", "metadatas"}``,
``{"op": "delete", "ids"}``, ``{"op": "delete_where", "where"}`` or
``{"op": "optimize"}``; vectors are nested lists (JSON) or a float32 array.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

# The model of every vector written (the collection requires writes of vectors to name it).
MODEL = "test/lifecycle"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_op(collection: Any, op: dict[str, Any]) -> int | None:
    """Apply one operation; the number of rows deleted for the delete kinds."""
    kind = op["op"]
    if kind in ("add", "upsert", "update"):
        vectors = op.get("vectors")
        getattr(collection, kind)(
            op["ids"],
            vectors=None if vectors is None else np.asarray(vectors, dtype=np.float32),
            documents=op.get("documents"),
            metadatas=op.get("metadatas"),
            # The vectors' model: the collection's unless the op names another (or None).
            model=op.get("model", MODEL),
        )
        return None
    if kind == "delete":
        return int(collection.delete(op["ids"]))
    if kind == "delete_where":
        return int(collection.delete(where=op["where"]))
    if kind == "optimize":
        collection.optimize()
        return None
    raise ValueError(f"unknown op {kind!r}")


def main() -> None:
    import latentdb
    from latentdb.index import _segments

    say("LOADED")
    job = json.loads(sys.stdin.readline())
    # A test hook, not an API: seal after this quiet time instead of the default.
    _segments._SEAL_QUIET_SECONDS = float(job["quiet"])
    db = latentdb.connect(job["folder"])
    collection = db.get_collection(job["collection"])
    say("READY")
    for position, op in enumerate(job["ops"]):
        try:
            run_op(collection, op)
        except latentdb.LatentDBError as error:
            say(f"FAIL {position} {type(error).__name__}: {error}")
            break
        say(f"ACK {position}")
    say("DONE")
    sys.stdin.read()  # until the parent kills us or closes the pipe
    db.close()


if __name__ == "__main__":
    main()
