"""The ``where_document`` language: conditions on a record's document, compiled to SQL.

::

    {"$contains": "json"}                       the document holds this text (any case
                                                 counts as different, like Chroma)
    {"$not_contains": "json"}                   ... does not (or there is no document)
    {"$match": "parse AND json*"}               SQLite FTS5 full-text query (words, "a
                                                 phrase", prefix*, AND OR NOT, NEAR)
    {"$and": [...]}, {"$or": [...]}             combinations

``$match`` runs on the FTS5 index the store keeps of every document (unicode61 words,
case-folded). A malformed FTS5 query raises :class:`~latentdb.errors.FilterError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from latentdb.errors import FilterError
from latentdb.store import SqlFilter

__all__ = ["compile_where_document", "fts_query"]

_OPERATORS = ("$contains", "$not_contains", "$match", "$and", "$or")


def compile_where_document(where_document: Mapping[str, Any] | None) -> SqlFilter | None:
    """Check a ``where_document`` filter and compile it to SQL over a records row.

    Returns:
        A :class:`SqlFilter` that is 1 for matching rows and 0 otherwise, or None.

    Raises:
        FilterError: malformed; the message names the operator.
    """
    if where_document is None:
        return None
    if not isinstance(where_document, Mapping):
        raise FilterError(f"where_document must be a dict; got {type(where_document).__name__}")
    if not where_document:
        return None
    params: list[Any] = []
    return SqlFilter(_clause(where_document, params), tuple(params))


def canonical_document(where_document: Mapping[str, Any] | None) -> str:
    """A stable text form (a cache key)."""
    return json.dumps(where_document, sort_keys=True)


def _clause(clause: Any, params: list[Any]) -> str:
    if not isinstance(clause, Mapping) or len(clause) != 1:
        raise FilterError(
            "each where_document clause must be a dict with exactly one operator "
            f"({', '.join(_OPERATORS)}); got {clause!r}"
        )
    ((operator, operand),) = clause.items()
    if operator in ("$and", "$or"):
        if not isinstance(operand, list) or not operand:
            raise FilterError(f"{operator} takes a non-empty list of clauses; got {operand!r}")
        joiner = " AND " if operator == "$and" else " OR "
        return "(" + joiner.join(_clause(item, params) for item in operand) + ")"
    if operator not in _OPERATORS:
        raise FilterError(
            f"unknown where_document operator {operator!r}; expected one of {', '.join(_OPERATORS)}"
        )
    if not isinstance(operand, str) or not operand:
        raise FilterError(f"{operator} takes a non-empty string; got {operand!r}")
    params.append(operand)
    if operator == "$contains":
        return "COALESCE(instr(document, ?) > 0, 0)"
    if operator == "$not_contains":
        return "COALESCE(instr(document, ?) = 0, 1)"
    return "key IN (SELECT rowid FROM records_fts WHERE records_fts MATCH ?)"


_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """An FTS5 query matching any word of a plain text (each word quoted, so that no
    character of the text is read as FTS5 syntax); None when it has no words."""
    words = _WORD.findall(text)
    if not words:
        return None
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in dict.fromkeys(words))
