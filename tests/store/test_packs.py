"""Vectors stored once (issue 20): a sealed graph's float rows go to a pack that the
store adopts as its own copy, emptying those rows' blobs. Every read of a vector (get,
catch-up, a rebuild from the store) gives back the very vector written; a new vector
takes the row back from its pack; packs nothing needs are dropped; a damaged pack is a
named error, never a silent wrong answer.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest

import latentdb
from latentdb.engine._packs import StorePacks
from latentdb.errors import StorageError
from latentdb.index import SealedSegment, _segments
from latentdb.index._manifest import SegmentFiles
from latentdb.store import Store, _packs
from tests._segments import clustered

MODEL = "test/vectors"
ROWS = 3000
DIMENSION = 16


def _sql(folder: Path, statement: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(folder / "latentdb.sqlite3") as connection:
        return connection.execute(statement).fetchall()


def index_folder(folder: Path) -> Path:
    (found,) = (folder / "indexes").iterdir()
    return found


def _packs_on_disk(folder: Path) -> list[Path]:
    return sorted((folder / "vectors").rglob("*.flat"))


def _built(folder: Path, *, metric: str = "cosine") -> tuple[latentdb.Database, np.ndarray]:
    """An optimized hnsw collection "c" of ROWS rows; returns it open and what the
    store holds for its rows (normalized in a cosine space)."""
    vectors = clustered(ROWS)
    database = latentdb.connect(folder)
    collection = database.create_collection(
        "c", dimension=DIMENSION, embedder=None, model=MODEL, index="hnsw", metric=metric
    )
    collection.add([f"r{i}" for i in range(ROWS)], vectors=vectors, model=MODEL)
    collection.optimize()
    stored = collection.get(ids=[f"r{i}" for i in range(ROWS)], include=["vectors"]).vectors
    return database, np.asarray(stored)


def test_an_optimized_collection_keeps_each_vector_once(tmp_path: Path) -> None:
    vectors = clustered(ROWS)
    database = latentdb.connect(tmp_path)
    collection = database.create_collection(
        "c", dimension=DIMENSION, embedder=None, model=MODEL, index="hnsw", metric="l2"
    )
    collection.add([f"r{i}" for i in range(ROWS)], vectors=vectors, model=MODEL)
    before = _sql(tmp_path, "SELECT COUNT(*) FROM records WHERE length(vector) > 0")[0][0]
    collection.optimize()
    ids = [f"r{i}" for i in range(ROWS)]
    read = collection.get(ids=ids, include=["vectors"])
    database.close()

    assert before == ROWS
    # Every row's vector is in the pack, none in SQLite; the graph file holds no rows.
    packed = _sql(tmp_path, "SELECT COUNT(*) FROM records WHERE length(vector) = 0")[0][0]
    assert packed == ROWS
    (pack,) = _packs_on_disk(tmp_path)
    assert pack.stat().st_size >= ROWS * DIMENSION * 4
    graphs = list(index_folder(tmp_path).glob("seg-*/index.faiss"))
    assert graphs and all(faiss.read_index(str(graph)).storage is None for graph in graphs)
    # ...and reads give back, bit for bit, what was written (l2: stored as given).
    assert read.ids == ids
    np.testing.assert_array_equal(np.asarray(read.vectors), vectors)


def test_packed_vectors_come_back_after_reopen_rebuild_and_in_another_process(
    tmp_path: Path,
) -> None:
    database, stored = _built(tmp_path)
    database.close()
    # The index is gone: rebuilt from the store, whose vectors are in the pack.
    for segment in index_folder(tmp_path).glob("seg-*"):
        for file in segment.iterdir():
            file.unlink()
        segment.rmdir()
    (index_folder(tmp_path) / "manifest.json").unlink()
    database = latentdb.connect(tmp_path)
    collection = database.get_collection("c")
    hits = collection.query(vectors=stored[:50], k=1)
    assert [row[0] for row in hits.ids] == [f"r{i}" for i in range(50)]
    read = collection.get(ids=[f"r{i}" for i in range(ROWS)], include=["vectors"])
    np.testing.assert_array_equal(np.asarray(read.vectors), stored)
    database.close()
    # Another process reads the packed rows through its own store.
    script = (
        "import sys, numpy as np, latentdb\n"
        "c = latentdb.connect(sys.argv[1]).get_collection('c')\n"
        "got = c.get(ids=[f'r{i}' for i in range(5)], include=['vectors']).vectors\n"
        "print(np.asarray(got).tobytes().hex())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert bytes.fromhex(out) == stored[:5].astype("<f4").tobytes()


def test_a_new_vector_takes_the_row_back_from_its_pack(tmp_path: Path) -> None:
    database, stored = _built(tmp_path)
    collection = database.get_collection("c")
    moved = clustered(1, seed=99)[0]
    collection.update(["r7"], vectors=moved[None, :], model=MODEL)
    collection.update(["r8"], metadatas=[{"tag": "x"}])  # the vector stays packed
    collection.upsert(["r9"], vectors=clustered(1, seed=98), model=MODEL)
    rows = dict(_sql(tmp_path, "SELECT id, pack IS NULL FROM records WHERE id IN ('r7','r8','r9')"))
    assert rows == {"r7": 1, "r8": 0, "r9": 1}
    read = collection.get(ids=["r7", "r8"], include=["vectors"])
    np.testing.assert_allclose(read.vectors[0], moved / np.linalg.norm(moved), rtol=1e-6)
    np.testing.assert_array_equal(read.vectors[1], stored[8])
    (first,) = _packs_on_disk(tmp_path)
    # More than a tenth dead: optimize() builds a new graph, and its pack takes every
    # row (r7 and r9 too); the first pack is no longer needed and goes.
    collection.delete([f"r{i}" for i in range(10, 10 + ROWS // 8)])
    collection.optimize()
    database.close()
    (second,) = _packs_on_disk(tmp_path)
    assert second != first
    assert _sql(tmp_path, "SELECT COUNT(*) FROM packs") == [(1,)]
    # r8's metadata changed after it was packed: the graph holds its older version, so
    # the new pack does not take it, and it got its blob back when the old pack went.
    assert _sql(tmp_path, "SELECT id FROM records WHERE length(vector) > 0") == [("r8",)]
    database = latentdb.connect(tmp_path)
    read = database.get_collection("c").get(ids=["r7", "r8", "r2999"], include=["vectors"])
    np.testing.assert_allclose(read.vectors[0], moved / np.linalg.norm(moved), rtol=1e-6)
    np.testing.assert_array_equal(read.vectors[1], stored[8])
    np.testing.assert_array_equal(read.vectors[2], stored[2999])
    database.close()


def test_a_damaged_pack_is_a_named_error(tmp_path: Path) -> None:
    database, _ = _built(tmp_path)
    database.close()
    (pack,) = _packs_on_disk(tmp_path)
    data = bytearray(pack.read_bytes())
    data[-5] ^= 0xFF
    pack.write_bytes(bytes(data))
    database = latentdb.connect(tmp_path)
    collection = database.get_collection("c")
    with pytest.raises(StorageError, match="damaged"):
        collection.get(ids=["r1"], include=["vectors"])
    # Its graph is refused as well (the pack fails the segment's checksum), and the
    # rebuild from the store cannot read the rows: the same named error, no answer.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(StorageError, match="damaged"):
            collection.query(vectors=clustered(1), k=3)
    database.close()


def test_an_adoption_that_failed_happens_at_the_next_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failed(self: StorePacks, *args: object) -> None:
        raise StorageError("disk full")

    vectors = clustered(ROWS)
    database = latentdb.connect(tmp_path)
    collection = database.create_collection(
        "c", dimension=DIMENSION, embedder=None, model=MODEL, index="hnsw"
    )
    collection.add([f"r{i}" for i in range(ROWS)], vectors=vectors, model=MODEL)
    with monkeypatch.context() as patched:
        patched.setattr(StorePacks, "adopt", failed)
        with pytest.warns(latentdb.LatentDBWarning, match="stay stored twice"):
            collection.optimize()
    database.close()
    # The manifest names the segment; the store still holds every vector itself.
    assert _sql(tmp_path, "SELECT COUNT(*) FROM records WHERE length(vector) = 0") == [(0,)]
    database = latentdb.connect(tmp_path)
    collection = database.get_collection("c")
    assert collection.query(vectors=vectors[:1], k=1).ids == [["r0"]]
    collection.add(["new"], vectors=clustered(1, seed=5), model=MODEL)
    collection.optimize()
    database.close()
    assert _sql(tmp_path, "SELECT COUNT(*) FROM records WHERE length(vector) = 0") == [(ROWS + 1,)]
    assert len(_packs_on_disk(tmp_path)) == 1


def test_the_file_gives_back_the_pages_packing_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_packs, "RECLAIM_BYTES", 1 << 16)
    database = latentdb.connect(tmp_path)
    collection = database.create_collection(
        "c", dimension=128, embedder=None, model=MODEL, index="hnsw"
    )
    rows = np.random.default_rng(0).standard_normal((4000, 128)).astype(np.float32)
    collection.add([f"r{i}" for i in range(4000)], vectors=rows, model=MODEL)
    database.close()
    before = (tmp_path / "latentdb.sqlite3").stat().st_size
    database = latentdb.connect(tmp_path)
    database.get_collection("c").optimize()
    database.close()
    after = (tmp_path / "latentdb.sqlite3").stat().st_size
    assert before > 4000 * 128 * 4
    assert after < before / 4


def test_a_read_whose_pack_was_dropped_meanwhile_reads_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database, stored = _built(tmp_path)
    store = database.store  # type: ignore[attr-defined]
    store._mapped.clear()
    real = type(store)._pack
    gone: list[int] = []

    def dropped_once(self: object, pack: int, dimension: int) -> np.ndarray:
        if not gone:  # as if another connection dropped it after this read's SELECT
            gone.append(pack)
            raise _packs.PackGoneError(f"vector pack {pack} was removed")
        return real(self, pack, dimension)  # type: ignore[arg-type]

    monkeypatch.setattr(type(store), "_pack", dropped_once)
    read = database.get_collection("c").get(ids=["r3", "r4"], include=["vectors"])
    np.testing.assert_array_equal(np.asarray(read.vectors), stored[3:5])
    assert len(gone) == 1

    def always_gone(self: object, pack: int, dimension: int) -> np.ndarray:
        raise _packs.PackGoneError(f"vector pack {pack} was removed")

    monkeypatch.setattr(type(store), "_pack", always_gone)
    with pytest.raises(StorageError, match="still refer to it"):
        database.get_collection("c").get(ids=["r3"], include=["vectors"])
    database.close()


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq8"])
def test_optimize_writes_its_segment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The build is written after its tuning sample is folded in, not before as well:
    at 1M rows the first write was a 1.4 GB pack, fsynced, hashed and dropped."""
    written: list[int] = []
    write = SegmentFiles.write_segment

    def counted(self: SegmentFiles, segment: SealedSegment) -> str:
        written.append(int(segment.keys.shape[0]))
        return write(self, segment)

    monkeypatch.setattr(SegmentFiles, "write_segment", counted)
    database = latentdb.connect(tmp_path / "db")
    collection = database.create_collection(
        "c", dimension=DIMENSION, embedder=None, model=MODEL, index=kind
    )
    collection.add([f"r{i}" for i in range(ROWS)], vectors=clustered(ROWS), model=MODEL)
    collection.optimize()  # all rows, the tuning sample folded in after tuning
    assert written == [ROWS]
    collection.delete([f"r{i}" for i in range(ROWS // 2)])  # mostly dead: rebuilt
    collection.add([f"n{i}" for i in range(40)], vectors=clustered(40, seed=7), model=MODEL)
    collection.optimize()
    assert written == [ROWS, ROWS // 2 + 40]
    if kind == "hnsw":
        assert len(_packs_on_disk(tmp_path / "db")) == 1
    database.close()
    reopened = latentdb.connect(tmp_path / "db").get_collection("c")
    assert reopened.count() == ROWS // 2 + 40
    found = reopened.query(vectors=clustered(40, seed=7)[:1], k=1, include=[]).ids
    assert found == [["n0"]]


def test_a_background_build_hands_its_pack_over_without_holding_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delta sealed in the background: the store adopts its pack a chunk of rows per
    transaction, with the store's lock (the index's) free between them, so writers and
    other connections' catch-ups go on meanwhile."""
    monkeypatch.setattr(_segments, "_SEAL_QUIET_SECONDS", 0.05)
    monkeypatch.setattr(_segments, "DELTA_SEAL_ROWS", 200)
    monkeypatch.setattr(_packs, "ADOPT_CHUNK", 50)
    database, _ = _built(tmp_path / "db")
    collection = database.get_collection("c")
    store = database.store  # type: ignore[attr-defined]
    free: list[bool] = []
    adopt = StorePacks.adopt

    def watched(self: StorePacks, pack: object, keys: np.ndarray, sequences: np.ndarray) -> None:
        taken: list[bool] = []

        def other() -> None:  # another thread, as a writer is
            taken.append(store.lock.acquire(timeout=2.0))
            if taken[0]:
                store.lock.release()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        free.append(taken[0])
        adopt(self, pack, keys, sequences)  # type: ignore[arg-type]

    monkeypatch.setattr(StorePacks, "adopt", watched)
    new = clustered(300, seed=5)
    collection.add([f"n{i}" for i in range(300)], vectors=new, model=MODEL)
    index = collection._state.index  # type: ignore[attr-defined]
    for _ in range(200):  # sealed once the writes pause
        index.wait()
        if index.status().segments == 2:
            break
        time.sleep(0.05)
    assert index.status().segments == 2
    assert free == [True]  # one pack adopted, the lock free meanwhile
    (packed,) = _sql(
        tmp_path / "db",
        "SELECT COUNT(*) FROM records WHERE pack IS NOT NULL AND length(vector) = 0",
    )
    assert packed[0] == ROWS + 300
    stored = collection.get(ids=[f"n{i}" for i in range(300)], include=["vectors"]).vectors
    expected = new / np.linalg.norm(new, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(stored), expected, rtol=1e-6, atol=1e-6)
    database.close()


def test_a_transaction_counts_only_in_the_thread_that_opened_it(tmp_path: Path) -> None:
    """Adoption skips a store inside a transaction of its own thread's (a bulk build
    reading every row), not one another thread has open: that one is waited for."""
    store = Store(tmp_path)
    seen: list[bool] = []
    with store.read():
        assert store.in_transaction
        thread = threading.Thread(target=lambda: seen.append(store.in_transaction))
        thread.start()
        thread.join()
    assert seen == [False]
    assert not store.in_transaction
    store.close()
