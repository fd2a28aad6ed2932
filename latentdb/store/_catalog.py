"""Collections, aliases and re-embedding migrations: the catalog part of the store."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from latentdb.errors import CollectionExistsError
from latentdb.store._core import StoreCore
from latentdb.store._rows import CollectionRow, MigrationRow


class CatalogStore(StoreCore):
    """Rows of the collections, aliases and migrations tables."""

    # -- collections ---------------------------------------------------------------

    def insert_collection(
        self, name: str, *, space: dict[str, Any], embedder: str | None, config: dict[str, Any]
    ) -> CollectionRow:
        """Create a collection row (inside :meth:`write`).

        Raises:
            CollectionExistsError: the name is taken (by a collection or an alias).
        """
        self.check_name_free(name)
        seq = self.next_sequence()
        try:
            cursor = self._connection.execute(
                "INSERT INTO collections (name, space, embedder, config, created_seq) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, json.dumps(space), embedder, json.dumps(config), seq),
            )
        except sqlite3.IntegrityError:
            raise CollectionExistsError(f"a collection named {name!r} already exists") from None
        assert cursor.lastrowid is not None  # set by every INSERT
        return CollectionRow(cursor.lastrowid, name, space, embedder, config)

    def _collections(self, condition: str, params: tuple[Any, ...]) -> list[CollectionRow]:
        """The collections that pass an SQL ``condition``, by name."""
        with self.lock:
            rows = self._connection.execute(
                f"SELECT id, name, space, embedder, config FROM collections WHERE {condition} "
                "ORDER BY name",
                params,
            ).fetchall()
        return [CollectionRow(r[0], r[1], json.loads(r[2]), r[3], json.loads(r[4])) for r in rows]

    def collection_by_name(self, name: str) -> CollectionRow | None:
        """The collection called ``name``, or None."""
        found = self._collections("name = ?", (name,))
        return found[0] if found else None

    def collection_by_id(self, collection_id: int) -> CollectionRow | None:
        """The collection with that row id, or None once it is deleted."""
        found = self._collections("id = ?", (collection_id,))
        return found[0] if found else None

    def list_collections(self) -> list[CollectionRow]:
        """Every collection, by name."""
        return self._collections("1", ())

    def rename_collection(self, collection_id: int, name: str) -> None:
        """Give a collection another name (inside :meth:`write`).

        Raises:
            CollectionExistsError: the name is taken by a collection or an alias.
        """
        self.check_name_free(name)
        self.next_sequence()
        self._connection.execute(
            "UPDATE collections SET name = ? WHERE id = ?", (name, collection_id)
        )

    def check_name_free(self, name: str) -> None:
        """Collections and aliases share one namespace.

        Raises:
            CollectionExistsError: a collection or an alias is called ``name``.
        """
        with self.lock:
            taken = self._connection.execute(
                "SELECT 'a collection' FROM collections WHERE name = ?1 "
                "UNION ALL SELECT 'an alias' FROM aliases WHERE name = ?1",
                (name,),
            ).fetchone()
        if taken is not None:
            raise CollectionExistsError(f"{taken[0]} named {name!r} already exists")

    # -- aliases and migrations ----------------------------------------------------

    def aliases(self) -> dict[str, int]:
        """Every alias and the id of the collection it names."""
        with self.lock:
            return dict(self._connection.execute("SELECT name, collection_id FROM aliases"))

    def set_alias(self, name: str, collection_id: int) -> None:
        """Point an alias at a collection, creating it if new (inside :meth:`write`)."""
        self.next_sequence()
        self._connection.execute(
            "INSERT INTO aliases (name, collection_id) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET collection_id = excluded.collection_id",
            (name, collection_id),
        )

    def delete_alias(self, name: str) -> bool:
        """Remove an alias (inside :meth:`write`); False if there was none."""
        self.next_sequence()
        cursor = self._connection.execute("DELETE FROM aliases WHERE name = ?", (name,))
        return cursor.rowcount > 0

    def insert_migration(
        self, *, alias: str, source_id: int, target_id: int, embedder: str, retire_as: str | None
    ) -> int:
        """Record a new migration (inside :meth:`write`); its id."""
        self.next_sequence()
        cursor = self._connection.execute(
            "INSERT INTO migrations (alias, source_id, target_id, embedder, retire_as) "
            "VALUES (?, ?, ?, ?, ?)",
            (alias, source_id, target_id, embedder, retire_as),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def migrations(self, *, state: str | None = None) -> list[MigrationRow]:
        """Migrations, oldest first (only those in ``state`` when given)."""
        sql = (
            "SELECT id, alias, source_id, target_id, embedder, retire_as, cursor_seq, "
            "cursor_key, copied, state FROM migrations"
        )
        params: tuple[Any, ...] = ()
        if state is not None:
            sql, params = sql + " WHERE state = ?", (state,)
        with self.lock:
            rows = self._connection.execute(sql + " ORDER BY id", params).fetchall()
        return [
            MigrationRow(
                id=row[0],
                alias=row[1],
                source_id=row[2],
                target_id=row[3],
                embedder=row[4],
                retire_as=row[5],
                cursor=(row[6], row[7]),
                copied=row[8],
                state=row[9],
            )
            for row in rows
        ]

    def advance_migration(self, migration_id: int, cursor: tuple[int, int], copied: int) -> None:
        """Move a migration's cursor past rows just copied (inside :meth:`write`)."""
        self._connection.execute(
            "UPDATE migrations SET cursor_seq = ?, cursor_key = ?, copied = copied + ? "
            "WHERE id = ?",
            (cursor[0], cursor[1], copied, migration_id),
        )

    def finish_migration(self, migration_id: int) -> None:
        """Mark a migration done (inside :meth:`write`)."""
        self.next_sequence()
        self._connection.execute(
            "UPDATE migrations SET state = 'done' WHERE id = ?", (migration_id,)
        )

    def rows_after(
        self, collection_id: int, cursor: tuple[int, int], limit: int
    ) -> list[tuple[int, int, str, str | None, dict[str, Any] | None]]:
        """Up to ``limit`` rows written after ``cursor`` = (seq, key), in (seq, key) order:
        (seq, key, id, document, metadata). A rewritten row gets a new seq, so it comes
        round again."""
        with self.lock:
            rows = self._connection.execute(
                "SELECT seq, key, id, document, metadata FROM records "
                "WHERE collection_id = ? AND (seq, key) > (?, ?) ORDER BY seq, key LIMIT ?",
                (collection_id, cursor[0], cursor[1], limit),
            ).fetchall()
        return [
            (seq, key, record_id, document, None if metadata is None else json.loads(metadata))
            for seq, key, record_id, document, metadata in rows
        ]

    def count_without_document(self, collection_id: int) -> int:
        """Records of a collection that have no document."""
        with self.lock:
            return int(
                self._connection.execute(
                    "SELECT COUNT(*) FROM records WHERE collection_id = ? AND document IS NULL",
                    (collection_id,),
                ).fetchone()[0]
            )

    def ids_missing_from(self, collection_id: int, other_id: int) -> list[str]:
        """Ids stored in one collection and not in the other."""
        with self.lock:
            rows = self._connection.execute(
                "SELECT id FROM records AS r WHERE collection_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM records WHERE collection_id = ? AND id = r.id)",
                (collection_id, other_id),
            ).fetchall()
        return [row[0] for row in rows]

    def update_collection_config(self, collection_id: int, config: dict[str, Any]) -> None:
        """Replace a collection's config JSON (inside :meth:`write`)."""
        self.next_sequence()
        self._connection.execute(
            "UPDATE collections SET config = ? WHERE id = ?", (json.dumps(config), collection_id)
        )

    def drop_collection(self, collection_id: int) -> None:
        """Delete a collection, all its rows and the migrations from or to it (inside
        :meth:`write`; aliases of it must be gone first)."""
        self.next_sequence()
        for table in ("records", "tombstones", "packs"):
            self._connection.execute(
                f"DELETE FROM {table} WHERE collection_id = ?", (collection_id,)
            )
        self._connection.execute(
            "DELETE FROM migrations WHERE source_id = ?1 OR target_id = ?1", (collection_id,)
        )
        self._connection.execute("DELETE FROM collections WHERE id = ?", (collection_id,))
