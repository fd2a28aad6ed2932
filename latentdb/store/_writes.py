"""Writing records, inside :meth:`~latentdb.store.Store.write`: every row is stamped
with the transaction's write sequence number, every deleted row leaves a tombstone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from latentdb.store._core import StoreCore
from latentdb.store._rows import FloatMatrix, json_list, vectors_to_blobs


class RecordWrites(StoreCore):
    """Writes to the records and tombstones tables (inside :meth:`write`)."""

    def insert_records(
        self,
        collection_id: int,
        *,
        ids: Sequence[str],
        vectors: FloatMatrix,
        documents: Sequence[str | None],
        metadatas: Sequence[str | None],
        sequence: int,
    ) -> None:
        """Insert new rows, or replace every field of rows whose id is already stored.

        A replaced row keeps its key, so its place in insertion order stays.
        """
        self._connection.executemany(
            "INSERT INTO records (collection_id, id, vector, document, metadata, seq) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (collection_id, id) DO UPDATE SET vector = excluded.vector, "
            "pack = NULL, pack_row = NULL, "
            "document = excluded.document, metadata = excluded.metadata, seq = excluded.seq",
            zip(
                [collection_id] * len(ids),
                ids,
                vectors_to_blobs(vectors),
                documents,
                metadatas,
                [sequence] * len(ids),
                strict=True,
            ),
        )

    def update_records(
        self,
        keys: Sequence[int],
        *,
        vectors: FloatMatrix | None,
        documents: Sequence[str | None] | None,
        metadatas: Sequence[str | None] | None,
        sequence: int,
    ) -> None:
        """Replace the given fields of existing rows; fields passed as None stay."""
        assignments = ["seq = ?"]
        columns: list[Sequence[Any]] = [[sequence] * len(keys)]
        if vectors is not None:
            assignments.append("vector = ?, pack = NULL, pack_row = NULL")  # see _packs.py
            columns.append(vectors_to_blobs(vectors))
        if documents is not None:
            assignments.append("document = ?")
            columns.append(documents)
        if metadatas is not None:
            assignments.append("metadata = ?")
            columns.append(metadatas)
        self._connection.executemany(
            f"UPDATE records SET {', '.join(assignments)} WHERE key = ?",
            zip(*columns, keys, strict=True),
        )

    def delete_records(self, collection_id: int, keys: Sequence[int], *, sequence: int) -> None:
        """Delete rows and leave a tombstone for each, stamped with ``sequence``."""
        payload = json_list([int(k) for k in keys])
        self._connection.execute(
            "DELETE FROM records WHERE key IN (SELECT value FROM json_each(?))", (payload,)
        )
        self._connection.execute(
            "INSERT INTO tombstones (collection_id, key, seq) SELECT ?, value, ? FROM json_each(?)",
            (collection_id, sequence, payload),
        )

    def keys_at(self, collection_id: int, sequence: int) -> list[tuple[int, str]]:
        """(key, id) of the rows stamped with ``sequence``, in key order."""
        return self._connection.execute(
            "SELECT key, id FROM records WHERE collection_id = ? AND seq = ? ORDER BY key",
            (collection_id, sequence),
        ).fetchall()
