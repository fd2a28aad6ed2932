"""The public interface: Database, Collection and the results they return."""

from latentdb.api._collection import Collection
from latentdb.api._database import Database, connect
from latentdb.api._results import GetResult, QueryResult

__all__ = ["Collection", "Database", "GetResult", "QueryResult", "connect"]
