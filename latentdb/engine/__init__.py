"""The embedded engine: the implementation of :mod:`latentdb.api` over a folder (a
SQLite store and the faiss indexes derived from it), in this process."""

from latentdb.engine._collection import EmbeddedCollection
from latentdb.engine._database import EmbeddedDatabase
from latentdb.engine._migration import EmbeddedMigration

__all__ = ["EmbeddedCollection", "EmbeddedDatabase", "EmbeddedMigration"]
