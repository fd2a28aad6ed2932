"""How a store notices other connections' commits: the WAL-index header shortcut, its
checks, and the ``PRAGMA data_version`` fallback (latentdb/store/_wal.py).

The canaries fail loudly when the linked SQLite stops keeping the WAL-index header as
latentdb assumes; the fallback tests break that assumption on purpose and check that
readers still catch up with every commit.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

import latentdb
from latentdb.errors import LatentDBWarning
from latentdb.store import DATABASE_FILE, Store

WAL = "latentdb.store._wal"
DIM = 4
MODEL = "test/vectors"


class Counted:
    """Counts the ``PRAGMA data_version`` a store's commit watch runs."""

    def __init__(self, store: Store) -> None:
        self.calls = 0
        watch = store._commits
        ask = watch._ask

        def counted() -> int:
            self.calls += 1
            return ask()

        watch._ask = counted


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "db"
    path.mkdir()
    return path


@pytest.fixture
def stores(folder: Path) -> Iterator[tuple[Store, Store]]:
    """A writer and a reader: two connections to one database."""
    writer = Store(folder)
    try:
        reader = Store(folder)
        try:
            yield writer, reader
        finally:
            reader.close()
    finally:
        writer.close()


def add_rows(store: Store, collection_id: int, ids: list[str]) -> None:
    vectors = np.arange(len(ids) * DIM, dtype=np.float32).reshape(len(ids), DIM)
    with store.write():
        store.insert_records(
            collection_id,
            ids=ids,
            vectors=vectors,
            documents=[None] * len(ids),
            metadatas=[None] * len(ids),
            sequence=store.next_sequence(),
        )


def new_collection(store: Store, name: str = "c") -> int:
    with store.write():
        return store.insert_collection(name, space={"dimension": DIM}, embedder=None, config={}).id


def commit_elsewhere(folder: Path) -> None:
    """A commit from a plain SQLite connection, neither store's."""
    with sqlite3.connect(folder / DATABASE_FILE, isolation_level=None) as connection:
        connection.execute("UPDATE sequence SET value = value + 1 WHERE id = 0")
    connection.close()


def shm_header(folder: Path) -> bytes:
    descriptor = os.open(f"{folder / DATABASE_FILE}-shm", os.O_RDONLY)
    try:
        return os.pread(descriptor, 96, 0)
    finally:
        os.close(descriptor)


# -- canaries: SQLite keeps the header as assumed ------------------------------------


def test_canary_this_sqlite_keeps_the_wal_index_header_as_assumed() -> None:
    from latentdb.store._wal import probe_wal_index

    problem = probe_wal_index()
    assert problem is None, (
        f"SQLite {sqlite3.sqlite_version} no longer keeps the WAL-index header as "
        f"latentdb/store/_wal.py assumes ({problem}); every query now runs PRAGMA "
        "data_version: update the layout there (sqlite.org/walformat.html)"
    )


def test_canary_a_second_connections_commit_changes_the_header_read(
    folder: Path, stores: tuple[Store, Store]
) -> None:
    _, reader = stores
    before = reader.data_version()  # opens and checks the -shm file
    assert reader._commits.fallback is None
    header = shm_header(folder)
    version, change = struct.unpack_from("=I4xI", header)
    assert version == 3007000, f"WAL-index version {version} (SQLite {sqlite3.sqlite_version})"
    assert header[:48] == header[48:], "the two copies of the WAL-index header differ"

    commit_elsewhere(folder)

    after = shm_header(folder)
    assert after != header, "a commit left the WAL-index header as it was"
    assert struct.unpack_from("=I4xI", after)[1] == change + 1, "iChange did not count it"
    assert reader.data_version() != before, "the store missed another connection's commit"
    assert reader._commits.fallback is None


def test_the_header_spares_the_pragma_until_someone_commits(
    folder: Path, stores: tuple[Store, Store]
) -> None:
    writer, reader = stores
    collection_id = new_collection(writer)
    version = reader.data_version()
    reader.data_version()  # the first call opened the -shm file; this one reads it
    counted = Counted(reader)
    assert {reader.data_version() for _ in range(20)} == {version}
    assert counted.calls == 0

    add_rows(writer, collection_id, ["a"])
    assert reader.data_version() != version
    assert counted.calls == 1
    assert reader.changes_since(collection_id, 0, dimension=DIM).ids == ["a"]


def test_the_readers_own_writes_leave_its_data_version_alone(stores: tuple[Store, Store]) -> None:
    _, reader = stores
    version = reader.data_version()
    collection_id = new_collection(reader)
    add_rows(reader, collection_id, ["mine"])
    assert reader.data_version() == version


# -- header checks ------------------------------------------------------------------


def header_of(
    version: int = 3007000,
    change: int = 7,
    initialized: int = 1,
    page_size: int = 4096,
    frames: int = 3,
) -> bytes:
    copy = struct.pack("=I4xIBBHI", version, change, initialized, 0, page_size, frames)
    copy += bytes(48 - len(copy))
    return copy + copy


def test_header_checks_name_what_is_not_as_assumed() -> None:
    from latentdb.store._wal import header_problem

    assert header_problem(header_of(), 4096) is None
    assert header_problem(header_of(page_size=1), 65536) is None  # 1 stands for 64 KiB
    assert "version is 3007001" in str(header_problem(header_of(version=3007001), 4096))
    assert "not marked initialized" in str(header_problem(header_of(initialized=0), 4096))
    assert "page size 4096" in str(header_problem(header_of(), 8192))
    assert header_problem(header_of(page_size=0, frames=0), 8192) is None  # an empty WAL
    assert "page size 0" in str(header_problem(header_of(page_size=0), 8192))
    torn = header_of(change=8)[:48] + header_of(change=7)[48:]
    assert "copies" in str(header_problem(torn, 4096))
    assert "shorter" in str(header_problem(None, 4096))


# -- the fallback, forced -------------------------------------------------------------


def check_catches_up_asking_every_time(writer: Store, reader: Store) -> None:
    """Every commit of the writer is seen by the reader's next call, with the pragma
    asked on every call."""
    collection_id = new_collection(writer, "caught-up")
    counted = Counted(reader)
    applied, seen = 0, reader.data_version()
    for round_ in range(3):
        ids = [f"r{round_}-{i}" for i in range(5)]
        add_rows(writer, collection_id, ids)
        now = reader.data_version()
        assert now != seen
        changes = reader.changes_since(collection_id, applied, dimension=DIM)
        assert changes.ids == ids
        applied, seen = changes.sequence, now
        assert reader.data_version() == seen  # nothing new
    assert counted.calls == 7


def test_a_wal_index_of_another_version_falls_back_and_catches_up(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{WAL}._probe_result", [None])  # the library probe passed
    with closing(Store(folder)) as writer:
        monkeypatch.setattr(f"{WAL}.WAL_INDEX_VERSION", 3007001)  # as if SQLite changed it
        with closing(Store(folder)) as reader:
            with pytest.warns(LatentDBWarning, match="version is 3007000, not 3007001"):
                reader.data_version()
            assert "3007001" in str(reader._commits.fallback)
            check_catches_up_asking_every_time(writer, reader)


def test_a_failed_probe_falls_back_from_the_open_on(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{WAL}._probe_result", ["forced by the test"])
    with pytest.warns(LatentDBWarning, match="forced by the test"):
        writer, reader = Store(folder), Store(folder)
    with closing(writer), closing(reader):
        assert reader._commits.fallback == "forced by the test"
        check_catches_up_asking_every_time(writer, reader)


def test_an_unreadable_shm_file_falls_back(
    folder: Path, stores: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = stores
    reader.data_version()

    def broken(descriptor: int) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(f"{WAL}.read_header", broken)
    with pytest.warns(LatentDBWarning, match="cannot be read: .*Input/output error"):
        reader.data_version()
    check_catches_up_asking_every_time(writer, reader)


def test_a_header_that_stops_changing_is_caught_by_the_recheck(
    folder: Path, stores: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    from latentdb.store._wal import RECHECK_EVERY

    writer, reader = stores
    collection_id = new_collection(writer)
    version = reader.data_version()
    reader.data_version()
    frozen = shm_header(folder)
    # As if commits no longer rewrote the header.
    monkeypatch.setattr(reader._commits, "_header", lambda: frozen)

    add_rows(writer, collection_id, ["late"])
    with pytest.warns(LatentDBWarning, match="the header did not change"):
        answers = [reader.data_version() for _ in range(RECHECK_EVERY + 1)]
    assert answers[-1] != version  # seen at the latest on the recheck
    assert reader._commits.fallback is not None
    check_catches_up_asking_every_time(writer, reader)


def test_two_handles_catch_up_through_the_fallback(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{WAL}._probe_result", ["forced by the test"])
    vectors = np.eye(DIM, dtype=np.float32)
    with (
        pytest.warns(LatentDBWarning, match="forced by the test"),
        latentdb.connect(folder) as db,
        latentdb.connect(folder) as other,
    ):
        mine = db.create_collection("c", dimension=DIM, embedder=None, model=MODEL)
        mine.add(["a", "b"], vectors=vectors[:2], model=MODEL)
        theirs = other.get_collection("c")
        assert theirs.query(vectors=vectors[1], k=1).ids == [["b"]]
        mine.add(["c"], vectors=vectors[2:3], model=MODEL)
        assert theirs.count() == 3
        assert theirs.query(vectors=vectors[2], k=1).ids == [["c"]]
        other.get_collection("c").delete(["a"])
        assert mine.count() == 2
        assert sorted(mine.query(vectors=vectors[0], k=3).ids[0]) == ["b", "c"]


def test_a_half_written_header_at_open_is_read_again_not_given_up(
    stores: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    from latentdb.store import _wal

    _, reader = stores
    torn = iter([header_of(change=8)[:48] + header_of(change=7)[48:]])
    real = _wal.read_header
    monkeypatch.setattr(f"{WAL}.read_header", lambda fd: next(torn, None) or real(fd))
    reader.data_version()  # reads the torn copy: no warning (warnings are errors here)
    assert reader._commits.fallback is None and reader._commits._shm is None
    reader.data_version()
    assert reader._commits.fallback is None and reader._commits._shm is not None
