"""The driver's side of the shards: host actors by name, routing, calls with retries.

Writes go to every replica of the shards they touch and are acknowledged when each
replica has committed them. A host that dies is restarted by Ray (``max_restarts``);
the call it was running fails with ``ActorUnavailableError`` ("may or may not have
been executed"), and is sent again once the host is back. Sending a write again is
safe: upsert, update and delete are idempotent, and an add is sent again as
``add_again``, which accepts ids already stored with the very vectors sent (the lost
reply's commit). Reads go to one replica of each shard, the next one when it fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.distributed._host import ShardHost
from latentdb.errors import InvalidArgumentError, LatentDBError, TransportError
from latentdb.store import CollectionRow

__all__ = ["Call", "Hosts", "ShardGroup", "host_name", "require_ray", "shard_of"]

# Seconds between tries of a call whose host is restarting: Ray restarts a process in
# about a second here, so a few tries a second waste little and wait little.
_FIRST_PAUSE = 0.05
_MAX_PAUSE = 1.0


def require_ray() -> ModuleType:
    """The ``ray`` module.

    Raises:
        ImportError: Ray is not installed; says which extra brings it.
    """
    try:
        import ray
    except ImportError:  # pragma: no cover - installed in development
        raise ImportError("latentdb.distributed needs Ray: pip install 'latentdb[ray]'") from None
    return ray


def shard_of(record_id: str, shards: int) -> int:
    """The shard an id lives in: a stable hash (BLAKE2b, the same in every process and
    Python version, unlike ``hash()``), modulo the number of shards."""
    digest = hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def host_name(shard: int, replica: int) -> str:
    """The Ray actor name of the host of one (shard, replica) position."""
    return f"latentdb-shard-{shard}-replica-{replica}"


@dataclass
class Call:
    """One method call on one shard.

    ``places`` are the (replica, folder) pairs that may answer it: one for a write
    (each replica gets its own call), every replica for a read, which starts at the
    first and moves to the next when a host fails. ``again`` is the method to send
    when the first try's outcome is unknown (its host died meanwhile).
    """

    shard: int
    places: Sequence[tuple[int, str]]
    method: str
    arguments: Mapping[str, Any]
    again: str | None = None
    tries: int = field(default=0)

    @property
    def place(self) -> tuple[int, str]:
        """The (replica, folder) this try goes to."""
        return self.places[self.tries % len(self.places)]


class Hosts:
    """The shard hosts of this Ray job, found by name and created when missing.

    Args:
        options: Extra ``ray.remote`` options for hosts (``num_cpus``,
            ``resources``, ``scheduling_strategy``, ...).
        max_restarts: How often Ray restarts a host that died (-1: always).
        max_concurrency: Calls a host runs at once (threads; the embedded engine
            is thread-safe).
        retry_timeout: Seconds a call waits for a dead host to come back before
            :class:`~latentdb.TransportError`.
    """

    def __init__(
        self,
        *,
        options: Mapping[str, Any] | None = None,
        max_restarts: int = -1,
        max_concurrency: int = 8,
        retry_timeout: float = 60.0,
    ) -> None:
        self.ray = require_ray()
        reserved = {"name", "get_if_exists", "max_restarts", "max_concurrency", "lifetime"}
        clash = sorted(reserved & set(options or {}))
        if clash:
            raise InvalidArgumentError(
                f"host_options cannot set {', '.join(clash)}: latentdb sets them"
            )
        self.options = {"num_cpus": 0, **(options or {})}
        self.max_restarts = max_restarts
        self.max_concurrency = max_concurrency
        self.retry_timeout = retry_timeout
        self._handles: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()
        self._remote = self.ray.remote(ShardHost)
        self._rounds = itertools.count()
        # Calls sent again after their host died or was restarting (for tests, logs).
        self.retried = 0
        # The Ray job these hosts belong to (a process may shut Ray down and start it
        # again: named actors do not outlive their job).
        self.job = self.ray.get_runtime_context().get_job_id()

    def handle(self, shard: int, replica: int) -> Any:
        """The actor of (shard, replica): found by name, created when there is none."""
        key = (shard, replica)
        with self._lock:
            actor = self._handles.get(key)
            if actor is None:
                actor = self._remote.options(
                    name=host_name(shard, replica),
                    get_if_exists=True,
                    max_restarts=self.max_restarts,
                    max_concurrency=self.max_concurrency,
                    **self.options,
                ).remote()
                self._handles[key] = actor
            return actor

    def forget(self, shard: int, replica: int) -> None:
        """Drop a dead host's handle: the next call finds (or starts) it by name."""
        with self._lock:
            self._handles.pop((shard, replica), None)

    def known(self) -> list[tuple[int, int]]:
        """The (shard, replica) positions whose hosts this process has used."""
        with self._lock:
            return sorted(self._handles)

    def next_replica(self, replicas: int) -> int:
        """The replica a read starts at: round robin over reads."""
        return next(self._rounds) % replicas

    def _submit(self, call: Call, holder: str) -> Any:
        replica, folder = call.place
        method = call.method if call.tries == 0 or call.again is None else call.again
        actor = self.handle(call.shard, replica)
        return actor.call.remote(folder, holder, method, call.arguments)

    def run(self, calls: Sequence[Call], holder: str) -> list[Any]:
        """Run ``calls`` in parallel and return their results, in order.

        A call whose host died or is restarting is sent again (to the next replica
        for reads) until it succeeds or ``retry_timeout`` passes.

        Raises:
            LatentDBError: the first error a shard raised (in the order of ``calls``).
            TransportError: a host stayed unreachable for ``retry_timeout`` seconds.
        """
        ray = self.ray
        exceptions = ray.exceptions
        deadline = time.monotonic() + self.retry_timeout
        pending = {position: self._submit(call, holder) for position, call in enumerate(calls)}
        results: list[Any] = [None] * len(calls)
        raised: dict[int, BaseException] = {}
        pause = _FIRST_PAUSE
        while pending:
            failed = []
            for position, reference in pending.items():
                call = calls[position]
                try:
                    results[position] = ray.get(reference)
                except exceptions.RayTaskError as error:
                    cause = error.cause
                    raised[position] = cause if isinstance(cause, LatentDBError) else error
                except exceptions.RayActorError as error:
                    if isinstance(error, exceptions.ActorDiedError):
                        self.forget(call.shard, call.place[0])
                    if time.monotonic() > deadline:
                        raise TransportError(
                            f"the host of shard folder {call.place[1]} has been "
                            f"unreachable for {self.retry_timeout:g} s: {error}"
                        ) from None
                    failed.append(position)
            if raised:
                first = raised[min(raised)]
                raise first.with_traceback(None) from None
            pending = {}
            if failed:
                time.sleep(pause)
                pause = min(2 * pause, _MAX_PAUSE)
                with self._lock:
                    self.retried += len(failed)
                for position in failed:
                    calls[position].tries += 1
                    pending[position] = self._submit(calls[position], holder)
        return results

    def release(self, holder: str) -> None:
        """Tell every host this process used to close the folders only ``holder``
        held (a host that is down has nothing open)."""
        references = [self.handle(*key).release.remote(holder) for key in self.known()]
        for reference in references:
            exceptions = self.ray.exceptions
            with contextlib.suppress(exceptions.RayActorError, exceptions.GetTimeoutError):
                self.ray.get(reference, timeout=self.retry_timeout)

    def drop(self, folders: Sequence[tuple[int, int, str]]) -> None:
        """Close and delete shard folders, each on its host."""
        self.ray.get(
            [self.handle(shard, replica).drop.remote(folder) for shard, replica, folder in folders]
        )


class ShardGroup:
    """Where a sharded collection lives: its shard and replica folders.

    Attributes:
        shards: Number of shards.
        replicas: Copies of each shard, each on its own host.
    """

    def __init__(self, hosts: Hosts, holder: str, folders: Sequence[Sequence[str]]) -> None:
        self.hosts = hosts
        self.holder = holder
        self.folders = [list(replicas) for replicas in folders]
        self.shards = len(self.folders)
        self.replicas = len(self.folders[0])

    @staticmethod
    def folders_of(root: Path, row: CollectionRow) -> list[list[str]]:
        """The folders of a collection's shards (by shard, then replica) under ``root``."""
        base = root / "shards" / str(row.config["folder"])
        return [
            [
                str(base / f"shard-{shard}-replica-{replica}")
                for replica in range(int(row.config["replicas"]))
            ]
            for shard in range(int(row.config["shards"]))
        ]

    def places(self) -> list[tuple[int, int, str]]:
        """Every (shard, replica, folder)."""
        return [
            (shard, replica, folder)
            for shard, folders in enumerate(self.folders)
            for replica, folder in enumerate(folders)
        ]

    def route(self, ids: Sequence[str]) -> dict[int, list[int]]:
        """Positions of ``ids`` by shard, in their order."""
        by_shard: dict[int, list[int]] = {}
        for position, record_id in enumerate(ids):
            by_shard.setdefault(shard_of(record_id, self.shards), []).append(position)
        return by_shard

    def parts(
        self,
        ids: list[str],
        vectors: npt.NDArray[Any] | None,
        documents: Sequence[str | None] | None,
        metadatas: Sequence[Any] | None,
    ) -> dict[int, dict[str, Any]]:
        """A write's records split by shard: ids, vectors (not yet normalized: each
        shard prepares its rows as one engine prepares the batch), documents, metadata."""
        parts = {}
        for shard, positions in self.route(ids).items():
            part: dict[str, Any] = {"ids": [ids[p] for p in positions]}
            if vectors is not None:
                if vectors.ndim == 1:
                    part["vectors"] = vectors
                elif len(positions) == 1 and len(ids) > 1 and vectors.dtype == np.float32:
                    # One row of a batch goes as float64 (exactly), so that prepare()
                    # divides it by its norm as it divides a batch's rows; one float32
                    # vector takes its fast path, which multiplies by the reciprocal
                    # (another rounding) and keeps a near-unit vector as it is.
                    part["vectors"] = vectors[positions].astype(np.float64)
                else:
                    part["vectors"] = vectors[positions]
            if documents is not None:
                part["documents"] = [documents[p] for p in positions]
            if metadatas is not None:
                part["metadatas"] = [metadatas[p] for p in positions]
            parts[shard] = part
        return parts

    def present(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` stored now."""
        found = self.read(
            "present",
            {shard: {"ids": [ids[p] for p in rows]} for shard, rows in self.route(ids).items()},
        )
        return {record_id for stored in found.values() for record_id in stored}

    def read(self, method: str, arguments: Mapping[int, Mapping[str, Any]]) -> dict[int, Any]:
        """``method`` on one live replica of each shard in ``arguments``."""
        hosts = self.hosts
        calls = []
        for shard, shard_arguments in arguments.items():
            start = hosts.next_replica(self.replicas)
            places = [
                (replica, self.folders[shard][replica])
                for replica in np.roll(np.arange(self.replicas), -start).tolist()
            ]
            calls.append(Call(shard, places, method, shard_arguments))
        results = hosts.run(calls, self.holder)
        return dict(zip(arguments, results, strict=True))

    def read_all(self, method: str, arguments: Mapping[str, Any]) -> list[Any]:
        """``method`` with the same arguments on every shard; results by shard."""
        found = self.read(method, dict.fromkeys(range(self.shards), arguments))
        return [found[shard] for shard in range(self.shards)]

    def write(
        self,
        method: str,
        arguments: Mapping[int, Mapping[str, Any]],
        *,
        again: str | None = None,
    ) -> dict[int, Any]:
        """``method`` on every replica of each shard in ``arguments``; returns when all
        have committed, with the first replica's result per shard."""
        calls = [
            Call(shard, [(replica, self.folders[shard][replica])], method, shard_arguments, again)
            for shard, shard_arguments in arguments.items()
            for replica in range(self.replicas)
        ]
        results = self.hosts.run(calls, self.holder)
        first: dict[int, Any] = {}
        for call, result in zip(calls, results, strict=True):
            first.setdefault(call.shard, result)
        return first
