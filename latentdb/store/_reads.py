"""Reading records: lookups, filtered selections, full-text ranking, and the change
feed a reader catches up from (rows and tombstones after a sequence number)."""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from latentdb.errors import FilterError, StorageError
from latentdb.store._packs import PackedRows, PackGoneError, PackStore, packed_rows
from latentdb.store._rows import (
    Changes,
    FloatMatrix,
    KeyArray,
    SqlFilter,
    StoredRecord,
    blobs_to_vectors,
    json_list,
)
from latentdb.store._text import TextMatch, text_expressions

# Rows fetched from SQLite at a time when reading a collection back.
_READ_CHUNK = 4096
# Times a read is made again when a pack its snapshot refers to was dropped meanwhile
# (each try reads a newer snapshot, which refers to the pack that replaced it).
_PACK_TRIES = 3

_Read = TypeVar("_Read")


def _changes(
    cursor: sqlite3.Cursor,
    count: int,
    deleted: KeyArray,
    sequence: int,
    dimension: int,
    unpack: Callable[[FloatMatrix, PackedRows], None],
) -> Changes:
    """Changes from a cursor over at most ``count`` (key, id, vector, seq, pack,
    pack_row) rows, read a chunk at a time into arrays made once: the blobs of a whole
    collection never sit in memory together (as bytes they stayed in malloc's heap
    after use, +170 MiB at 100k x 384). Packed rows' vectors come from ``unpack``."""
    keys = np.empty(count, dtype=np.int64)
    sequences = np.empty(count, dtype=np.int64)
    vectors = np.empty((count, dimension), dtype=np.float32)
    ids: list[str] = []
    filled = 0
    while chunk := cursor.fetchmany(_READ_CHUNK):
        stop = filled + len(chunk)
        keys[filled:stop] = [row[0] for row in chunk]
        ids.extend(row[1] for row in chunk)
        _vectors_into(vectors[filled:stop], chunk, 2, dimension, unpack)
        sequences[filled:stop] = [row[3] for row in chunk]
        filled = stop
    if filled < count:  # keys asked for that are not stored
        keys, sequences, vectors = keys[:filled], sequences[:filled], vectors[:filled].copy()
    return Changes(
        keys=keys,
        ids=ids,
        vectors=vectors,
        sequences=sequences,
        deleted=deleted,
        sequence=sequence,
        fresh=True,
    )


def _vectors_into(
    out: FloatMatrix,
    rows: Sequence[Sequence[Any]],
    column: int,
    dimension: int,
    unpack: Callable[[FloatMatrix, PackedRows], None],
) -> None:
    """Each row's vector into ``out``: its blob at ``column``, or where that is empty
    its pack row (the pack and the row within it: the statement's last two columns)."""
    blobs = [row[column] for row in rows]
    packed = packed_rows(blobs, [row[-2] for row in rows], [row[-1] for row in rows])
    if packed is None:
        out[:] = blobs_to_vectors(blobs, dimension)
        return
    stored = np.ones(len(blobs), dtype=bool)
    stored[packed.positions] = False
    if stored.any():
        out[stored] = blobs_to_vectors(
            [b for b, s in zip(blobs, stored, strict=True) if s], dimension
        )
    unpack(out, packed)


def _fetch_sql(vectors: bool, documents: bool, metadatas: bool) -> str:
    columns = ["key", "id"]
    columns += ["vector"] if vectors else ["NULL"]
    columns += ["document"] if documents else ["NULL"]
    columns += ["metadata"] if metadatas else ["NULL"]
    columns += ["pack", "pack_row"] if vectors else ["NULL", "NULL"]
    return f"SELECT {', '.join(columns)} FROM records WHERE key IN (SELECT value FROM json_each(?))"


# fetch()'s statement for each choice of (vectors, documents, metadatas).
_FETCH_SQL = {choice: _fetch_sql(*choice) for choice in itertools.product((False, True), repeat=3)}


# A collection's keys and write sequences, and the sequence the snapshot runs up to.
_VERSIONS_SQL = (
    "SELECT (SELECT value FROM sequence), json_group_array(key), json_group_array(seq) "
    "FROM records WHERE collection_id = ?"
)


def _versions(found: tuple[int, str, str]) -> tuple[int, KeyArray, KeyArray]:
    """(sequence, keys ascending, their write sequences) from _VERSIONS_SQL's row."""
    keys = np.array(json.loads(found[1]), dtype=np.int64)
    sequences = np.array(json.loads(found[2]), dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    return int(found[0]), keys[order], sequences[order]


_PAYLOADS_SQL = (
    "SELECT key, document, metadata FROM records WHERE key IN (SELECT value FROM json_each(?))"
)


def _ranking_sql(
    collection_id: int, scored: str, required: str | None, limit: int, where: SqlFilter | None
) -> tuple[str, list[Any]]:
    """The statement ranking a collection's rows that match ``scored`` (and ``required``)
    by BM25 over ``scored``; ties in key order."""
    sql = ""
    params: list[Any] = []
    if required is not None:
        sql = (
            "WITH required(key) AS MATERIALIZED "
            "(SELECT rowid FROM records_fts WHERE records_fts MATCH ?) "
        )
        params.append(required)
    sql += (
        "SELECT r.key FROM records_fts AS f JOIN records AS r ON r.key = f.rowid "
        "WHERE records_fts MATCH ? AND r.collection_id = ?"
    )
    params += [scored, collection_id]
    if required is not None:
        # "+f.rowid": a bare rowid makes SQLite hand FTS5 the keys one by one, and FTS5
        # runs the whole query again for each (2.6 s for 778 keys instead of 18 ms).
        # BM25 is then computed for the rows that pass, in the sort, not for every match.
        sql += " AND +f.rowid IN required"
    if where is not None:
        sql += f" AND r.key IN (SELECT key FROM records WHERE collection_id = ? AND ({where.sql}))"
        params += [collection_id, *where.params]
    sql += " ORDER BY bm25(records_fts), r.key LIMIT ?"
    params.append(limit)
    return sql, params


class RecordReads(PackStore):
    """Reads of the records and tombstones tables."""

    def _unpacking(self, dimension: int) -> Callable[[FloatMatrix, PackedRows], None]:
        def unpack(out: FloatMatrix, packed: PackedRows) -> None:
            self._packed_vectors(out, packed, dimension=dimension)

        return unpack

    def _again_if_repacked(self, read: Callable[[], _Read]) -> _Read:
        """``read()``, made again when a pack its snapshot referred to was dropped since
        (another pack holds those rows now).

        Raises:
            StorageError: the pack is still missing after a few tries.
        """
        for _ in range(_PACK_TRIES - 1):
            with contextlib.suppress(PackGoneError):
                return read()
        try:
            return read()
        except PackGoneError as error:
            raise StorageError(f"{error}, and rows still refer to it") from None

    def count(self, collection_id: int) -> int:
        """Number of records in a collection."""
        with self.lock:
            return int(
                self._connection.execute(
                    "SELECT COUNT(*) FROM records WHERE collection_id = ?", (collection_id,)
                ).fetchone()[0]
            )

    def keys_for_ids(self, collection_id: int, ids: Sequence[str]) -> dict[str, int]:
        """Map each stored id among ``ids`` to its row key; missing ids are absent."""
        with self.lock:
            rows = self._connection.execute(
                "SELECT id, key FROM records WHERE collection_id = ? "
                "AND id IN (SELECT value FROM json_each(?))",
                (collection_id, json_list(ids)),
            ).fetchall()
        return dict(rows)

    def select(
        self,
        collection_id: int,
        *,
        ids: Sequence[str] | None = None,
        where: SqlFilter | None = None,
        limit: int | None = None,
        offset: int = 0,
        after: int | None = None,
    ) -> list[tuple[int, str]]:
        """(key, id) of the records among ``ids`` that pass ``where`` (and whose key is
        above ``after``), in key order."""
        sql = "SELECT key, id FROM records WHERE collection_id = ?"
        params: list[Any] = [collection_id]
        if after is not None:
            sql += " AND key > ?"
            params.append(after)
        if ids is not None:
            sql += " AND id IN (SELECT value FROM json_each(?))"
            params.append(json_list(ids))
        if where is not None:
            sql += f" AND ({where.sql})"
            params.extend(where.params)
        sql += " ORDER BY key LIMIT ? OFFSET ?"
        params.extend((-1 if limit is None else limit, offset))
        with self.lock:
            try:
                return self._connection.execute(sql, params).fetchall()
            except sqlite3.OperationalError as error:
                if "fts5" in str(error):  # a malformed $match query
                    raise FilterError(f"$match: {error}") from None
                raise

    def text_ranking(
        self,
        collection_id: int,
        match: str | TextMatch,
        limit: int,
        *,
        where: SqlFilter | None = None,
    ) -> list[int]:
        """Keys of the records whose documents match a full-text query, best BM25 first.

        Args:
            collection_id: The collection.
            match: An FTS5 query; or plain words (:class:`TextMatch`), where rows that
                hold only common words are not ranked (see :mod:`latentdb.store._text`).
            limit: Keys to return at most.
            where: Only records passing this filter.

        Raises:
            FilterError: ``match`` is not a valid FTS5 query.
        """
        with self.lock:
            try:
                if isinstance(match, str):
                    scored, required = match, None
                else:
                    scored, required = text_expressions(self._connection, match)
                sql, params = _ranking_sql(collection_id, scored, required, limit, where)
                return [row[0] for row in self._connection.execute(sql, params)]
            except sqlite3.OperationalError as error:
                if "fts5" in str(error):
                    raise FilterError(f"$match: {error}") from None
                raise

    def fetch(
        self,
        keys: Sequence[int],
        *,
        dimension: int,
        vectors: bool = False,
        documents: bool = False,
        metadatas: bool = False,
        unlocked: bool = False,
    ) -> dict[int, StoredRecord]:
        """The asked-for fields of the given row keys, by key (missing keys absent).

        Args:
            unlocked: Read through the calling thread's own connection (:meth:`reader`),
                without the store's lock: the latest commit, whatever transaction the
                store's connection has open.
        """
        sql = _FETCH_SQL[vectors, documents, metadatas]
        parameter = ("[" + ",".join(map(str, keys)) + "]",)  # int keys: valid JSON

        def read() -> dict[int, StoredRecord]:
            if unlocked:
                rows = self.reader().execute(sql, parameter).fetchall()
            else:
                with self.lock:
                    rows = self._connection.execute(sql, parameter).fetchall()
            found: list[FloatMatrix | None] = [None] * len(rows)
            if vectors:
                matrix = np.empty((len(rows), dimension), dtype=np.float32)
                _vectors_into(matrix, rows, 2, dimension, self._unpacking(dimension))
                found = list(matrix)
            out: dict[int, StoredRecord] = {}
            for position, (key, record_id, _, document, metadata, _, _) in enumerate(rows):
                out[key] = StoredRecord(
                    key,
                    record_id,
                    found[position],
                    document,
                    json.loads(metadata) if metadata is not None else None,
                )
            return out

        return self._again_if_repacked(read)

    def payloads(self, keys: Sequence[int]) -> dict[int, tuple[str | None, str | None]]:
        """Document and metadata JSON (as stored) of each of ``keys`` found, read through
        the calling thread's own connection without the store's lock (the latest
        commit, see :meth:`reader`)."""
        parameter = ("[" + ",".join(map(str, keys)) + "]",)  # int keys: valid JSON
        rows = self.reader().execute(_PAYLOADS_SQL, parameter).fetchall()
        return {key: (document, metadata) for key, document, metadata in rows}

    def changes_since(self, collection_id: int, sequence: int, *, dimension: int) -> Changes:
        """Rows written and deleted in a collection after ``sequence``, consistently."""

        def read() -> Changes:
            with self.read():
                connection = self._connection
                now = self._sequence_now()
                deleted = self._deleted_since(collection_id, sequence)
                dead = np.array(deleted, dtype=np.int64)
                count = connection.execute(
                    "SELECT COUNT(*) FROM records WHERE collection_id = ? AND seq > ?",
                    (collection_id, sequence),
                ).fetchone()[0]
                cursor = connection.execute(
                    "SELECT key, id, vector, seq, pack, pack_row FROM records "
                    "WHERE collection_id = ? AND seq > ? ORDER BY key",
                    (collection_id, sequence),
                )
                return _changes(
                    cursor, int(count), dead, now, dimension, self._unpacking(dimension)
                )

        return self._again_if_repacked(read)

    def metadata_field(
        self,
        collection_id: int,
        path: str,
        *,
        after: int = 0,
        limit: int = -1,
        unlocked: bool = False,
    ) -> tuple[int, KeyArray, list[Any]]:
        """One metadata key of the records with a key above ``after`` (at most ``limit``
        of them, in key order), read in one statement (one snapshot): (the sequence it
        saw, their keys int64 (n,) ascending, each one's value at the JSON ``path`` such
        as '$."lang"', None where it has none).

        Keys and values come back as two JSON arrays: 100k rows fetched as tuples cost
        ~1.4x the CPU. ``+collection_id`` keeps SQLite on the key (rowid) range: through
        the (collection_id, seq) index it sorted every row by key.

        Args:
            unlocked: Read through the calling thread's own connection (:meth:`reader`),
                without the store's lock: a long read that queries need not wait for.
        """
        return self._metadata_in_key_order(
            "metadata -> ?", (path,), collection_id, after, limit, unlocked
        )

    def metadata_rows(
        self, collection_id: int, *, after: int = 0, limit: int = -1, unlocked: bool = False
    ) -> tuple[int, KeyArray, list[dict[str, Any] | None]]:
        """The whole metadata of the records with a key above ``after`` (at most
        ``limit`` of them, in key order), read in one statement as :meth:`metadata_field`
        reads one key: (the sequence it saw, their keys int64 (n,) ascending, each one's
        metadata, None where it has none)."""
        return self._metadata_in_key_order(
            "json(metadata)", (), collection_id, after, limit, unlocked
        )

    def _metadata_in_key_order(
        self,
        value: str,
        value_parameters: tuple[Any, ...],
        collection_id: int,
        after: int,
        limit: int,
        unlocked: bool,
    ) -> tuple[int, KeyArray, list[Any]]:
        """:meth:`metadata_field` and :meth:`metadata_rows`: the SQL expression
        ``value`` (over ``metadata``) of each record after ``after``, in key order."""
        sql = (
            "SELECT (SELECT value FROM sequence), json_group_array(key), "
            f"json_group_array({value}) FROM (SELECT key, metadata FROM records "
            "WHERE key > ? AND +collection_id = ? ORDER BY key LIMIT ?)"
        )
        parameters = (*value_parameters, after, collection_id, limit)
        if unlocked:
            now, keys, values = self.reader().execute(sql, parameters).fetchone()
        else:
            with self.read():
                now, keys, values = self._connection.execute(sql, parameters).fetchone()
        return int(now), np.array(json.loads(keys), dtype=np.int64), json.loads(values)

    def sequence(self) -> int:
        """The highest write sequence committed."""
        with self.read():
            return self._sequence_now()

    def keys_matching(self, collection_id: int, keys: Sequence[int], where: SqlFilter) -> KeyArray:
        """Which of ``keys`` (a collection's row keys) pass ``where``, ascending, each row
        found by its key (through ``select``'s plan SQLite read every row of the
        collection to test 16k keys), read through the calling thread's own connection
        (:meth:`reader`: its pages memory-mapped, ~2x faster for scattered rows)."""
        parameter = "[" + ",".join(map(str, keys)) + "]"  # int keys: valid JSON
        rows = (
            self.reader()
            .execute(
                "SELECT key FROM records WHERE key IN (SELECT value FROM json_each(?)) "
                f"AND +collection_id = ? AND ({where.sql}) ORDER BY key",
                (parameter, collection_id, *where.params),
            )
            .fetchall()
        )
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def metadata_since(
        self, collection_id: int, sequence: int, *, unlocked: bool = False
    ) -> tuple[int, list[tuple[int, dict[str, Any] | None]], list[int]]:
        """(sequence now, (key, metadata) of rows written after ``sequence``, keys
        deleted after it), read consistently.

        Args:
            unlocked: Read through the calling thread's own connection (:meth:`reader`),
                without the store's lock: three statements, each the latest commit; the
                sequence first, so every write up to it is in what follows (and perhaps
                later ones, which a catch-up from that sequence then applies again).
        """
        rows_sql = "SELECT key, metadata FROM records WHERE collection_id = ? AND seq > ?"
        if unlocked:
            connection = self.reader()
            now = int(connection.execute("SELECT value FROM sequence").fetchone()[0])
            rows = connection.execute(rows_sql, (collection_id, sequence)).fetchall()
            deleted = [
                row[0]
                for row in connection.execute(
                    "SELECT key FROM tombstones WHERE collection_id = ? AND seq > ?",
                    (collection_id, sequence),
                ).fetchall()
            ]
        else:
            with self.read():
                now = self._sequence_now()
                rows = self._connection.execute(rows_sql, (collection_id, sequence)).fetchall()
                deleted = self._deleted_since(collection_id, sequence)
        loads = json.loads
        return now, [(key, None if text is None else loads(text)) for key, text in rows], deleted

    def _sequence_now(self) -> int:
        """The highest write sequence number committed (inside a transaction)."""
        return int(self._connection.execute("SELECT value FROM sequence").fetchone()[0])

    def _deleted_since(self, collection_id: int, sequence: int) -> list[int]:
        """Keys of a collection's tombstones stamped after ``sequence``."""
        rows = self._connection.execute(
            "SELECT key FROM tombstones WHERE collection_id = ? AND seq > ?",
            (collection_id, sequence),
        ).fetchall()
        return [row[0] for row in rows]

    @contextmanager
    def all_rows(
        self, collection_id: int, *, dimension: int
    ) -> Iterator[tuple[int, Iterator[tuple[KeyArray, FloatMatrix, KeyArray]]]]:
        """Every row of a collection as (keys, vectors, write sequences) chunks in key
        order, read while the context is open: (row count, chunks). For building an
        index without holding the whole collection in memory."""
        with self.read():
            connection = self._connection
            count = connection.execute(
                "SELECT COUNT(*) FROM records WHERE collection_id = ?", (collection_id,)
            ).fetchone()[0]
            cursor = connection.execute(
                "SELECT key, vector, seq, pack, pack_row FROM records WHERE collection_id = ? "
                "ORDER BY key",
                (collection_id,),
            )
            unpack = self._unpacking(dimension)

            def chunks() -> Iterator[tuple[KeyArray, FloatMatrix, KeyArray]]:
                # One snapshot throughout: a pack it refers to that is dropped meanwhile
                # (by an index build, which callers of this one exclude) is an error.
                while rows := cursor.fetchmany(_READ_CHUNK):
                    keys = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
                    vectors = np.empty((len(rows), dimension), dtype=np.float32)
                    _vectors_into(vectors, rows, 1, dimension, unpack)
                    sequences = np.fromiter((row[2] for row in rows), np.int64, len(rows))
                    yield keys, vectors, sequences

            yield int(count), chunks()

    def rows_by_key(self, keys: Sequence[int], *, dimension: int) -> Changes:
        """The current rows of some keys (missing keys left out), as Changes."""
        payload = json_list([int(k) for k in keys])

        def read() -> Changes:
            with self.read():
                now = self._sequence_now()
                cursor = self._connection.execute(
                    "SELECT key, id, vector, seq, pack, pack_row FROM records "
                    "WHERE key IN (SELECT value FROM json_each(?)) ORDER BY key",
                    (payload,),
                )
                nothing = np.empty(0, dtype=np.int64)
                unpack = self._unpacking(dimension)
                return _changes(cursor, len(keys), nothing, now, dimension, unpack)

        return self._again_if_repacked(read)

    def versions(self, collection_id: int) -> tuple[KeyArray, KeyArray]:
        """Every record of a collection as (keys int64 (n,) ascending, the write
        sequence of each), read consistently: answered from the records_by_seq index
        alone (the table's pages hold the vectors), and as one JSON array each: at 1M
        rows, 1M tuples took ~1.5x as long to fetch."""
        with self.read():
            found = self._connection.execute(_VERSIONS_SQL, (collection_id,)).fetchone()
        return _versions(found)[1:]

    def versions_unlocked(self, collection_id: int) -> tuple[int, KeyArray, KeyArray]:
        """:meth:`versions` read through the calling thread's own connection, without
        the store's lock, with the write sequence its snapshot ran up to: (sequence,
        keys, their write sequences). A caller that finds the same sequence in its own
        snapshot has the same versions (every write takes a new sequence number)."""
        return _versions(self.reader().execute(_VERSIONS_SQL, (collection_id,)).fetchone())

    def ids_by_key(
        self, collection_id: int, keys: Sequence[int] | None = None, *, unlocked: bool = False
    ) -> dict[int, str]:
        """The user id of each record of a collection by its key (of those ``keys``
        only, where given; keys it no longer holds are left out), answered from the
        (collection_id, id) index alone where every key is asked.

        Args:
            unlocked: Read through the calling thread's own connection (:meth:`reader`).
        """
        if keys is None:
            sql = (
                "SELECT json_group_array(key), json_group_array(id) FROM records "
                "WHERE collection_id = ?"
            )
            parameters: tuple[Any, ...] = (collection_id,)
        else:
            sql = (
                "SELECT json_group_array(key), json_group_array(id) FROM records "
                "WHERE key IN (SELECT value FROM json_each(?)) AND +collection_id = ?"
            )
            parameters = ("[" + ",".join(map(str, keys)) + "]", collection_id)
        if unlocked:
            found = self.reader().execute(sql, parameters).fetchone()
        else:
            with self.read():
                found = self._connection.execute(sql, parameters).fetchone()
        return dict(zip(json.loads(found[0]), json.loads(found[1]), strict=True))
