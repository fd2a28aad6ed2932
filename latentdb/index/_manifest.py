"""A collection's index folder: sealed segments saved under unique names, and the
manifest that names the live ones with the checksum of each of their files.

Writes go through temporary files of unique names renamed into place, so a reader sees
either the old manifest or the new one. What a killed or failed build left (``.partial``
files, segments no manifest names) is swept, only under the build lock.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from latentdb.errors import DiskFullError, LatentDBWarning, ReadOnlyError, StorageError
from latentdb.index._lock import BuildLock
from latentdb.index._sealed import SealedSegment
from latentdb.index._segment_files import Checksums, PackFile
from latentdb.index._spec import IndexSpec
from latentdb.space import Metric

__all__ = [
    "MANIFEST",
    "MANIFEST_VERSION",
    "PackOwner",
    "SavedState",
    "SegmentFiles",
    "file_error",
]

MANIFEST = "manifest.json"
# Version 2: per-row write sequences and file checksums. Older manifests are rebuilt.
MANIFEST_VERSION = 2


@dataclass
class SavedState:
    """What a manifest records beside its segments: the tuned search parameters."""

    params: dict[str, int] = field(default_factory=dict)
    tuned_rows: int = 0
    tuned_recall: float | None = None
    # The held-out recall curve re-tunes read (Tuning.saved_curve); None: none.
    curve: dict[str, Any] | None = None


class PackOwner(Protocol):
    """Who keeps the graphs' float rows as its own copy of them (the store): a segment
    saved with an owner writes its rows to a *pack* in the owner's folder apart from
    the graph file, and once a manifest names the segment, the owner adopts the pack
    and drops its own copy of those rows. The graph then maps the owner's file: one
    copy of each vector on disk (issue 20)."""

    @property
    def folder(self) -> Path:
        """Where packs are written."""

    def ready(self) -> bool:
        """Whether the owner can take packs now (not inside a read of its own)."""

    def adopt(
        self, pack: PackFile, keys: npt.NDArray[np.int64], sequences: npt.NDArray[np.int64]
    ) -> None:
        """Take ``pack`` (durable) as the copy of row ``i``'s vector of ``keys[i]`` at
        write sequence ``sequences[i]`` (of those the owner still holds so)."""

    def adopted(self) -> set[str]:
        """Names of the packs adopted whole."""

    def release(self, named: set[str]) -> None:
        """Drop the packs that neither the owner's rows nor a segment ``named`` need
        (under the build lock: no build writes one meanwhile)."""


class SegmentFiles:
    """The segments and manifest in ``folder`` (None: an index held only in memory,
    whose segments get names but no files), their graphs' rows in ``packs``' files
    where it is set."""

    def __init__(
        self, folder: Path | None, build_lock: BuildLock, packs: PackOwner | None = None
    ) -> None:
        self.folder = folder
        self.build_lock = build_lock
        self.packs = packs if folder is not None else None
        # Packs adopted by the owner (names), as this index last saw.
        self._adopted: set[str] | None = None
        # The manifest on disk as this index last read or wrote it (see saved_elsewhere).
        self._manifest_seen: tuple[int, int, int] | None = None
        # Each saved segment's file checksums, by segment name, for the manifest.
        self._checksums: dict[str, Checksums] = {}

    def load(
        self,
        *,
        spec: IndexSpec,
        reduce: int | None,
        metric: Metric,
        dimension: int,
        reuse: Mapping[str, SealedSegment] | None = None,
    ) -> tuple[list[tuple[str, SealedSegment]], SavedState]:
        """The saved segments (every row alive, but those taken from ``reuse``: segments
        already in memory by name, since a segment's files never change under its name)
        and the state saved with them.

        A segment that is missing, damaged or foreign is dropped with a
        :class:`LatentDBWarning` (its rows come back from the store); so is everything
        when the manifest itself is, or when it was saved for another spec or by an
        older latentdb (then silently). Temporary files that a killed build left, and
        segments no manifest names, are swept when no build runs.
        """
        if self.folder is None or not self.folder.is_dir():
            return [], SavedState()
        path = self.folder / MANIFEST
        manifest: dict[str, Any] | None = None
        damage = None
        if path.exists():
            try:
                manifest = read_manifest(path)
            except (OSError, ValueError) as error:
                damage = error
        if self.build_lock.acquire(blocking=False):  # else a build may be writing now
            try:
                self.sweep(segment_names(manifest))
            except OSError:
                pass  # a read-only folder: nothing to sweep, nothing can be built there
            finally:
                self.build_lock.release()
        if damage is not None:
            self._warn_damaged(f"its manifest is unreadable ({damage})")
        if manifest is None:
            return [], SavedState()
        self._manifest_seen = file_token(path)
        if (
            manifest.get("version") != MANIFEST_VERSION
            or manifest.get("spec") != spec.build_dict()
            or manifest.get("reduce") != reduce
        ):
            return [], SavedState()  # an older format, or built for another spec: rebuild
        sealed = []
        for entry in manifest["segments"]:
            name = str(entry["name"])
            if reuse is not None and name in reuse:
                sealed.append((name, reuse[name]))
                self._checksums[name] = entry["files"]
                continue
            try:
                segment = SealedSegment.load(
                    self.folder / name,
                    metric=metric,
                    dimension=dimension,
                    checksums=entry["files"],
                    reduce=reduce,
                    packs=None if self.packs is None else self.packs.folder,
                )
            except Exception as error:  # any damage: the store has the truth
                self._warn_damaged(f"segment {name} is damaged ({type(error).__name__}: {error})")
                continue
            sealed.append((name, segment))
            self._checksums[name] = entry["files"]
        if not sealed:
            return [], SavedState()
        state = SavedState(
            params={str(k): int(v) for k, v in manifest.get("params", {}).items()},
            tuned_rows=int(manifest.get("tuned_rows", 0)),
            tuned_recall=manifest.get("tuned_recall"),
            curve=manifest.get("tuning_curve"),
        )
        return sealed, state

    def _warn_damaged(self, what: str) -> None:
        warnings.warn(
            f"the index of {self.folder}: {what}; rebuilding it from the store",
            LatentDBWarning,
            stacklevel=4,
        )

    def sweep(self, named: set[str]) -> None:
        """Remove what killed, failed or replaced builds left: temporary files and
        folders, and segments not ``named`` by the manifest. Only under the build lock:
        a build elsewhere may be writing its segment right now."""
        assert self.folder is not None and self.build_lock.held()
        for child in self.folder.iterdir():
            leftover = child.name.endswith(".partial")
            orphan = child.is_dir() and child.name.startswith("seg-") and child.name not in named
            if leftover or orphan:
                _remove(child)

    def saved_elsewhere(self) -> bool:
        """Whether another index object (here or in another process) has saved a
        manifest since this one last read or wrote it."""
        if self.folder is None:
            return False
        return file_token(self.folder / MANIFEST) != self._manifest_seen

    def write_segment(self, segment: SealedSegment) -> str:
        """Save a segment under a new name (no manifest names it yet); return the name.

        Raises:
            StorageError: (ReadOnlyError, DiskFullError) the files could not be written.
        """
        name = f"seg-{uuid.uuid4().hex[:12]}"
        if self.folder is not None:
            partial = self.folder / f"{name}.partial"
            pack = None if self.packs is None else self.packs.folder / f"{name}.flat"
            try:
                self._checksums[name] = segment.save(partial, pack=pack)
                os.replace(partial, self.folder / name)
            except (OSError, RuntimeError) as error:  # faiss's writer raises RuntimeError
                shutil.rmtree(partial, ignore_errors=True)
                raise file_error(error, "writing an index segment") from error
        return name

    def save(
        self,
        sealed: list[tuple[str, SealedSegment]],
        *,
        spec: IndexSpec,
        reduce: int | None,
        state: SavedState,
        adopt: bool = True,
    ) -> list[tuple[str, SealedSegment]]:
        """Write the manifest naming ``sealed`` atomically (under the build lock); drop
        the segment folders it no longer names, and have the owner adopt their packs
        (unless not ``adopt``: the caller calls :meth:`adopt_packs` itself).

        Returns:
            ``sealed`` under the names saved (a segment whose folder another process's
            build swept away is written again under a new name).
        """
        if self.folder is None:
            return sealed
        saved = []
        for name, segment in sealed:
            if name not in self._checksums or not (self.folder / name).is_dir():
                # Loaded, then swept by another process's build: write it again.
                name = self.write_segment(segment)
            saved.append((name, segment))
        manifest = {
            "version": MANIFEST_VERSION,
            "spec": spec.build_dict(),
            "reduce": reduce,
            "segments": [{"name": n, "files": self._checksums[n]} for n, _ in saved],
            "params": state.params,
            "tuned_rows": state.tuned_rows,
            "tuned_recall": state.tuned_recall,
            "tuning_curve": state.curve,
        }
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_manifest(self.folder / MANIFEST, manifest)
        except OSError as error:
            raise file_error(error, "writing the index manifest") from error
        self._manifest_seen = file_token(self.folder / MANIFEST)
        names = {name for name, _ in saved}
        self._checksums = {name: self._checksums[name] for name in names}
        if self.build_lock.held():  # else another build may be writing a segment now
            self.sweep(names)
            if adopt:
                self.adopt_packs(saved)
        return saved

    def adopt_packs(self, sealed: list[tuple[str, SealedSegment]]) -> None:
        """Have the owner adopt the packs of ``sealed`` (the segments a manifest names)
        that it has not yet, and drop those nothing needs any more (under the build
        lock). A crash before the owner adopts a pack leaves its rows stored twice
        until the next build saves, never lost; so does a failed adoption (warned)."""
        if self.packs is None or not self.packs.ready():
            return  # a bulk build inside the store's read: adopted once it ends
        assert self.build_lock.held()
        if self._adopted is None:
            self._adopted = self.packs.adopted()
        named = {segment.pack.name for _, segment in sealed if segment.pack is not None}
        try:
            for _, segment in sealed:
                if segment.pack is not None and segment.pack.name not in self._adopted:
                    self.packs.adopt(segment.pack, segment.keys, segment.sequences)
                    self._adopted.add(segment.pack.name)
            self.packs.release(named)
        except (StorageError, OSError) as error:  # the index stands; the rows stay twice
            warnings.warn(
                f"the store could not take over the index's copy of its vectors ({error}); "
                "they stay stored twice until the next build",
                LatentDBWarning,
                stacklevel=2,
            )
        self._adopted &= named


def file_error(error: OSError | RuntimeError, doing: str) -> StorageError:
    """The named error for an index file that could not be written."""
    if not isinstance(error, OSError):
        return StorageError(f"{doing} failed: {error}")
    said = f"{doing} failed: {error.strerror or error}"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ReadOnlyError(f"{said}; the index folder is read-only, only reads are possible")
    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return DiskFullError(f"{said}; the disk is full (the store is untouched)")
    return StorageError(said)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest, whose own checksum (over the rest of it) must match."""
    manifest = json.loads(path.read_text())
    if not isinstance(manifest, dict):
        raise ValueError("the manifest is not a JSON object")
    expected = manifest.pop("checksum", None)
    if manifest.get("version") == MANIFEST_VERSION and expected != _manifest_checksum(manifest):
        raise ValueError("the manifest fails its checksum")
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` with its checksum through a temporary file of a unique name."""
    text = json.dumps({**manifest, "checksum": _manifest_checksum(manifest)})
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        with temporary.open("w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _manifest_checksum(manifest: dict[str, Any]) -> int:
    return zlib.crc32(json.dumps(manifest, sort_keys=True).encode())


def segment_names(manifest: dict[str, Any] | None) -> set[str]:
    """The segment folders a manifest names (none when there is none, or it is odd)."""
    try:
        return {str(entry["name"]) for entry in (manifest or {}).get("segments", [])}
    except (KeyError, TypeError):
        return set()


def file_token(path: Path) -> tuple[int, int, int] | None:
    """Identifies one version of a file (replaced files get a new inode)."""
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_ino, status.st_mtime_ns, status.st_size)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
