"""Migration: the promise of a re-embedding behind an alias, and what it reports."""

from __future__ import annotations

import abc
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from latentdb.analysis import SpaceComparison
from latentdb.api._validation import MAX_K, check_flag, check_non_negative

__all__ = ["Migration", "MigrationProgress", "MigrationStatus", "version_names"]

MigrationProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class MigrationStatus:
    """Where a migration stands.

    Attributes:
        alias: The name readers use; it points at ``target`` once ``state`` is "done".
        source: The collection being re-embedded.
        target: The new collection.
        embedder: The target's embedder.
        copied: Rows embedded into the target so far.
        total: Rows in the source now.
        state: "running" (or stopped part way: run it again to resume) or "done".
        error: Why the last run here stopped, if it failed.
        preview: The records copied so far compared with the source
            (:meth:`Migration.preview`), when ``status(preview=True)`` asked for it.
    """

    alias: str
    source: str
    target: str
    embedder: str
    copied: int
    total: int
    state: str
    error: str | None = None
    preview: SpaceComparison | None = None


def version_names(name: str, taken: Callable[[str], bool]) -> tuple[str, str]:
    """(name for the retired source, name for the new collection): ``docs`` gives
    ``docs-v1`` and ``docs-v2``, ``docs-v2`` gives ``docs-v3``; the first free ones."""
    match = re.fullmatch(r"(.+)-v(\d+)", name)
    base, number = (match.group(1), int(match.group(2))) if match else (name, 1)
    retired = name if match else f"{base}-v1"
    while taken(retired) and retired != name:
        number += 1
        retired = f"{base}-v{number}"
    number += 1
    new = f"{base}-v{number}"
    while taken(new) or new == retired:
        number += 1
        new = f"{base}-v{number}"
    return retired, new


class Migration(abc.ABC):
    """A re-embedding of one collection into another, started by
    :meth:`Database.migrate`.

    Queries through the alias keep reading the source until the copy is complete and
    indexed; then the alias switches, atomically. The source stays until dropped.
    """

    def __repr__(self) -> str:
        status = self.status()
        return (
            f"Migration({status.alias!r}: {status.source!r} -> {status.target!r}, "
            f"{status.copied}/{status.total} copied, {status.state})"
        )

    @property
    @abc.abstractmethod
    def id(self) -> int:
        """The migration's number in its database."""

    def status(self, *, preview: bool = False) -> MigrationStatus:
        """Progress and state, read from the store (so also another process's run).

        Args:
            preview: Also compare the records copied so far with the source
                (:meth:`preview` with its defaults, in ``MigrationStatus.preview``),
                to decide before the alias switches; it reads every vector of both.

        Raises:
            InvalidArgumentError: ``preview`` is not a bool; with ``preview``, fewer
                than 11 records copied.
        """
        status = self._status()
        if check_flag(preview, "preview"):
            return replace(status, preview=self.preview())
        return status

    def preview(self, *, sample: int = 2000, k: int = 10) -> SpaceComparison:
        """How much the neighbourhoods change from the source to the new collection,
        over the records copied so far: :meth:`Database.compare` of the two (the
        overlap@k, its verdict "queries will see about X% of the same top-10", rank
        correlation, CKA, Procrustes, and the records that change most).

        Args:
            sample: Copied records used as queries (all of them when fewer).
            k: Neighbours per query.

        Returns:
            A :class:`~latentdb.analysis.SpaceComparison` (A: the source, B: the target).

        Raises:
            InvalidArgumentError: not more than k records copied yet; sample or k under 1.
            CollectionNotFoundError: the source or the target was deleted.
        """
        sample = check_non_negative(sample, "sample", minimum=1)
        k = check_non_negative(k, "k", minimum=1, maximum=MAX_K)
        return self._preview(sample=sample, k=k)

    @abc.abstractmethod
    def _status(self) -> MigrationStatus:
        """:meth:`status` without the preview."""

    @abc.abstractmethod
    def _preview(self, *, sample: int, k: int) -> SpaceComparison:
        """:meth:`preview`, its arguments checked."""

    @property
    def done(self) -> bool:
        """True once the alias points at the new collection."""
        return self.status().state == "done"

    @abc.abstractmethod
    def start(self, progress: MigrationProgress | None = None) -> Migration:
        """Run in a background thread (see :meth:`run`); returns at once."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> MigrationStatus:
        """Wait for a background run to end; its error, if it failed, is raised here.

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
            InvalidArgumentError: ``timeout`` is not None or a number >= 0.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Ask a background run to stop after its current batch (it can resume later)."""

    @abc.abstractmethod
    def run(self, progress: MigrationProgress | None = None) -> MigrationStatus:
        """Copy what is left, index the target, then switch the alias; resumes from the
        stored cursor. ``progress(copied, total)`` after each batch.

        Raises:
            EmbedderError: a source row has no document (written after the start), or
                the embedder failed; fix the row and run again to resume.
            InvalidArgumentError: ``progress`` is not callable.
        """
