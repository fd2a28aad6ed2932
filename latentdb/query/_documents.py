"""The ``where_document`` language: conditions on a record's document, compiled to SQL.

::

    {"$contains": "json"}                       the document holds this text (any case
                                                 counts as different, like Chroma)
    {"$not_contains": "json"}                   ... does not (or there is no document)
    {"$match": "parse AND json*"}               SQLite FTS5 full-text query (words, "a
                                                 phrase", prefix*, AND OR NOT, NEAR)
    {"$and": [...]}, {"$or": [...]}             combinations

``$match`` runs on the FTS5 index the store keeps of every document (unicode61 words,
case-folded). Its text is FTS5 query syntax, not plain words: a malformed one (``"abc``
unterminated, a bare ``*``, ``col:x`` naming a column other than ``document``) raises
:class:`~latentdb.errors.FilterError` before anything runs; quote words to match them
literally (``'"col:x"'``). ``$and``/``$or`` nest at most ``MAX_DEPTH`` (32) deep, with
at most ``MAX_CONDITIONS`` (1,000) conditions, as in ``where``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from typing import Any

from latentdb.errors import FilterError
from latentdb.query._where import MAX_CONDITIONS, MAX_DEPTH, is_text, join_balanced, show
from latentdb.store import SqlFilter

__all__ = ["compile_where_document"]

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
    return SqlFilter(_clause(where_document, params, 0, [0]), tuple(params))


def _clause(clause: Any, params: list[Any], depth: int, conditions: list[int]) -> str:
    if depth > MAX_DEPTH:
        raise FilterError(f"where_document nests $and/$or more than {MAX_DEPTH} deep")
    if not isinstance(clause, Mapping) or len(clause) != 1:
        raise FilterError(
            "each where_document clause must be a dict with exactly one operator "
            f"({', '.join(_OPERATORS)}); got {show(clause)}"
        )
    ((operator, operand),) = clause.items()
    if operator in ("$and", "$or"):
        if not isinstance(operand, list) or not operand:
            raise FilterError(f"{operator} takes a non-empty list of clauses; got {show(operand)}")
        joiner = " AND " if operator == "$and" else " OR "
        parts = [_clause(item, params, depth + 1, conditions) for item in operand]
        return join_balanced(parts, joiner)
    if operator not in _OPERATORS:
        raise FilterError(
            f"unknown where_document operator {show(operator)}; expected one of "
            f"{', '.join(_OPERATORS)}"
        )
    if not isinstance(operand, str) or not operand:
        raise FilterError(f"{operator} takes a non-empty string; got {show(operand)}")
    if not is_text(operand):
        raise FilterError(f"{operator} takes valid Unicode (no lone surrogates); got {operand!r}")
    conditions[0] += 1
    if conditions[0] > MAX_CONDITIONS:
        raise FilterError(f"where_document holds more than {MAX_CONDITIONS} conditions")
    params.append(operand)
    if operator == "$contains":
        return "COALESCE(instr(document, ?) > 0, 0)"
    if operator == "$not_contains":
        return "COALESCE(instr(document, ?) = 0, 1)"
    _check_match(operand)
    return "key IN (SELECT rowid FROM records_fts WHERE records_fts MATCH ?)"


# An empty in-memory FTS5 table like the store's (one column "document", unicode61):
# FTS5 parses a MATCH query before it reads a row, so running it here names a malformed
# query as a FilterError before the real query starts (issue 15: '"abc', '*' and
# 'col:x' escaped as raw sqlite3.OperationalError from get, delete and query alike).
_PROBE_LOCK = threading.Lock()
_probe: sqlite3.Connection | None = None


def _check_match(text: str) -> None:
    """Raise FilterError when ``text`` is not a valid FTS5 query."""
    global _probe
    with _PROBE_LOCK:
        if _probe is None:
            _probe = sqlite3.connect(":memory:", check_same_thread=False)
            _probe.execute("CREATE VIRTUAL TABLE probe USING fts5(document, tokenize='unicode61')")
        try:
            _probe.execute("SELECT 1 FROM probe WHERE probe MATCH ?", (text,)).fetchall()
        except sqlite3.Error as error:
            raise FilterError(
                f"$match: {text!r} is not a valid full-text query ({error}); quote words "
                "to match them as they are, e.g. '\"col:x\"'"
            ) from None
