"""The store is the truth, by construction (issue 15): whatever order of optimize,
delete, update, reopen and crash came before, a segment row counts only while the store
holds its key at the sequence the segment indexed; damaged segment files are caught by
their checksums and rebuilt from the store; leftovers of killed builds are swept; two
processes optimizing one collection take turns.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentdb
from latentdb.index import _segments
from tests._segments import clustered, index_folder, segment_folders

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

ROWS = 3000
DIMENSION = 16

KINDS: list[tuple[str, dict[str, Any]]] = [
    ("hnsw", {}),
    ("hnsw-sq8", {}),
    ("ivf-pq", {}),
    ("hnsw", {"reduce": 8}),
]


def churned(folder: Path, kind: str, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The issue's sequence: build, optimize; delete 10 rows and move one; optimize
    again (the segment is extended in place); close. Returns the rows and the moved
    row's new vector."""
    vectors = clustered(ROWS)
    database = latentdb.connect(folder)
    collection = database.create_collection(
        "c", dimension=DIMENSION, embedder=None, model=MODEL, index=kind, **options
    )
    collection.add([f"r{i}" for i in range(ROWS)], vectors=vectors, model=MODEL)
    collection.optimize()
    collection.delete([f"r{i}" for i in range(10)])
    moved = clustered(1, seed=99)
    collection.update(["r20"], vectors=moved, model=MODEL)
    collection.add([f"n{i}" for i in range(40)], vectors=clustered(40, seed=7), model=MODEL)
    collection.optimize()
    database.close()
    return vectors, moved


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "options"), KINDS, ids=lambda v: str(v))
def test_deleted_and_updated_rows_stay_gone_after_optimize_and_reopen(
    tmp_path: Path, kind: str, options: dict[str, Any]
) -> None:
    vectors, moved = churned(tmp_path, kind, options)
    with latentdb.connect(tmp_path) as database:
        collection = database.get_collection("c")
        assert collection.count() == ROWS - 10 + 40
        for exact in (True, False):
            hits = collection.query(vectors=vectors[:30], k=5, exact=exact)
            returned = {i for row in hits.ids for i in row}
            assert None not in returned
            assert not returned & {f"r{i}" for i in range(10)}
            old = collection.query(vectors=vectors[20:21], k=3, exact=exact)
            assert "r20" not in old.ids[0] or old.distances[0][old.ids[0].index("r20")] > 1e-3
            new = collection.query(vectors=moved, k=1, exact=exact)
            assert new.ids[0] == ["r20"]
            assert new.distances[0][0] < 1e-5
        got = collection.get(["r20"], include=["vectors"])
        np.testing.assert_array_equal(got.vectors[0], moved[0])


def test_a_segment_row_counts_only_at_the_sequence_it_indexed(tmp_path: Path) -> None:
    """Reopen after every step of a churn: the live rows are the stored ones."""
    vectors = clustered(1500)
    with latentdb.connect(tmp_path) as database:
        collection = database.create_collection(
            "c",
            dimension=DIMENSION,
            embedder=None,
            index={"kind": "hnsw", "seal_rows": 200},
            model=MODEL,
        )
        collection.add([f"r{i}" for i in range(1500)], vectors=vectors, model=MODEL)
        collection.optimize()
    rng = np.random.default_rng(1)
    expected = {f"r{i}": vectors[i] for i in range(1500)}
    for step in range(4):
        with latentdb.connect(tmp_path) as database:
            collection = database.get_collection("c")
            gone = [f"r{i}" for i in rng.choice(1500, 40, replace=False) if f"r{i}" in expected]
            collection.delete(gone)
            for key in gone:
                del expected[key]
            moved = sorted(expected)[step * 7 : step * 7 + 5]
            new = clustered(5, seed=100 + step)
            collection.update(moved, vectors=new, model=MODEL)
            expected.update(zip(moved, new, strict=True))
            if step % 2:
                collection.optimize()
        with latentdb.connect(tmp_path) as database:
            collection = database.get_collection("c")
            assert collection.count() == len(expected)
            status = collection.index_status()
            assert status.indexed + status.pending == len(expected)
            ids = sorted(expected)
            hits = collection.query(vectors=np.stack([expected[i] for i in ids]), k=1, exact=True)
            assert [row[0] for row in hits.ids] == ids


def test_leftovers_of_killed_builds_are_swept_on_open(tmp_path: Path) -> None:
    vectors = clustered(ROWS)
    with latentdb.connect(tmp_path) as database:
        collection = database.create_collection(
            "c", dimension=DIMENSION, embedder=None, index="hnsw", model=MODEL
        )
        collection.add([f"r{i}" for i in range(ROWS)], vectors=vectors, model=MODEL)
        collection.optimize()
        folder = index_folder(database)
        (segment,) = segment_folders(database)
    (folder / "seg-0123456789ab.partial").mkdir()
    (folder / "seg-0123456789ab.partial" / "index.faiss").write_bytes(b"half")
    (folder / "manifest.json.0123456789ab.partial").write_text("{")
    orphan = folder / "seg-ba9876543210"
    orphan.mkdir()
    with latentdb.connect(tmp_path) as database:
        collection = database.get_collection("c")
        assert collection.query(vectors=vectors[:1], k=1).ids == [["r0"]]
    left = sorted(child.name for child in folder.iterdir())
    assert left == sorted([".build.lock", "manifest.json", segment.name])


def test_close_while_a_seal_is_starting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() used to join the builder thread before it had started (RuntimeError),
    leaving the store open."""
    starting = threading.Event()
    real_thread = threading.Thread

    class SlowToStart(real_thread):
        def start(self) -> None:
            if self.name == "latentdb-seal":
                starting.set()
                time.sleep(0.3)  # the window close() used to fall into
            super().start()

    monkeypatch.setattr(_segments.threading, "Thread", SlowToStart)
    database = latentdb.connect(tmp_path)
    collection = database.create_collection(
        "c",
        dimension=DIMENSION,
        embedder=None,
        index={"kind": "hnsw", "seal_rows": 500},
        model=MODEL,
    )
    collection.add([f"r{i}" for i in range(600)], vectors=clustered(600), model=MODEL)
    index = database.index(collection._state)

    def seal() -> None:
        with index.lock:
            index._maybe_seal()

    sealer = real_thread(target=seal)
    sealer.start()
    assert starting.wait(5)
    database.close()  # raised RuntimeError: cannot join thread before it is started
    sealer.join()
    with pytest.raises(latentdb.DatabaseClosedError):
        collection.count()


OPTIMIZER = """
import sys, latentdb
database = latentdb.connect(sys.argv[1])
collection = database.get_collection("c")
print("READY", flush=True)
sys.stdin.readline()
collection.optimize()
print("DONE", collection.index_status().indexed, flush=True)
database.close()
"""


@pytest.mark.slow
def test_two_processes_optimizing_at_once_take_turns(tmp_path: Path) -> None:
    vectors = clustered(8000)
    with latentdb.connect(tmp_path) as database:
        collection = database.create_collection(
            "c", dimension=DIMENSION, embedder=None, index="hnsw", model=MODEL
        )
        collection.add([f"r{i}" for i in range(8000)], vectors=vectors, model=MODEL)
    children = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", OPTIMIZER, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "READY"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        assert out.split()[0] == "DONE" and int(out.split()[1]) > 7000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing damaged, nothing missing
        with latentdb.connect(tmp_path) as database:
            collection = database.get_collection("c")
            assert collection.index_status().indexed > 7000
            hits = collection.query(vectors=vectors[:20], k=1, exact=True)
            assert [row[0] for row in hits.ids] == [f"r{i}" for i in range(20)]
            assert len(segment_folders(database)) == 1


@pytest.mark.parametrize("kind", ["ivf", "ivf-pq"])
def test_a_set_nlist_larger_than_a_segment_still_builds(tmp_path: Path, kind: str) -> None:
    """nlist=65,536 on 600 rows: k-means cannot make more lists than it has points, and
    faiss raised on every seal and optimize(); the lists are capped by the rows."""
    vectors = clustered(600)
    with latentdb.connect(tmp_path) as database:
        collection = database.create_collection(
            "c",
            dimension=DIMENSION,
            embedder=None,
            index={"kind": kind, "nlist": 65536},
            model=MODEL,
        )
        collection.add([f"r{i}" for i in range(600)], vectors=vectors, model=MODEL)
        collection.optimize()
        assert collection.index_status().indexed > 500
        hits = collection.query(vectors=vectors[:5], k=1, exact=True)
        assert [row[0] for row in hits.ids] == [f"r{i}" for i in range(5)]


def test_versions_read_beside_the_load_are_used_only_when_nothing_was_written_since(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reopen reads the store's versions while the index files load, then checks in
    its own snapshot that the store's write sequence has not moved: a write in between
    (here: the versions of an older snapshot, with a row moved since) means they are
    read again, so the row's old version never comes back and its new one is found."""
    from latentdb.store import Store

    vectors = clustered(ROWS)
    with latentdb.connect(tmp_path) as database:
        collection = database.create_collection(
            "c", dimension=DIMENSION, embedder=None, model=MODEL, index="hnsw"
        )
        collection.add([f"r{i}" for i in range(ROWS)], vectors=vectors, model=MODEL)
        collection.optimize()
        store = database.store  # type: ignore[attr-defined]
        before = store.versions_unlocked(collection._state.row.id)  # type: ignore[attr-defined]
        moved = clustered(1, seed=99)
        collection.update(["r5"], vectors=moved, model=MODEL)
    read: list[int] = []
    real = Store.versions_unlocked

    def older(self: Store, collection_id: int) -> tuple[int, np.ndarray, np.ndarray]:
        read.append(real(self, collection_id)[0])
        return before  # as if read before the update committed

    monkeypatch.setattr(Store, "versions_unlocked", older)
    with latentdb.connect(tmp_path) as database:
        collection = database.get_collection("c")
        assert "r5" not in collection.query(vectors=vectors[5], k=3, include=[]).ids[0]
        assert collection.query(vectors=moved, k=1, include=[]).ids == [["r5"]]
    assert read and read[0] > before[0]
    # Unchanged since: the versions read beside the load are the ones used.
    used: list[bool] = []

    def same(self: Store, collection_id: int) -> tuple[int, np.ndarray, np.ndarray]:
        found = real(self, collection_id)
        used.append(True)
        return found

    monkeypatch.setattr(Store, "versions_unlocked", same)
    monkeypatch.setattr(Store, "versions", lambda *args: pytest.fail("read again"))
    with latentdb.connect(tmp_path) as database:
        assert database.get_collection("c").query(vectors=vectors[6], k=1).ids == [["r6"]]
    assert used == [True]
