"""The durable store (SQLite): collections, records, the write sequence, tombstones,
aliases and migrations. Storage failures come out as named errors (``storage_error``)."""

from latentdb.store._connection import storage_error
from latentdb.store._rows import (
    Changes,
    CollectionRow,
    MigrationRow,
    SqlFilter,
    StoredRecord,
    blobs_to_vectors,
    vectors_to_blobs,
)
from latentdb.store._schema import DATABASE_FILE
from latentdb.store._store import Store
from latentdb.store._text import TextMatch

__all__ = [
    "DATABASE_FILE",
    "Changes",
    "CollectionRow",
    "MigrationRow",
    "SqlFilter",
    "Store",
    "StoredRecord",
    "TextMatch",
    "blobs_to_vectors",
    "storage_error",
    "vectors_to_blobs",
]
