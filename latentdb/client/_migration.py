"""RemoteMigration: a migration that runs on a latentdb server, followed by polling."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from latentdb.api import Migration, MigrationProgress, MigrationStatus, SpaceComparison
from latentdb.client._wire import error_class_named, migration_status_from_wire
from latentdb.errors import ServerError

if TYPE_CHECKING:
    from latentdb.client._client import RemoteDatabase

__all__ = ["RemoteMigration"]

# Seconds between polls of a migration (each poll also waits on the server up to this).
_POLL = 1.0


class RemoteMigration(Migration):
    """A migration running on a latentdb server, with :class:`Migration`'s methods."""

    def __init__(self, database: RemoteDatabase, migration_id: int, status: MigrationStatus):
        self._remote = database
        self._id = migration_id
        self._last = status

    @property
    def id(self) -> int:
        return self._id

    def _poll(self, wait: float) -> bool:
        """Read the status (waiting on the server up to ``wait`` s); True while running.

        Raises:
            LatentDBError: the error that stopped the run.
        """
        reply = self._remote._call("GET", f"/v1/migrations/{self._id}", params={"wait": wait})
        self._last = migration_status_from_wire(reply["status"])
        return bool(reply["running"])

    def _status(self) -> MigrationStatus:
        self._poll(0.0)
        return self._last

    def _preview(self, *, sample: int, k: int) -> SpaceComparison:
        body = {"sample": sample, "k": k}
        reply = self._remote._call("POST", f"/v1/migrations/{self._id}/preview", body)
        return SpaceComparison.from_dict(reply)

    def start(self, progress: MigrationProgress | None = None) -> Migration:
        """See :meth:`Migration.start` (``progress`` cannot cross: it is not called)."""
        status = self._last
        self._remote._call(
            "POST",
            "/v1/migrations",
            {"name": status.alias, "embedder": status.embedder, "new_name": status.target},
        )
        return self

    def wait(self, timeout: float | None = None) -> MigrationStatus:
        """See :meth:`Migration.wait`.

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
            LatentDBError: the error that stopped the run, as the same class.
        """
        return self._follow(timeout, None)

    def _follow(self, timeout: float | None, progress: MigrationProgress | None) -> MigrationStatus:
        """Poll until the run ends, calling ``progress(copied, total)`` as it moves."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = -1
        while True:
            left = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            running = self._poll(max(left, 0.0))
            status = self._last
            if progress is not None and status.copied != seen:
                seen = status.copied
                progress(seen, max(status.total, seen))
            if not running:
                if status.error is not None:
                    name, _, message = status.error.partition(": ")
                    raise (error_class_named(name) or ServerError)(message or status.error)
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"migration {self._id} still running after {timeout} s")

    def stop(self) -> None:
        self._remote._call("POST", f"/v1/migrations/{self._id}/stop", idempotent=True)

    def run(self, progress: MigrationProgress | None = None) -> MigrationStatus:
        """See :meth:`Migration.run`: started on the server, then waited for."""
        self.start()
        return self._follow(None, progress)
