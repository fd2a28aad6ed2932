"""Query planning: the ``where`` and ``where_document`` languages (SQL, or in-memory
metadata columns) and the planner that chooses how a filtered query is answered."""

from latentdb.query._documents import compile_where_document
from latentdb.query._hybrid import candidates, fts_query, fuse
from latentdb.query._planner import (
    EXACT_ROWS,
    FilterCache,
    QueryPlan,
    and_filters,
    filtered_search,
)
from latentdb.query._where import Condition, compile_where, parse_where

__all__ = [
    "EXACT_ROWS",
    "Condition",
    "FilterCache",
    "QueryPlan",
    "and_filters",
    "candidates",
    "compile_where",
    "compile_where_document",
    "filtered_search",
    "fts_query",
    "fuse",
    "parse_where",
]
