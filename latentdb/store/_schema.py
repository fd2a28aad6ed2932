"""The database file's schema: numbered migrations and the stamp that says a file is
latentdb's (``PRAGMA application_id``), counted by ``PRAGMA user_version``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from latentdb.errors import ForeignDatabaseError

DATABASE_FILE = "latentdb.sqlite3"
# PRAGMA application_id of a latentdb file ("LtDB"), so that another application's
# SQLite file is never taken for ours (sqlite.org/fileformat2.html#appid).
APPLICATION_ID = 0x4C744442
# Tables every latentdb schema has had since migration 1.
_CORE_TABLES = frozenset({"sequence", "collections", "records", "tombstones"})

# Numbered migrations; PRAGMA user_version records how many have run.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sequence (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        value INTEGER NOT NULL
    );
    INSERT INTO sequence (id, value) VALUES (0, 0);
    CREATE TABLE collections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        space TEXT NOT NULL,
        embedder TEXT,
        config TEXT NOT NULL DEFAULT '{}',
        created_seq INTEGER NOT NULL
    );
    CREATE TABLE records (
        key INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id INTEGER NOT NULL REFERENCES collections (id),
        id TEXT NOT NULL,
        vector BLOB NOT NULL,
        document TEXT,
        metadata TEXT,
        seq INTEGER NOT NULL,
        UNIQUE (collection_id, id)
    );
    CREATE INDEX records_by_seq ON records (collection_id, seq);
    CREATE TABLE tombstones (
        collection_id INTEGER NOT NULL,
        key INTEGER NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE INDEX tombstones_by_seq ON tombstones (collection_id, seq);
    """,
    # Aliases share the collections' namespace; a migration re-embeds one collection
    # into another, its cursor the (seq, key) of the last source row copied.
    """
    CREATE TABLE aliases (
        name TEXT PRIMARY KEY,
        collection_id INTEGER NOT NULL REFERENCES collections (id)
    );
    CREATE TABLE migrations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        alias TEXT NOT NULL,
        source_id INTEGER NOT NULL REFERENCES collections (id),
        target_id INTEGER NOT NULL UNIQUE REFERENCES collections (id),
        embedder TEXT NOT NULL,
        retire_as TEXT,
        cursor_seq INTEGER NOT NULL DEFAULT 0,
        cursor_key INTEGER NOT NULL DEFAULT 0,
        copied INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'running'
    );
    """,
    # Full-text index of the documents (where_document $match, hybrid search), kept in
    # step with the records by triggers, inside the very transactions that write them.
    """
    CREATE VIRTUAL TABLE records_fts USING fts5(
        document, content='records', content_rowid='key', tokenize='unicode61'
    );
    CREATE TRIGGER records_fts_insert AFTER INSERT ON records
    WHEN new.document IS NOT NULL BEGIN
        INSERT INTO records_fts (rowid, document) VALUES (new.key, new.document);
    END;
    CREATE TRIGGER records_fts_delete AFTER DELETE ON records
    WHEN old.document IS NOT NULL BEGIN
        INSERT INTO records_fts (records_fts, rowid, document)
        VALUES ('delete', old.key, old.document);
    END;
    CREATE TRIGGER records_fts_update_old AFTER UPDATE OF document ON records
    WHEN old.document IS NOT NULL BEGIN
        INSERT INTO records_fts (records_fts, rowid, document)
        VALUES ('delete', old.key, old.document);
    END;
    CREATE TRIGGER records_fts_update_new AFTER UPDATE OF document ON records
    WHEN new.document IS NOT NULL BEGIN
        INSERT INTO records_fts (rowid, document) VALUES (new.key, new.document);
    END;
    INSERT INTO records_fts (records_fts) VALUES ('rebuild');
    """,
    # Vector packs (store/_packs.py): a sealed row's vector lives in a pack file, its
    # blob left empty, so that the store and an index share one copy of it.
    """
    CREATE TABLE packs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        offset INTEGER NOT NULL,
        dimension INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        xxh3 INTEGER NOT NULL,
        adopted INTEGER NOT NULL DEFAULT 0,
        UNIQUE (collection_id, name)
    );
    ALTER TABLE records ADD COLUMN pack INTEGER;
    ALTER TABLE records ADD COLUMN pack_row INTEGER;
    CREATE INDEX records_by_pack ON records (pack) WHERE pack IS NOT NULL;
    """,
)


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a script, one by one (a trigger's body holds ";" too)."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def schema_stamp(connection: sqlite3.Connection, path: Path) -> tuple[int, int]:
    """(application_id, user_version) of a file whose schema is latentdb's, or new.

    Raises:
        ForeignDatabaseError: the file is another application's SQLite database.
    """
    application = int(connection.execute("PRAGMA application_id").fetchone()[0])
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    tables = {
        row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if application == APPLICATION_ID:
        return application, version
    # 0: not stamped yet, by a latentdb from before the stamp, or a new SQLite file.
    new = version == 0 and not tables
    if application != 0 or not (new or (version > 0 and tables >= _CORE_TABLES)):
        shown = ", ".join(sorted(tables)[:5]) or "none"
        raise ForeignDatabaseError(
            f"{path} is another application's SQLite database (application_id "
            f"{application}, user_version {version}, tables: {shown}), not latentdb's"
        )
    return application, version


def initialize(connection: sqlite3.Connection) -> None:
    """Run the migrations the file has not had yet, and stamp it as latentdb's (inside
    a write transaction)."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    for number in range(version, len(MIGRATIONS)):
        for statement in _statements(MIGRATIONS[number]):
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {number + 1}")
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
