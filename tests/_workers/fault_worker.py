"""Child process for tests/test_faults.py: runs latentdb where the test process must not
(as another user, or under a file size limit), and reports in one JSON line.

Run as ``python fault_worker.py MODE FOLDER``; the last stdout line is the report.

``read FOLDER``
    Warms up first (imports, and every code path the read takes, on a scratch database),
    then, when running as root, drops to uid/gid 65534 ("nobody"): root writes through
    any file mode, so only another user meets a read-only folder. Then opens FOLDER and
    reports, per collection, its count, every id, and the ids of an exact and of an
    ANN query; and for each kind of write the error class it raised and that error's
    cause class.

``fill FOLDER BATCHES``
    Opens FOLDER, ignores SIGXFSZ and sets RLIMIT_FSIZE 1 MiB above the largest file of
    the database, then adds batches of :data:`BATCH` rows to collection "fill" until one
    fails. Reports the batches acknowledged, the error, the count right after it, and
    whether a write succeeds once the limit is lifted again (in the same process).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import latentdb

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

DIMENSION = 16
BATCH = 100
NOBODY = 65534


def batch(prefix: str, number: int, size: int = BATCH) -> dict[str, Any]:
    """The ids, vectors (and their model) and documents of one batch, the same in
    parent and child."""
    rng = np.random.default_rng([sum(map(ord, prefix)), number])
    return {
        "ids": [f"{prefix}{number}-{row}" for row in range(size)],
        "vectors": rng.standard_normal((size, DIMENSION)).astype(np.float32),
        "model": MODEL,
        "documents": [f"{prefix} batch {number} row {row}" for row in range(size)],
        "metadatas": [{"batch": number, "row": row} for row in range(size)],
    }


def failure(error: BaseException) -> dict[str, Any]:
    """What a test needs to know about an error: its class, its cause's, notes."""
    cause = error.__cause__
    return {
        "error": type(error).__name__,
        "message": str(error),
        "cause": None if cause is None else type(cause).__name__,
        "cause_message": None if cause is None else str(cause),
        "notes": list(getattr(error, "__notes__", [])),
    }


def attempt(action: Any) -> dict[str, Any] | None:
    try:
        action()
    except Exception as error:
        return failure(error)
    return None


def read_everything(folder: Path) -> dict[str, Any]:
    """Open, read every collection, and try every kind of write."""
    query = np.ones(DIMENSION, dtype=np.float32)
    report: dict[str, Any] = {"collections": {}, "writes": {}}
    with warnings.catch_warnings(record=True) as warned, latentdb.connect(folder) as db:
        warnings.simplefilter("always")
        report["read_only"] = db.store.read_only
        for name in db.list_collections():
            collection = db.get_collection(name)
            report["collections"][name] = {
                "count": collection.count(),
                "ids": sorted(collection.get().ids),
                "exact": collection.query(vectors=query, k=5, exact=True).ids[0],
                "query": collection.query(vectors=query, k=5).ids[0],
                "filtered": collection.get(where={"batch": 0}).ids,
            }
        first = db.get_collection(db.list_collections()[0])
        one = batch("new", 0, 1)
        writes = {
            "add": lambda: first.add(**one),
            "upsert": lambda: first.upsert(**one),
            "update": lambda: first.update(first.get(limit=1).ids, documents=["changed"]),
            "delete": lambda: first.delete(first.get(limit=1).ids),
            "create_collection": lambda: db.create_collection(
                "another", dimension=DIMENSION, embedder=None, model=MODEL
            ),
            "optimize": lambda: first.optimize(),  # writes index files, not the store
        }
        for kind, action in writes.items():
            report["writes"][kind] = attempt(action)
    # None expected: a saved segment (its graph, and the pack it maps) loads read-only.
    report["warnings"] = [str(w.message) for w in warned]
    return report


def warm_up() -> None:
    """Run the read path once as we are, so that no import happens after dropping to
    "nobody" (who may not read the interpreter's own files, e.g. under /root)."""
    with tempfile.TemporaryDirectory() as scratch:
        with latentdb.connect(scratch) as db:
            for index in ("flat", "hnsw"):
                collection = db.create_collection(
                    index, dimension=DIMENSION, embedder=None, metric="l2", index=index, model=MODEL
                )
                collection.add(**batch(index, 0))
                collection.optimize()
        read_everything(Path(scratch))


def read(folder: Path) -> None:
    warm_up()
    if os.geteuid() == 0:
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    report = read_everything(folder)
    report["uid"] = os.geteuid()
    print(json.dumps(report), flush=True)


def fill(folder: Path, batches: int) -> None:
    import resource

    report: dict[str, Any] = {"acknowledged": 0}
    with latentdb.connect(folder) as db:
        collection = db.get_or_create_collection(
            "fill", dimension=DIMENSION, embedder=None, metric="l2", model=MODEL
        )
        largest = max(path.stat().st_size for path in folder.iterdir() if path.is_file())
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + (1 << 20), resource.RLIM_INFINITY))
        for number in range(batches):
            try:
                collection.add(**batch("fill", number))
            except Exception as error:
                report.update(failure(error))
                break
            report["acknowledged"] = number + 1
        report["count_after_error"] = collection.count()
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        collection.add(**batch("after", 0))
        report["count_after_lifting"] = collection.count()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    mode, target = sys.argv[1], Path(sys.argv[2])
    if mode == "read":
        read(target)
    elif mode == "fill":
        fill(target, int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
