"""Fault injection: damaged, full, read-only and foreign files give a named error or a
warned rebuild, and the database stays usable with every earlier row intact (issue 15).

Sections:

1. The SQLite store: a read-only database, a full disk, a corrupt page, an empty file,
   a foreign file, a failed commit.
2. Segment files (index/): a garbled block and a truncation in every kind of file.

Faults a test process cannot inject into itself run in ``tests/_workers/fault_worker.py``:
a file size limit would stop pytest's own writes, and root (which CI and this sandbox
run as) writes through any file mode, so the read-only check drops to another user.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentdb
from latentdb import (
    CorruptDatabaseError,
    DiskFullError,
    ForeignDatabaseError,
    LatentDBWarning,
    ReadOnlyError,
    StorageError,
)
from latentdb.index._sealed import SealedSegment
from latentdb.store import DATABASE_FILE, storage_error
from tests._segments import clustered, index_folder, segment_folders

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

WORKER_PATH = Path(__file__).parent / "_workers" / "fault_worker.py"
_spec = importlib.util.spec_from_file_location("_fault_worker", WORKER_PATH)
assert _spec is not None and _spec.loader is not None
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)
DIMENSION = worker.DIMENSION
# Seconds a worker may take (it imports latentdb and faiss, and warms up).
WORKER_TIMEOUT = 120.0


def run_worker(*args: object) -> dict[str, Any]:
    """Run the fault worker and return its report (its last stdout line)."""
    done = subprocess.run(
        [sys.executable, str(WORKER_PATH), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def fill(collection: latentdb.Collection, prefix: str, batches: int) -> None:
    for number in range(batches):
        collection.add(**worker.batch(prefix, number))


def expected_ids(prefix: str, batches: int) -> list[str]:
    return sorted(i for n in range(batches) for i in worker.batch(prefix, n)["ids"])


def assert_rows_intact(
    folder: Path, name: str, prefix: str, batches: int, *, more: int = 0
) -> None:
    """Every row of ``batches`` batches is stored, bit for bit (beside ``more`` others)."""
    with latentdb.connect(folder) as db:
        collection = db.get_collection(name)
        assert collection.count() == batches * worker.BATCH + more
        for number in range(batches):
            want = worker.batch(prefix, number)
            got = collection.get(want["ids"], include=["vectors", "documents", "metadatas"])
            assert got.ids == want["ids"]
            assert got.vectors is not None
            np.testing.assert_array_equal(got.vectors, want["vectors"])
            assert got.documents == want["documents"]
            assert got.metadatas == want["metadatas"]


def new_database(folder: Path, *, batches: int = 3, index: str = "flat") -> Path:
    with latentdb.connect(folder) as db:
        collection = db.create_collection(
            "rows", dimension=DIMENSION, embedder=None, metric="l2", index=index, model=MODEL
        )
        fill(collection, "r", batches)
    return folder


# -- 1. the SQLite store ----------------------------------------------------------------


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A temporary folder another user can reach (pytest's tmp_path is private to root):
    the read-only test's worker drops to "nobody" when run as root."""
    base = Path(tempfile.mkdtemp(prefix="latentdb-faults-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for path in [base, *base.rglob("*")]:  # writable again, for rmtree as non-root
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(base)


def make_read_only(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) | 0o444)


def check_read_only_report(report: dict[str, Any], batches: int) -> None:
    assert os.geteuid() != 0 or report["uid"] == worker.NOBODY  # really another user
    assert report["read_only"] is True
    assert report["warnings"] == []
    rows = report["collections"]["rows"]
    assert rows["count"] == batches * worker.BATCH
    assert rows["ids"] == expected_ids("r", batches)
    assert len(rows["exact"]) == 5 and len(set(rows["query"]) & set(rows["exact"])) >= 4
    assert rows["filtered"] == worker.batch("r", 0)["ids"]
    for kind, failed in report["writes"].items():
        assert failed is not None, f"{kind} wrote to a read-only database"
        assert failed["error"] == "ReadOnlyError", (kind, failed)
        if kind != "optimize":  # refused before any file is touched
            assert failed["cause"] == "OperationalError", (kind, failed)  # SQLite's, kept
        assert failed["notes"] == []


@pytest.mark.slow
@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_a_read_only_database_folder_answers_reads_and_refuses_writes(
    shared_folder: Path, index: str
) -> None:
    """A closed database in a folder nobody may write (no -wal or -shm file can be made):
    opened, counted, read and queried (exact, ANN over a saved segment, filtered); every
    kind of write raises ReadOnlyError with SQLite's error as its cause. As root a file
    mode stops nothing, so the worker drops to uid 65534 first; as another user the
    mode alone does it. Afterwards, writable again, every row is intact."""
    folder = new_database(shared_folder / "db", index=index)
    if index == "hnsw":
        with latentdb.connect(folder) as db:
            db.get_collection("rows").optimize()  # a saved segment to load read-only
    make_read_only(folder)
    check_read_only_report(run_worker("read", folder), batches=3)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert_rows_intact(folder, "rows", "r", 3)


@pytest.mark.slow
def test_a_read_only_folder_that_a_writer_holds_open_reads_its_latest_commits(
    shared_folder: Path,
) -> None:
    """While a writer has the database open, its newest commits are still in the -wal
    file: a reader that cannot write the folder reads them through SQLite's read-only
    WAL support, not a stale snapshot of the main file."""
    folder = new_database(shared_folder / "db", batches=2)
    with latentdb.connect(folder) as writer:
        fill_from = writer.get_collection("rows")
        fill_from.add(**worker.batch("r", 2))  # committed, but only in the -wal file
        assert Path(f"{folder / DATABASE_FILE}-wal").stat().st_size > 0
        make_read_only(folder)
        check_read_only_report(run_worker("read", folder), batches=3)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert_rows_intact(folder, "rows", "r", 3)


@pytest.mark.slow
def test_a_full_disk_is_a_named_error_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """RLIMIT_FSIZE with SIGXFSZ ignored makes SQLite's writes fail with EFBIG, which it
    reports as a bare "disk I/O error": the store names it DiskFullError, keeps SQLite's
    error as the cause, rolls the batch back whole (no "cannot rollback" masking it) and
    stays usable in the same process once there is room again."""
    folder = new_database(tmp_path / "db", batches=1)
    report = run_worker("fill", folder, 500)
    acknowledged = report["acknowledged"]
    assert 0 < acknowledged < 500, report
    assert report["error"] == "DiskFullError", report
    assert report["cause"] == "OperationalError"
    assert "disk" in report["cause_message"] or "full" in report["cause_message"]
    assert report["notes"] == [] and "rollback" not in report["message"]
    assert report["count_after_error"] == acknowledged * worker.BATCH  # the batch: none
    assert report["count_after_lifting"] == (acknowledged + 1) * worker.BATCH
    assert_rows_intact(folder, "rows", "r", 1)
    assert_rows_intact(folder, "fill", "fill", acknowledged, more=worker.BATCH)
    with latentdb.connect(folder) as db:
        after = db.get_collection("fill").get(worker.batch("after", 0)["ids"])
        assert len(after.ids) == worker.BATCH


def pages_of(path: Path, table: str) -> list[int]:
    """The leaf page numbers of a table or index, from SQLite's dbstat."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
            (table,),
        ).fetchall()
    connection.close()
    return [row[0] for row in rows]


def test_a_corrupt_page_is_a_named_error_in_every_read(tmp_path: Path) -> None:
    """Garbage over a page of the records table and of each of its indexes: opening,
    counting, getting and querying raise CorruptDatabaseError (SQLite's
    "database disk image is malformed" as the cause), never a raw sqlite3 error, and
    write nothing: with the pages put back, every row is there."""
    folder = new_database(tmp_path / "db", batches=10)
    path = folder / DATABASE_FILE
    with closing(sqlite3.connect(path)) as connection:
        page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
    saved = path.read_bytes()
    damaged = bytearray(saved)
    rng = np.random.default_rng(15)
    for table in ("records", "records_by_seq", "sqlite_autoindex_records_1"):
        pages = pages_of(path, table)
        assert len(pages) >= 2, table
        start = (pages[len(pages) // 2] - 1) * page_size
        damaged[start : start + page_size] = rng.bytes(page_size)
        damaged[start] = 0x77  # not a b-tree page type, whatever the random bytes were
    path.write_bytes(bytes(damaged))

    reads: dict[str, Callable[[latentdb.Collection], object]] = {
        "count": lambda c: c.count(),
        "get": lambda c: c.get(),
        "get by id": lambda c: c.get(worker.batch("r", 5)["ids"]),
        "filtered get": lambda c: c.get(where={"batch": 5}),
        "query": lambda c: c.query(vectors=np.ones(DIMENSION), k=3),
    }
    for name, read in reads.items():
        with latentdb.connect(folder) as db:  # fresh each time: nothing cached
            with pytest.raises(CorruptDatabaseError, match="malformed") as raised:
                read(db.get_collection("rows"))
            assert isinstance(raised.value.__cause__, sqlite3.DatabaseError), name
        assert path.read_bytes() == bytes(damaged), name  # a failed read writes nothing

    path.write_bytes(saved)
    assert_rows_intact(folder, "rows", "r", 10)


def test_an_empty_database_file_is_refused_not_taken_for_a_new_database(
    tmp_path: Path,
) -> None:
    """SQLite opens a file of 0 bytes as a new, empty database: latentdb refuses it
    (it creates its own files whole, so one of 0 bytes is a truncated database) and
    leaves it as it was. The copy put back opens with every row."""
    folder = new_database(tmp_path / "db")
    path = folder / DATABASE_FILE
    saved = path.read_bytes()
    path.write_bytes(b"")
    with pytest.raises(CorruptDatabaseError, match="empty"):
        latentdb.connect(folder)
    assert path.stat().st_size == 0
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [DATABASE_FILE]
    path.write_bytes(saved)
    assert_rows_intact(folder, "rows", "r", 3)


def foreign_sqlite(path: Path, *statements: str) -> None:
    connection = sqlite3.connect(path)
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("text", lambda p: p.write_text("id,name\n1,cat\n" * 300)),
        ("garbled header", lambda p: p.write_bytes(b"\x00" * 16 + os.urandom(8192))),
        ("another app", lambda p: foreign_sqlite(p, "CREATE TABLE notes (body TEXT)")),
        (
            "another app's id",
            lambda p: foreign_sqlite(p, "PRAGMA application_id = 1234"),
        ),
        (
            "another app's version",
            lambda p: foreign_sqlite(p, "CREATE TABLE records (x)", "PRAGMA user_version = 3"),
        ),
    ],
)
def test_a_foreign_file_is_refused_and_left_alone(tmp_path: Path, kind: str, make: Any) -> None:
    """A file that is not SQLite, or another application's SQLite database, is refused
    with ForeignDatabaseError and not written to (latentdb would otherwise add its
    tables to someone else's database)."""
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / DATABASE_FILE
    make(path)
    before = path.read_bytes()
    with pytest.raises(ForeignDatabaseError):
        latentdb.connect(folder)
    assert path.read_bytes() == before, kind


def test_a_new_empty_sqlite_file_becomes_a_database(tmp_path: Path) -> None:
    """A SQLite file with no tables and no version (made by the sqlite3 shell, or by a
    latentdb killed while creating it before files were created whole) is not foreign:
    it gets the schema."""
    folder = tmp_path / "db"
    folder.mkdir()
    foreign_sqlite(folder / DATABASE_FILE, "PRAGMA user_version = 0")
    assert (folder / DATABASE_FILE).stat().st_size > 0
    new_database(folder)
    assert_rows_intact(folder, "rows", "r", 3)


def test_a_failed_commit_rolls_back_and_the_store_stays_usable(tmp_path: Path) -> None:
    """A COMMIT that fails with the transaction still open is rolled back (before, the
    store thought it was out of its transaction while SQLite was not, and every later
    write failed with "cannot start a transaction within a transaction"); and when
    SQLite has already rolled back by itself, the cause is raised, not masked by
    "cannot rollback - no transaction is active"."""
    folder = new_database(tmp_path / "db", batches=1)
    with latentdb.connect(folder) as db:
        store = db.store
        # Deferred foreign keys fail at COMMIT, leaving the transaction open.
        with pytest.raises(sqlite3.IntegrityError), store.write():
            store._connection.execute("PRAGMA defer_foreign_keys = ON")
            store._connection.execute(
                "INSERT INTO records (collection_id, id, vector, seq) VALUES (999, 'x', x'', 1)"
            )
        assert not store._connection.in_transaction
        # SQLite rolled back on its own (as after a disk-full or I/O error).
        with pytest.raises(KeyError, match="the real cause"), store.write():
            store._connection.execute("ROLLBACK")
            raise KeyError("the real cause")
        collection = db.get_collection("rows")
        collection.add(**worker.batch("r", 1))  # the store is usable
    assert_rows_intact(folder, "rows", "r", 2)


def sqlite_error(code: int, message: str = "it failed") -> sqlite3.Error:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    error.sqlite_errorname = f"SQLITE_{code}"
    return error


@pytest.mark.parametrize(
    ("code", "named"),
    [
        (13, DiskFullError),  # SQLITE_FULL
        (8, ReadOnlyError),  # SQLITE_READONLY
        (8 | (6 << 8), ReadOnlyError),  # SQLITE_READONLY_DIRECTORY
        (3, ReadOnlyError),  # SQLITE_PERM
        (11, CorruptDatabaseError),  # SQLITE_CORRUPT
        (26, CorruptDatabaseError),  # SQLITE_NOTADB
        (5, StorageError),  # SQLITE_BUSY past the timeout
        (14, StorageError),  # SQLITE_CANTOPEN
    ],
)
def test_sqlite_storage_codes_map_to_named_errors(code: int, named: type) -> None:
    mapped = storage_error(sqlite_error(code), ())
    assert type(mapped) is named


def test_an_io_error_is_a_full_disk_only_when_space_ran_out(tmp_path: Path) -> None:
    """SQLITE_IOERR is DiskFullError only when the disk or the file size limit is
    (nearly) full; otherwise it stays a plain StorageError."""
    (tmp_path / "db").write_bytes(b"x")
    mapped = storage_error(sqlite_error(10 | (3 << 8), "disk I/O error"), (tmp_path / "db",))
    assert type(mapped) is StorageError  # this disk has room, and no limit is set


def test_statement_errors_are_left_to_the_caller() -> None:
    """SQLITE_ERROR (a malformed full-text query, an expression too deep) and
    constraint errors are not storage faults: the store's callers name them."""
    assert storage_error(sqlite_error(1), ()) is None
    assert storage_error(sqlite_error(19), ()) is None


# -- 2. segment files -------------------------------------------------------------------

SEGMENT_ROWS = 3000
SEGMENT_DIMENSION = 16


def garble(path: Path, *, truncate: bool) -> None:
    data = bytearray(path.read_bytes())
    if truncate:
        path.write_bytes(bytes(data[: len(data) // 2]))
        return
    start = (len(data) // 2) & ~4095 if len(data) > 8192 else 0
    block = np.random.default_rng(len(data)).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    data[start : start + 4096] = block[: len(data) - start]
    path.write_bytes(bytes(data))


SEGMENT_FILES = [
    ("hnsw", {}, "index.faiss"),
    ("hnsw", {}, "keys.npy"),
    ("hnsw", {}, "sequences.npy"),
    ("hnsw", {}, "segment.json"),
    ("hnsw-sq8", {}, "vectors.npy"),
    ("hnsw", {"reduce": 8}, "projection.npy"),
    ("ivf-pq", {}, "index.faiss"),
]


@pytest.mark.slow
@pytest.mark.parametrize("truncate", [False, True], ids=["garbled", "truncated"])
@pytest.mark.parametrize(("kind", "options", "file"), SEGMENT_FILES, ids=lambda v: str(v))
def test_a_damaged_segment_file_is_caught_and_rebuilt(
    tmp_path: Path, kind: str, options: dict[str, Any], file: str, truncate: bool
) -> None:
    vectors = clustered(SEGMENT_ROWS)
    ids = [f"r{i}" for i in range(SEGMENT_ROWS)]
    with latentdb.connect(tmp_path) as database:
        collection = database.create_collection(
            "c", dimension=SEGMENT_DIMENSION, embedder=None, model=MODEL, index=kind, **options
        )
        collection.add(ids, vectors=vectors, model=MODEL)
        collection.optimize()
        (segment,) = segment_folders(database)
    garble(segment / file, truncate=truncate)
    with latentdb.connect(tmp_path) as database:
        collection = database.get_collection("c")
        with pytest.warns(LatentDBWarning, match="fails its checksum|holds files"):
            hits = collection.query(vectors=vectors[:50], k=10)
        assert [row[0] for row in hits.ids] == ids[:50]  # every row is back, from the store
        assert collection.count() == SEGMENT_ROWS
        collection.optimize()  # and the index is built again
        assert collection.index_status().indexed > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with latentdb.connect(tmp_path) as database:
            collection = database.get_collection("c")
            assert collection.query(vectors=vectors[:1], k=1).ids == [["r0"]]


def test_a_garbled_manifest_is_caught(tmp_path: Path) -> None:
    vectors = clustered(SEGMENT_ROWS)
    with latentdb.connect(tmp_path) as database:
        collection = database.create_collection(
            "c", dimension=SEGMENT_DIMENSION, embedder=None, index="hnsw", model=MODEL
        )
        collection.add([f"r{i}" for i in range(SEGMENT_ROWS)], vectors=vectors, model=MODEL)
        collection.optimize()
        manifest = index_folder(database) / "manifest.json"
    text = json.loads(manifest.read_text())
    text["tuned_rows"] += 1  # still valid JSON, but not what was written
    manifest.write_text(json.dumps(text))
    with latentdb.connect(tmp_path) as database:
        collection = database.get_collection("c")
        with pytest.warns(LatentDBWarning, match="manifest"):
            assert collection.count() == SEGMENT_ROWS
            assert collection.query(vectors=vectors[5:6], k=1).ids == [["r5"]]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (errno.ENOSPC, latentdb.DiskFullError),
        (errno.EACCES, latentdb.ReadOnlyError),
        (errno.EIO, latentdb.StorageError),
    ],
)
def test_an_index_file_that_cannot_be_written_is_a_named_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, error: type[Exception]
) -> None:
    vectors = clustered(SEGMENT_ROWS)
    with latentdb.connect(tmp_path) as database:
        collection = database.create_collection(
            "c", dimension=SEGMENT_DIMENSION, embedder=None, index="hnsw", model=MODEL
        )
        collection.add([f"r{i}" for i in range(SEGMENT_ROWS)], vectors=vectors, model=MODEL)

        def refused(self: SealedSegment, folder: Path, *, pack: Path | None = None) -> None:
            folder.mkdir(parents=True)
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(SealedSegment, "save", refused)
        with pytest.raises(error) as raised:
            collection.optimize()
        assert isinstance(raised.value.__cause__, OSError)
        assert not list(index_folder(database).glob("*.partial"))
        assert collection.count() == SEGMENT_ROWS  # the store is untouched, and still searched
        assert collection.query(vectors=vectors[:3], k=1).ids == [["r0"], ["r1"], ["r2"]]
        monkeypatch.undo()
        collection.optimize()
        assert collection.index_status().indexed > 0
