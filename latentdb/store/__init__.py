"""The durable store (SQLite): collections, records, the write sequence, tombstones,
aliases and migrations."""

from latentdb.store._sqlite import (
    DATABASE_FILE,
    Changes,
    CollectionRow,
    MigrationRow,
    SqlFilter,
    Store,
    StoredRecord,
    blobs_to_vectors,
    vectors_to_blobs,
)

__all__ = [
    "DATABASE_FILE",
    "Changes",
    "CollectionRow",
    "MigrationRow",
    "SqlFilter",
    "Store",
    "StoredRecord",
    "blobs_to_vectors",
    "vectors_to_blobs",
]
