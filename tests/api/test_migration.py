"""Migrations: re-embedding a collection into a new space behind an alias, resumable."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentdb
from latentdb import CollectionNotFoundError, Database, InvalidArgumentError
from latentdb.embed import unregister
from latentdb.engine import _migration

# The model of the source collection's vectors (every write of vectors names it).
MODEL = "old/model"

WORKER_PATH = Path(__file__).parents[1] / "_workers" / "migration_worker.py"
_spec = importlib.util.spec_from_file_location("_migration_worker", WORKER_PATH)
assert _spec is not None and _spec.loader is not None
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

ROWS = 600


@pytest.fixture
def slow() -> Iterator[Any]:
    """The worker's slow hashing embedder, registered here as in the worker."""
    instance = worker.register()
    yield instance
    unregister(worker.NAME)


def documents(count: int, prefix: str = "") -> list[str]:
    return [f"{prefix}topic{i % 20} word{i % 7} item{i}" for i in range(count)]


def source(db: Database, rows: int = ROWS) -> latentdb.Collection:
    """Vectors from elsewhere (random, 8-d), with documents and metadata."""
    collection = db.create_collection("docs", dimension=8, embedder=None, model=MODEL)
    collection.add(
        [f"id{i}" for i in range(rows)],
        vectors=np.random.default_rng(1).normal(size=(rows, 8)),
        documents=documents(rows),
        metadatas=[{"n": i} for i in range(rows)],
        model=MODEL,
    )
    return collection


def check_complete(db: Database, embedder: Any, *, name: str = "docs") -> latentdb.Collection:
    """``name`` reads the new space and holds every source record, re-embedded."""
    new = db.get_collection(name)
    old = db.get_collection(db.list_migrations()[-1].status().source)
    want = old.get(include=["documents", "metadatas"])
    got = new.get(want.ids, include=["documents", "metadatas", "vectors"])
    assert new.count() == old.count() == len(want.ids)
    assert got.documents == want.documents and got.metadatas == want.metadatas
    expected = embedder.embed_texts(want.documents)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(np.stack(got.vectors), expected, atol=1e-6)
    assert new.space.model == embedder.model and new.space.dimension == embedder.dimension
    return new


def test_migrating_a_collection_switches_its_name_to_the_new_space(db: Database, slow: Any) -> None:
    source(db)
    done: list[tuple[int, int]] = []
    migration = db.migrate(
        "docs", embedder=worker.NAME, background=False, progress=lambda *a: done.append(a)
    )
    status = migration.status()
    assert (status.alias, status.source, status.target, status.state) == (
        "docs", "docs-v1", "docs-v2", "done",
    )  # fmt: skip
    assert done[-1] == (ROWS, ROWS) and status.copied == ROWS
    assert db.list_aliases() == {"docs": "docs-v2"}
    assert db.list_collections() == ["docs-v1", "docs-v2"]  # the old version stays
    new = check_complete(db, slow)
    assert new.index_status().pending + new.index_status().indexed == ROWS
    assert new.query(texts="topic3 word3", k=1).ids[0][0] in {f"id{i}" for i in range(3, ROWS, 20)}
    db.delete_collection("docs-v1")  # dropped when the user says so


def test_records_without_documents_are_refused_up_front(db: Database, slow: Any) -> None:
    collection = source(db)
    collection.add(["bare1", "bare2"], vectors=np.ones((2, 8)), model=MODEL)
    with pytest.raises(
        InvalidArgumentError, match=r"2 of the 602 records of 'docs' have no document"
    ):
        db.migrate("docs", embedder=worker.NAME)
    assert db.list_collections() == ["docs"] and not db.list_migrations()
    with pytest.raises(CollectionNotFoundError):
        db.migrate("nope", embedder=worker.NAME)
    with pytest.raises(latentdb.EmbedderError, match="unknown embedder"):
        db.migrate("docs", embedder="no-such-model")
    assert db.list_collections() == ["docs"]


def test_reads_stay_on_the_old_version_and_writes_are_carried_over(
    db: Database, slow: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_migration, "BATCH", 50)
    source(db)
    db.create_alias("live", "docs")
    live = db.get_collection("live")
    migration = db.migrate("live", embedder=worker.NAME, new_name="docs-minilm")
    deadline = time.monotonic() + 30
    while migration.status().copied < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert migration.status().state == "running"
    assert live.name == "docs" and live.space.model == "old/model"  # not switched yet
    # Writes through the alias during the copy: all of them reach the new collection.
    live.add(["late"], vectors=np.ones(8), documents=["late topic1 arrival"], model=MODEL)
    live.update(["id0", "id599"], documents=["changed topic5", "changed again topic6"])
    live.delete(["id1", "id598"])
    status = migration.wait(timeout=60)
    assert status.state == "done" and db.list_aliases() == {"live": "docs-minilm"}
    assert db.list_collections() == ["docs", "docs-minilm"]  # an alias: nothing renamed
    new = check_complete(db, slow, name="live")
    assert live.name == "docs-minilm"  # the handle followed the switch
    assert new.get(["id0"], include=["documents"]).documents == ["changed topic5"]
    assert not new.get(["id1", "id598"]).ids


def test_a_second_migration_of_the_same_name_is_refused_while_one_runs(
    db: Database, slow: Any, hashing_embedder: Any
) -> None:
    source(db)
    migration = db.migrate("docs", embedder=worker.NAME)
    with pytest.raises(InvalidArgumentError, match="is running"):
        db.migrate("docs", embedder="test-hashing")
    assert db.migrate("docs", embedder=worker.NAME) is migration  # the same one, resumed
    migration.wait(timeout=60)
    with pytest.raises(InvalidArgumentError, match="already embedded"):
        db.migrate("docs", embedder=worker.NAME)


@pytest.mark.slow
def test_a_migration_killed_part_way_resumes_where_it_stopped(tmp_path: Path, slow: Any) -> None:
    folder = tmp_path / "db"
    with latentdb.connect(folder) as db:
        source(db, rows=2000)  # 8 batches of 256 at 0.2 s each
    with subprocess.Popen(
        [sys.executable, str(WORKER_PATH), str(folder), "docs"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        try:
            copied = 0
            while copied < 3 * _migration.BATCH:  # a few batches in, then SIGKILL
                line = child.stdout.readline()
                assert line.startswith("COPIED"), line + child.stderr.read()
                copied = int(line.split()[1])
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
    with latentdb.connect(folder) as db:
        (migration,) = db.list_migrations()
        before = migration.status()
        assert before.state == "running" and copied <= before.copied < 2000
        assert db.list_aliases() == {} and db.get_collection("docs").space.model == "old/model"
        db.migrate("docs", embedder=worker.NAME, background=False)
        # It continued: at most the batch in flight at the kill is embedded again.
        assert slow.texts <= 2000 - before.copied + _migration.BATCH
        assert db.list_migrations()[0].status().state == "done"
        check_complete(db, slow)


def test_a_migration_can_reduce_a_collection_by_copying_its_vectors(db: Database) -> None:
    collection = source(db)
    collection.add(["bare"], vectors=np.ones(8), model=MODEL)  # no document: copied all the same
    before = collection.get(include=["vectors", "documents", "metadatas"])
    with pytest.raises(InvalidArgumentError, match="already embedded with 'external'"):
        db.migrate("docs")  # nothing would change
    with pytest.raises(InvalidArgumentError, match="reduce must be an integer from 1 to 7"):
        db.migrate("docs", reduce=8)
    assert db.list_collections() == ["docs"] and not db.list_migrations()
    status = db.migrate("docs", reduce=4, background=False).status()
    assert (status.source, status.target, status.state) == ("docs-v1", "docs-v2", "done")
    assert status.copied == ROWS + 1
    new = db.get_collection("docs")
    assert new.name == "docs-v2" and new.space.reduce == 4
    assert new.space.model == "old/model" and new.space.dimension == 8
    assert new.require_model  # the source's setting, carried over
    after = new.get(before.ids, include=["vectors", "documents", "metadatas"])
    assert after.ids == before.ids
    np.testing.assert_array_equal(np.stack(after.vectors), np.stack(before.vectors))
    assert after.documents == before.documents and after.metadatas == before.metadatas
    new.optimize()
    query = np.stack(before.vectors)[:5]
    assert new.query(vectors=query, k=1).ids == [[i] for i in before.ids[:5]]
    # And back to full width, the same way.
    db.migrate("docs", reduce=None, background=False)
    assert db.get_collection("docs").space.reduce is None


def test_a_collection_that_takes_vectors_without_a_model_migrates_as_one(db: Database) -> None:
    collection = db.create_collection("loose", dimension=8, embedder=None, require_model=False)
    collection.add(["a", "b"], vectors=np.eye(8)[:2])
    db.migrate("loose", reduce=4, background=False)
    new = db.get_collection("loose")
    assert new.name == "loose-v2" and not new.require_model
    new.add(["c"], vectors=np.eye(8)[2])
    assert new.count() == 3


def test_copying_vectors_refuses_an_embedder_that_has_drifted(
    db: Database, hashing_embedder: Any
) -> None:
    collection = db.create_collection("docs", embedder="test-hashing")
    collection.add(["a", "b"], documents=["alpha beta", "gamma"])
    hashing_embedder.salt = "new weights"  # the model changed under the collection
    with pytest.raises(InvalidArgumentError, match="has drifted"):
        db.migrate("docs", reduce=4)
    assert db.list_collections() == ["docs"] and not db.list_migrations()
    hashing_embedder.salt = ""
    migration = db.migrate("docs", reduce=4)
    with pytest.raises(InvalidArgumentError, match="is running"):
        db.migrate("docs", reduce=8)  # another target while one runs
    assert migration.wait(timeout=60).state == "done"
    new = db.get_collection("docs")
    assert new.space.reduce == 4 and new.query(texts="alpha", k=1).ids == [["a"]]
