"""A shard host killed in the middle of a stream of writes loses no acknowledged write.

A writer thread adds batches and records the ids of every add that returned; another
thread kills a shard's host with ``ray.kill`` while adds are flowing. Ray restarts the
host (or, killed for good, the next call starts a new one by name), the host reopens
its folders, and the calls it lost are sent again. Afterwards every acknowledged id
must be stored, on every replica.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import latentdb
from latentdb import distributed
from latentdb.distributed import ShardedDatabase, host_name

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

DIM = 16
BATCH = 20
# Enough adds after the kill to prove the stream resumed on the restarted host.
AFTER_KILL = 30


class Writer(threading.Thread):
    """Adds batches until told to stop; keeps the ids of each add that returned."""

    def __init__(self, collection: latentdb.Collection) -> None:
        super().__init__(daemon=True)
        self.collection = collection
        self.acknowledged: list[str] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        rng = np.random.default_rng(0)
        batch = 0
        while not self.stop.is_set() and batch < 2000:
            ids = [f"b{batch}-{i}" for i in range(BATCH)]
            try:
                self.collection.add(ids, vectors=rng.normal(size=(BATCH, DIM)), model=MODEL)
            except Exception as error:  # not acknowledged: allowed, but recorded
                self.errors.append(error)
            else:
                self.acknowledged.extend(ids)
            batch += 1

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} acknowledged"
            assert self.is_alive(), self.errors
            time.sleep(0.01)


def stream_and_kill(
    ray: Any, database: ShardedDatabase, collection: latentdb.Collection, *, no_restart: bool
) -> Writer:
    """Kill shard 0's first host while ``collection`` takes a stream of adds."""
    host = ray.get_actor(host_name(0, 0))
    pid_before = ray.get(host.pid.remote())
    retried_before = database.hosts.retried
    writer = Writer(collection)
    writer.start()
    writer.wait_for(10 * BATCH)
    killed_at: list[int] = []

    def kill() -> None:
        killed_at.append(len(writer.acknowledged))
        ray.kill(host, no_restart=no_restart)

    killer = threading.Thread(target=kill)
    killer.start()
    killer.join()
    writer.wait_for(killed_at[0] + AFTER_KILL * BATCH)
    writer.stop.set()
    writer.join(timeout=60)
    assert not writer.is_alive()
    assert database.hosts.retried > retried_before  # calls did meet the dead host
    new_host = ray.get_actor(host_name(0, 0))
    assert ray.get(new_host.pid.remote()) != pid_before  # a new process took over
    return writer


def test_killed_shard_host_restarts_and_loses_no_acknowledged_write(
    ray_cluster: Any, tmp_path: Path
) -> None:
    with distributed.connect(path=tmp_path / "db") as database:
        collection = database.create_collection(
            "c", dimension=DIM, embedder=None, shards=2, model=MODEL
        )
        writer = stream_and_kill(ray_cluster, database, collection, no_restart=False)
        assert writer.errors == []  # every add was retried to completion
        stored = collection.get(writer.acknowledged, include=[]).ids
        assert len(stored) == len(writer.acknowledged)
        assert collection.count() == len(writer.acknowledged)
        hits = collection.query(vectors=np.ones(DIM), k=5, exact=True, include=[])
        assert len(hits.ids[0]) == 5


def test_replicas_survive_a_host_killed_for_good(ray_cluster: Any, tmp_path: Path) -> None:
    with distributed.connect(path=tmp_path / "db") as database:
        collection = database.create_collection(
            "c", dimension=DIM, embedder=None, shards=2, replicas=2, model=MODEL
        )
        # no_restart=True: Ray does not bring it back; the next call starts a new host
        # by name, which reopens the folders.
        writer = stream_and_kill(ray_cluster, database, collection, no_restart=True)
        assert writer.errors == []
        acknowledged = set(writer.acknowledged)
        assert set(collection.get(writer.acknowledged, include=[]).ids) == acknowledged
        for folder in (tmp_path / "db" / "shards").glob("*/shard-*"):
            with latentdb.connect(folder) as shard:
                ids = set(shard.get_collection("shard").get(include=[]).ids)
            # Each replica holds all of its shard's acknowledged ids, and nothing else.
            shard_index = int(folder.name.split("-")[1])
            mine = {i for i in acknowledged if distributed.shard_of(i, 2) == shard_index}
            assert ids == mine, folder.name


@pytest.mark.parametrize("method", ["upsert", "delete"])
def test_writes_sent_again_are_idempotent(sharded: ShardedDatabase, method: str) -> None:
    collection = sharded.create_collection("c", dimension=DIM, embedder=None, shards=1, model=MODEL)
    collection.add(["a", "b"], vectors=np.ones((2, DIM)), model=MODEL)
    group = sharded.group(sharded.store.collection_by_name("c"))  # type: ignore[arg-type]
    if method == "upsert":
        arguments = {"ids": ["a"], "vectors": np.full((1, DIM), 2.0)}
    else:
        arguments = {"ids": ["a"], "where": None, "where_document": None}
    for _ in range(2):  # the same call twice, as after a lost reply
        group.write(method, {0: arguments})
    assert collection.count() == (2 if method == "upsert" else 1)
    # An add sent again after a lost reply succeeds when its rows are there, bit for
    # bit, and is still refused when other vectors sit under those ids.
    again = {"ids": ["b"], "vectors": np.ones((1, DIM))}
    group.write("add_again", {0: again})
    with pytest.raises(latentdb.DuplicateIdError, match="'b'"):
        group.write("add_again", {0: {"ids": ["b"], "vectors": np.arange(1.0, DIM + 1)[None]}})
