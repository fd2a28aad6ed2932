"""The durable store (SQLite): collections, records, the write sequence, tombstones."""

from latentdb.store._sqlite import (
    DATABASE_FILE,
    Changes,
    CollectionRow,
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
    "SqlFilter",
    "Store",
    "StoredRecord",
    "blobs_to_vectors",
    "vectors_to_blobs",
]
