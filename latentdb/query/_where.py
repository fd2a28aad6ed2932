"""The ``where`` language, compiled to a SQL condition on the stored metadata JSON.

The language is Chroma's::

    {"lang": "en"}                                    equality shorthand
    {"year": {"$gte": 2020}}                          $eq $ne $gt $gte $lt $lte $in $nin
    {"$and": [{...}, {...}]}, {"$or": [{...}, ...]}   combinations
    {"lang": "en", "year": {"$gt": 2020}}             several keys: all must hold

Values are str, int, float or bool, and match only values of the same kind (a bool is
not the number 1). ``$gt``/``$gte``/``$lt``/``$lte`` take numbers. ``$ne`` and ``$nin``
are the negations of ``$eq`` and ``$in``: they also match records without the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from latentdb.errors import FilterError
from latentdb.store import SqlFilter

__all__ = ["compile_where"]

_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_FIELD_OPERATORS = {"$eq", "$ne", "$in", "$nin", *_COMPARISONS}
_LOGICAL_OPERATORS = {"$and", "$or"}


def compile_where(where: Mapping[str, Any] | None) -> SqlFilter | None:
    """Compile a ``where`` filter to SQL over the ``metadata`` column.

    Args:
        where: The filter, or None (or an empty dict) for no filter.

    Returns:
        A :class:`SqlFilter` whose SQL is 1 for matching rows and 0 otherwise, or None.

    Raises:
        FilterError: the filter is malformed; the message names the key or operator.
    """
    if where is None:
        return None
    if not isinstance(where, Mapping):
        raise FilterError(f"where must be a dict; got {type(where).__name__}")
    if not where:
        return None
    params: list[Any] = []
    sql = _compile_clause(where, params)
    return SqlFilter(sql, tuple(params))


def _compile_clause(clause: Any, params: list[Any]) -> str:
    if not isinstance(clause, Mapping) or not clause:
        raise FilterError(f"each where clause must be a non-empty dict; got {clause!r}")
    parts = []
    for key, value in clause.items():
        if not isinstance(key, str):
            raise FilterError(f"where keys must be strings; got {key!r}")
        if key in _LOGICAL_OPERATORS:
            if not isinstance(value, list) or not value:
                raise FilterError(f"{key} takes a non-empty list of clauses; got {value!r}")
            joiner = " AND " if key == "$and" else " OR "
            parts.append("(" + joiner.join(_compile_clause(item, params) for item in value) + ")")
        elif key.startswith("$"):
            raise FilterError(
                f"unknown operator {key!r} at the top of a clause; expected $and, $or "
                "or a metadata key"
            )
        else:
            parts.append(_compile_field(key, value, params))
    return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"


def _compile_field(key: str, condition: Any, params: list[Any]) -> str:
    if '"' in key or "\\" in key or not key:
        raise FilterError(f'metadata key {key!r} cannot be filtered on (empty, or has " or \\)')
    path = f'$."{key}"'
    if not isinstance(condition, Mapping):
        return _equals(path, key, condition, params)
    if len(condition) != 1:
        raise FilterError(
            f"the condition on {key!r} must have exactly one operator; got {dict(condition)!r}"
        )
    ((operator, operand),) = condition.items()
    if operator not in _FIELD_OPERATORS:
        raise FilterError(
            f"unknown operator {operator!r} on key {key!r}; expected one of "
            f"{', '.join(sorted(_FIELD_OPERATORS))}"
        )
    if operator == "$eq":
        return _equals(path, key, operand, params)
    if operator == "$ne":
        return f"NOT {_equals(path, key, operand, params)}"
    if operator in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand:
            raise FilterError(f"{operator} on {key!r} takes a non-empty list; got {operand!r}")
        matches = " OR ".join(_equals(path, key, item, params) for item in operand)
        return f"({matches})" if operator == "$in" else f"NOT ({matches})"
    if not _is_number(operand):
        raise FilterError(f"{operator} on {key!r} takes a number; got {operand!r}")
    params.extend((path, path, operand))
    return (
        f"COALESCE(json_type(metadata, ?) IN ('integer', 'real') "
        f"AND json_extract(metadata, ?) {_COMPARISONS[operator]} ?, 0)"
    )


def _equals(path: str, key: str, value: Any, params: list[Any]) -> str:
    """SQL that is 1 when ``key`` holds ``value`` (same kind), else 0 (never NULL)."""
    if isinstance(value, bool):
        params.append(path)
        return f"COALESCE(json_type(metadata, ?) = '{'true' if value else 'false'}', 0)"
    if _is_number(value):
        params.extend((path, path, value))
        return (
            "COALESCE(json_type(metadata, ?) IN ('integer', 'real') "
            "AND json_extract(metadata, ?) = ?, 0)"
        )
    if isinstance(value, str):
        params.extend((path, path, value))
        return "COALESCE(json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) = ?, 0)"
    raise FilterError(
        f"the value for {key!r} must be a str, int, float or bool; got {type(value).__name__} "
        f"{value!r}"
    )


def _is_number(value: Any) -> bool:
    """A finite float or an int that SQLite can hold (64-bit), not a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)
