"""The page size of database files: new ones get 8 KiB pages (a record of 384 float32s
fills a 4 KiB page only to 77%); files made with SQLite's 4 KiB pages go on working."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

import latentdb
from latentdb.store import DATABASE_FILE, _connection

MODEL = "test/vectors"


def page_size(folder: Path) -> int:
    with closing(sqlite3.connect(folder / DATABASE_FILE)) as connection:
        return int(connection.execute("PRAGMA page_size").fetchone()[0])


@pytest.mark.parametrize("size", [4096, _connection.PAGE_SIZE])
def test_a_database_of_either_page_size_keeps_what_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(_connection, "PAGE_SIZE", size)
    vectors = np.random.default_rng(0).standard_normal((50, 384)).astype(np.float32)
    with latentdb.connect(tmp_path) as db:
        c = db.create_collection("c", dimension=384, embedder=None, model=MODEL)
        c.add([str(i) for i in range(50)], vectors=vectors, model=MODEL)
    assert page_size(tmp_path) == size
    monkeypatch.undo()  # opened by today's latentdb: the file keeps its pages
    with latentdb.connect(tmp_path) as db, latentdb.connect(tmp_path) as other:
        c, seen = db.get_collection("c"), other.get_collection("c")
        assert seen.count() == 50
        c.add(["new"], vectors=vectors[:1] * 2, model=MODEL)
        assert seen.count() == 51  # another handle sees the commit (the WAL header)
        assert seen.query(vectors=vectors[:1] * 2, k=1, include=[]).ids == [["new"]]
    assert page_size(tmp_path) == size
