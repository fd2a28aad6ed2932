"""Vector packs: files of float32 rows that hold the vectors of sealed rows, so that a
collection keeps each vector once (issue 20: at 1M x 384 the SQLite file and the index
each held a 1.43 GiB copy).

A pack is written whole, made durable, and then *adopted*: in the transactions that
record it, each row it holds at the very write sequence it was packed at gets an empty
``vector`` blob and a reference (pack, row). From then on the pack is part of the
store's truth, as the SQLite file is: a row's vector is its blob when the blob is not
empty, else its pack's row. Writing a new vector to a row (insert, upsert, update) puts
a blob back and drops the reference, so a pack's rows never change. An index may map
the same file for its own storage (an HNSW graph's float rows, see the index layer),
which is how a vector ends up stored once.

The store knows nothing of what wrote a pack: only the byte ``offset`` of its first row,
its row count, its size and its xxh3. A pack is checked against them the first time
this process reads it. A pack its writer no longer names is dropped, the rows
that still refer to it given their vectors back as blobs first
(:meth:`PackStore.release_packs`); a reader whose snapshot still referred to it reads
again. A damaged or missing pack is a :class:`StorageError` naming it: its
vectors are lost as a damaged page of the SQLite file would be.
"""

from __future__ import annotations

import mmap
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import xxhash

from latentdb.errors import StorageError
from latentdb.store._core import StoreCore
from latentdb.store._rows import KeyArray, vectors_to_blobs

__all__ = ["PACKS_FOLDER", "PackStore", "PackedRows"]

# The store's folder of packs, beside its SQLite file: one subfolder per collection id.
PACKS_FOLDER = "vectors"
# Rows re-pointed per transaction when a pack is adopted: one transaction for 1M rows
# would grow the WAL to about the size of the records table (every page rewritten)
# and hold the write lock for all of it. A background build's adoption runs beside
# writes, which wait for at most one chunk (~0.1 s per 20k rows).
ADOPT_CHUNK = 5_000
# reclaim() rebuilds the file (VACUUM) once packs emptied this many bytes of blobs, and
# at least a quarter of it: after a pack of 1M rows x 384 is adopted, the records
# table holds ~0.15 GB of its ~1.6 GB, and SQLite keeps every page.
RECLAIM_BYTES = 64 << 20


class PackGoneError(StorageError):
    """A pack that the read's snapshot refers to was dropped since (read again)."""


@dataclass(frozen=True)
class PackedRows:
    """Which rows of a read are packed: their positions in the read, and where each
    one's vector lies.

    Attributes:
        positions: int (m,) positions in the read's rows.
        packs: int64 (m,) pack ids.
        rows: int64 (m,) rows within each pack.
    """

    positions: npt.NDArray[np.intp]
    packs: KeyArray
    rows: KeyArray


class PackStore(StoreCore):
    """The packs table, adopting packs, and reading vectors out of them."""

    # Mapped packs by id (a mapping outlives the file's removal: its pages stay).
    _mapped: dict[int, npt.NDArray[np.float32]]
    # Bytes of blobs emptied by adoptions since this process's last VACUUM.
    _freed: int

    def packs_folder(self, collection_id: int) -> Path:
        """Where a collection's packs are written (by an index) and read."""
        return self.path.parent / PACKS_FOLDER / str(collection_id)

    def adopt_pack(
        self,
        collection_id: int,
        name: str,
        *,
        offset: int,
        dimension: int,
        size: int,
        checksum: int,
        keys: KeyArray,
        sequences: KeyArray,
    ) -> int:
        """Make the pack ``name`` (in :meth:`packs_folder`, durable, row ``i`` the
        vector of ``keys[i]`` at write sequence ``sequences[i]``) the store's copy of
        the rows it holds at those sequences, a chunk of rows per transaction; rows
        replaced or deleted since keep what they have. Safe to repeat, and to stop at
        any point: each row has its blob or its pack row, both the same vector.

        Args:
            offset: Byte offset of the pack's first row; rows are ``dimension``
                little-endian float32 values each, one after another.
            size, checksum: The file's byte size and xxh3, checked on first read.

        Returns:
            How many rows the store held a blob for and now reads from packs (those
            moved from another pack are not counted: they free nothing).
        """
        packed_before = self._packed_count()
        with self.write():
            self._connection.execute(
                "INSERT INTO packs (collection_id, name, offset, dimension, rows, bytes, xxh3) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (collection_id, name) DO NOTHING",
                (
                    collection_id,
                    name,
                    offset,
                    dimension,
                    int(keys.shape[0]),
                    size,
                    _signed(checksum),
                ),
            )
            pack = int(
                self._connection.execute(
                    "SELECT id FROM packs WHERE collection_id = ? AND name = ?",
                    (collection_id, name),
                ).fetchone()[0]
            )
        for start in range(0, keys.shape[0], ADOPT_CHUNK):
            stop = min(start + ADOPT_CHUNK, keys.shape[0])
            with self.write():
                self._connection.executemany(
                    "UPDATE records SET vector = x'', pack = ?, pack_row = ? "
                    "WHERE key = ? AND seq = ? AND collection_id = ?",
                    zip(
                        [pack] * (stop - start),
                        range(start, stop),
                        keys[start:stop].tolist(),
                        sequences[start:stop].tolist(),
                        [collection_id] * (stop - start),
                        strict=True,
                    ),
                )
        with self.write():
            self._connection.execute("UPDATE packs SET adopted = 1 WHERE id = ?", (pack,))
        return max(self._packed_count() - packed_before, 0)

    def _packed_count(self) -> int:
        """Rows of every collection that read their vector from a pack (from the
        records_by_pack index alone)."""
        with self.lock:
            found = self._connection.execute(
                "SELECT COUNT(*) FROM records WHERE pack IS NOT NULL"
            ).fetchone()
        return int(found[0])

    def pack_names(self, collection_id: int) -> set[str]:
        """Names of the packs of a collection that are adopted whole."""
        with self.lock:
            rows = self._connection.execute(
                "SELECT name FROM packs WHERE collection_id = ? AND adopted = 1", (collection_id,)
            ).fetchall()
        return {str(row[0]) for row in rows}

    def release_packs(self, collection_id: int, *, named: set[str]) -> set[str]:
        """Drop the packs of a collection that its index no longer ``named``: rows
        still referring to one (rows the newer segments did not take, such as one whose
        metadata changed after it was packed) get their vector back as a blob first,
        so one such row never keeps a whole pack alive. Removes the files of dropped
        packs, and files no pack row names (a build killed before its adoption).

        Returns:
            The names of the packs kept.
        """
        with self.write():
            packs = self._connection.execute(
                "SELECT id, name, dimension FROM packs WHERE collection_id = ?", (collection_id,)
            ).fetchall()
            dropped = [(pack, dimension) for pack, name, dimension in packs if name not in named]
            for pack, dimension in dropped:
                self._unpack_rows(pack, dimension)
            self._connection.executemany(
                "DELETE FROM packs WHERE id = ?", [(pack,) for pack, _ in dropped]
            )
            kept = {str(name) for _, name, _ in packs if name in named}
        for pack, _ in dropped:
            self._mapped.pop(pack, None)
        folder = self.packs_folder(collection_id)
        if folder.is_dir():
            for file in folder.iterdir():
                if file.name not in kept and file.name not in named:
                    file.unlink(missing_ok=True)
        return kept

    def _unpack_rows(self, pack: int, dimension: int) -> None:
        """Give the rows that refer to ``pack`` their vectors back as blobs (inside
        :meth:`write`)."""
        rows = self._connection.execute(
            "SELECT key, pack_row FROM records WHERE pack = ?", (pack,)
        ).fetchall()
        if not rows:
            return
        vectors = np.empty((len(rows), dimension), dtype=np.float32)
        where = PackedRows(
            np.arange(len(rows)),
            np.full(len(rows), pack, dtype=np.int64),
            np.array([row[1] for row in rows], dtype=np.int64),
        )
        self._packed_vectors(vectors, where, dimension=dimension)
        self._connection.executemany(
            "UPDATE records SET vector = ?, pack = NULL, pack_row = NULL WHERE key = ?",
            zip(vectors_to_blobs(vectors), [row[0] for row in rows], strict=True),
        )

    def remove_packs_folder(self, collection_id: int) -> None:
        """Remove the folder of a dropped collection's packs."""
        shutil.rmtree(self.packs_folder(collection_id), ignore_errors=True)

    def reclaim(self, *, freed: int) -> bool:
        """Give the pages of the blobs packs emptied back to the file system when they
        are many: ``freed`` bytes of blobs more, added to those emptied since the last
        VACUUM by this process (each seal empties a few MB), at least
        :data:`RECLAIM_BYTES` and a quarter of the file. SQLite keeps the pages of rows
        that shrank, partly empty, and its free-page count does not show them. Runs
        VACUUM, which rewrites the live pages (seconds at 1M rows), then truncates the
        WAL where no reader holds it. Returns whether it ran."""
        with self.lock:
            if self._transaction_thread or self.read_only:  # (this thread's: under the lock)
                return False
            connection = self._connection
            size = int(connection.execute("PRAGMA page_size").fetchone()[0])
            total = int(connection.execute("PRAGMA page_count").fetchone()[0]) * size
            self._freed += freed
            if self._freed < RECLAIM_BYTES or 4 * self._freed < total:
                return False
            self._freed = 0
            connection.execute("VACUUM")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return True

    def _packed_vectors(
        self, vectors: npt.NDArray[np.float32], packed: PackedRows, *, dimension: int
    ) -> None:
        """Fill ``vectors[packed.positions]`` from their packs.

        Raises:
            PackGoneError: a pack this read refers to was dropped since (read again).
            StorageError: a pack is damaged, or another space's.
        """
        for pack in np.unique(packed.packs).tolist():
            chosen = packed.packs == pack
            rows = self._pack(int(pack), dimension)
            wanted = packed.rows[chosen]
            if wanted.size and (wanted.min() < 0 or wanted.max() >= rows.shape[0]):
                raise StorageError(f"vector pack {pack} has no row {int(wanted.max())}")
            vectors[packed.positions[chosen]] = rows[wanted]

    def _pack(self, pack: int, dimension: int) -> npt.NDArray[np.float32]:
        """Pack ``pack``'s rows, mapped (checked against its recorded size and xxh3 the
        first time)."""
        mapped = self._mapped.get(pack)
        if mapped is not None:
            return mapped
        with self.lock:
            found = self._connection.execute(
                "SELECT collection_id, name, offset, dimension, rows, bytes, xxh3 FROM packs "
                "WHERE id = ?",
                (pack,),
            ).fetchone()
        if found is None:
            raise PackGoneError(f"vector pack {pack} was dropped")
        collection_id, name, offset, stored_dimension, rows, size, checksum = found
        path = self.packs_folder(int(collection_id)) / str(name)
        if stored_dimension != dimension:
            raise StorageError(
                f"vector pack {path} holds {stored_dimension}-d rows, not {dimension}"
            )
        try:
            with path.open("rb") as handle:
                actual = os.fstat(handle.fileno()).st_size
                if actual != size or actual < offset + rows * dimension * 4:
                    raise StorageError(
                        f"vector pack {path} is damaged: {actual} bytes, {size} recorded; "
                        f"the vectors of its {rows} rows cannot be read"
                    )
                with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                    if _signed(xxhash.xxh3_64_intdigest(view)) != checksum:
                        raise StorageError(
                            f"vector pack {path} is damaged (its checksum differs); the "
                            f"vectors of its {rows} rows cannot be read"
                        )
        except FileNotFoundError:
            raise PackGoneError(f"vector pack {path} was removed") from None
        except OSError as error:
            raise StorageError(f"cannot read the vector pack {path}: {error}") from error
        mapped = np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=(rows, dimension))
        self._mapped[pack] = mapped
        return mapped


def _signed(value: int) -> int:
    """A 64-bit unsigned hash as the signed integer SQLite stores."""
    return value - (1 << 64) if value >= 1 << 63 else value


def packed_rows(
    blobs: Sequence[bytes], packs: Sequence[int | None], rows: Sequence[int | None]
) -> PackedRows | None:
    """The packed rows among a read's: those whose blob is empty (None: none are).

    Raises:
        StorageError: an empty blob with no pack row (a damaged record).
    """
    positions = [i for i, blob in enumerate(blobs) if not blob]
    if not positions:
        return None
    if any(packs[i] is None or rows[i] is None for i in positions):
        raise StorageError("a record has neither a vector nor a pack row: the file is damaged")
    pack_ids = np.array([packs[i] for i in positions], dtype=np.int64)
    pack_rows = np.array([rows[i] for i in positions], dtype=np.int64)
    return PackedRows(np.array(positions, dtype=np.intp), pack_ids, pack_rows)
