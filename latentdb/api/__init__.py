"""The public interface: Database, Collection and the results they return."""

from latentdb.analysis import SpaceMap, SpaceReport
from latentdb.api._collection import Collection
from latentdb.api._database import Database, connect
from latentdb.api._migration import Migration, MigrationStatus, version_names
from latentdb.api._results import GetResult, QueryResult, RecallReport
from latentdb.index import IndexSpec, IndexStatus

__all__ = [
    "Collection",
    "Database",
    "GetResult",
    "IndexSpec",
    "IndexStatus",
    "Migration",
    "MigrationStatus",
    "QueryResult",
    "RecallReport",
    "SpaceMap",
    "SpaceReport",
    "connect",
    "version_names",
]
