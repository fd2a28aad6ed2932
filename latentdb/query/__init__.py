"""Query planning: the ``where`` language (SQL, or in-memory metadata columns) and the
planner that chooses how a filtered query is answered."""

from latentdb.query._planner import EXACT_ROWS, QueryPlan, filtered_search
from latentdb.query._where import compile_where, parse_where

__all__ = ["EXACT_ROWS", "QueryPlan", "compile_where", "filtered_search", "parse_where"]
