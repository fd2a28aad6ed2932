"""The ``where`` language: parsed once into a small tree, then run as SQL over the stored
metadata JSON (get, delete) or over in-memory columns (query; see ``_columns``).

The language is Chroma's, plus ``$not``, ``$exists`` and list values::

    {"lang": "en"}                                    equality shorthand
    {"year": {"$gte": 2020}}                          $eq $ne $gt $gte $lt $lte $in $nin
    {"tags": {"$contains": "ml"}}                     a list value holds an item
    {"tags": {"$not_contains": "ml"}}                 ... or does not (or is no list)
    {"draft": {"$exists": False}}                     the key is (not) there
    {"year": {"$not": {"$gte": 2020}}}                negate a condition
    {"$and": [{...}, {...}]}, {"$or": [{...}, ...]}   combinations
    {"$not": {...}}                                   negate a clause
    {"lang": "en", "year": {"$gt": 2020}}             several keys: all must hold

Values are str, int, float or bool, and match only values of the same kind (a bool is
not the number 1). ``$gt``/``$gte``/``$lt``/``$lte`` take numbers. A list value matches
``$contains``/``$not_contains`` (and ``$exists``) only; equality never matches a list.
``$ne``, ``$nin``, ``$not_contains`` and ``$not`` are negations: they also match records
without the key.

Limits, so that any filter that parses also runs (SQLite's parser and expression tree
have fixed depths; Python's recursion too): ``$and``/``$or``/``$not`` nest at most
``MAX_DEPTH`` (32) deep, and a filter holds at most ``MAX_CONDITIONS`` (1,000) key
conditions. An ``$in``/``$nin`` list counts as one condition, however long (it is bound
as one JSON parameter): use it rather than an ``$or`` of equalities. Strings must be
valid Unicode (no lone surrogates such as ``"\\ud800"``). A filter past a limit raises
:class:`~latentdb.errors.FilterError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from latentdb.errors import FilterError
from latentdb.store import SqlFilter

__all__ = [
    "COMPARISONS",
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "All",
    "Any_",
    "Condition",
    "Field",
    "Not",
    "compile_where",
    "json_path",
    "parse_where",
    "to_sql",
]

COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_FIELD_OPERATORS = frozenset(
    {"$eq", "$ne", "$in", "$nin", "$exists", "$contains", "$not_contains", "$not", *COMPARISONS}
)
_LOGICAL_OPERATORS = ("$and", "$or", "$not")

Scalar: TypeAlias = str | int | float | bool

# 32 levels of $and/$or/$not: deeper than any filter written by hand or generated
# sensibly, and far below SQLite's parser stack ("parser stack overflow" came at ~100
# nested $and) and Python's recursion limit (~500 gave RecursionError), issue 15.
MAX_DEPTH = 32
# Key conditions per filter: each is 1-3 SQL parameters and a few expression nodes, so
# 1,000 stays far below SQLite's 32,766 parameters and its SQL length limit.
MAX_CONDITIONS = 1000


@dataclass(frozen=True)
class Field:
    """``key`` compared by ``op`` ("$eq", "$gt", "$in", "$exists", "$contains"...)
    with ``operand`` (a scalar, a tuple of scalars for $in/$nin, a bool for $exists).
    The negating operators are parsed into :class:`Not` of their positive form."""

    key: str
    op: str
    operand: Any


@dataclass(frozen=True)
class All:
    """Every item holds."""

    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Any_:
    """At least one item holds."""

    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    """The item does not hold."""

    item: Condition


Condition: TypeAlias = Field | All | Any_ | Not


def parse_where(where: Mapping[str, Any] | None) -> Condition | None:
    """Check a ``where`` filter and parse it.

    Returns:
        The condition tree, or None for no filter (None or an empty dict).

    Raises:
        FilterError: the filter is malformed; the message names the key or operator.
    """
    if where is None:
        return None
    if not isinstance(where, Mapping):
        raise FilterError(f"where must be a dict; got {type(where).__name__}")
    if not where:
        return None
    return _Parser().clause(where, 0)


def compile_where(where: Mapping[str, Any] | None) -> SqlFilter | None:
    """Check and compile a ``where`` filter to SQL over the ``metadata`` column.

    Returns:
        A :class:`SqlFilter` whose SQL is 1 for matching rows and 0 otherwise, or None.

    Raises:
        FilterError: the filter is malformed.
    """
    condition = parse_where(where)
    return None if condition is None else to_sql(condition)


class _Parser:
    """Parses one filter, counting its depth and conditions against the limits."""

    def __init__(self) -> None:
        self.conditions = 0

    def clause(self, clause: Any, depth: int) -> Condition:
        if depth > MAX_DEPTH:
            raise FilterError(
                f"where nests $and/$or/$not more than {MAX_DEPTH} deep; flatten it (a "
                "long $and or $or list, or $in, says the same)"
            )
        if not isinstance(clause, Mapping) or not clause:
            raise FilterError(f"each where clause must be a non-empty dict; got {show(clause)}")
        parts: list[Condition] = []
        for key, value in clause.items():
            if not isinstance(key, str):
                raise FilterError(f"where keys must be strings; got {show(key)}")
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise FilterError(f"{key} takes a non-empty list of clauses; got {show(value)}")
                items = tuple(self.clause(item, depth + 1) for item in value)
                parts.append(All(items) if key == "$and" else Any_(items))
            elif key == "$not":
                parts.append(Not(self.clause(value, depth + 1)))
            elif key.startswith("$"):
                raise FilterError(
                    f"unknown operator {show(key)} at the top of a clause; expected "
                    f"{', '.join(_LOGICAL_OPERATORS)} or a metadata key"
                )
            else:
                parts.append(self.field(key, value, depth))
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def field(self, key: str, condition: Any, depth: int) -> Condition:
        if '"' in key or "\\" in key or not key or not is_text(key):
            raise FilterError(
                f'metadata key {show(key)} cannot be filtered on (empty, has " or \\, or '
                "is not valid Unicode)"
            )
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise FilterError(
                f"where holds more than {MAX_CONDITIONS} conditions; use $in/$nin for "
                "many values of one key"
            )
        return self._field(key, condition, depth)

    def _field(self, key: str, condition: Any, depth: int) -> Condition:
        if not isinstance(condition, Mapping):
            return Field(key, "$eq", _scalar(key, "$eq", condition))
        if len(condition) != 1:
            raise FilterError(
                f"the condition on {key!r} must have exactly one operator; got {show(condition)}"
            )
        ((operator, operand),) = condition.items()
        if operator not in _FIELD_OPERATORS:
            raise FilterError(
                f"unknown operator {show(operator)} on key {key!r}; expected one of "
                f"{', '.join(sorted(_FIELD_OPERATORS))}"
            )
        if operator == "$not":
            if not isinstance(operand, Mapping):
                raise FilterError(
                    f"$not on {key!r} takes a condition such as {{'$gt': 3}}; got {show(operand)}"
                )
            if depth >= MAX_DEPTH:
                raise FilterError(f"where nests $not more than {MAX_DEPTH} deep on {key!r}")
            return Not(self._field(key, operand, depth + 1))
        if operator in ("$eq", "$ne"):
            field = Field(key, "$eq", _scalar(key, operator, operand))
            return field if operator == "$eq" else Not(field)
        if operator in ("$in", "$nin"):
            if not isinstance(operand, list | tuple) or not operand:
                raise FilterError(
                    f"{operator} on {key!r} takes a non-empty list; got {show(operand)}"
                )
            values = tuple(_scalar(key, operator, item) for item in operand)
            field = Field(key, "$in", values)
            return field if operator == "$in" else Not(field)
        if operator == "$exists":
            if not isinstance(operand, bool):
                raise FilterError(f"$exists on {key!r} takes true or false; got {show(operand)}")
            return Field(key, "$exists", operand)
        if operator in ("$contains", "$not_contains"):
            field = Field(key, "$contains", _scalar(key, operator, operand))
            return field if operator == "$contains" else Not(field)
        if not is_number(operand):
            raise FilterError(f"{operator} on {key!r} takes a number; got {show(operand)}")
        return Field(key, operator, operand)


def show(value: Any) -> str:
    """A short repr for messages (a filter may hold 100,000 values)."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _scalar(key: str, operator: str, value: Any) -> Scalar:
    if isinstance(value, str):
        if not is_text(value):
            raise FilterError(
                f"the value for {key!r} ({operator}) is not valid Unicode (a lone "
                f"surrogate?): {show(value)}"
            )
        return value
    if isinstance(value, bool) or is_number(value):
        return value  # type: ignore[no-any-return]
    raise FilterError(
        f"the value for {key!r} ({operator}) must be a str, int, float or bool; got "
        f"{type(value).__name__} {show(value)}"
    )


def is_text(value: str) -> bool:
    """True when ``value`` can be stored: encodable as UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_number(value: Any) -> bool:
    """A finite float or an int that SQLite can hold (64-bit), not a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def canonical(condition: Condition) -> str:
    """A stable text form of a condition (a cache key)."""
    return json.dumps(_plain(condition), sort_keys=True)


def _plain(condition: Condition) -> Any:
    if isinstance(condition, Field):
        operand = condition.operand
        kind = type(operand).__name__ if not isinstance(operand, tuple) else "tuple"
        items = [[type(o).__name__, o] for o in operand] if isinstance(operand, tuple) else operand
        return ["field", condition.key, condition.op, kind, items]
    if isinstance(condition, Not):
        return ["not", _plain(condition.item)]
    return ["all" if isinstance(condition, All) else "any", [_plain(i) for i in condition.items]]


# -- SQL ------------------------------------------------------------------------------


def json_path(key: str) -> str:
    """The SQLite JSON path of a metadata key (the parser refuses keys with ``"`` or
    ``\\``, so quoting it is enough)."""
    return f'$."{key}"'


def to_sql(condition: Condition) -> SqlFilter:
    """SQL over the ``metadata`` JSON column: 1 for matching rows, 0 otherwise (never
    NULL, so that NOT is exact)."""
    params: list[Any] = []
    return SqlFilter(_sql(condition, params), tuple(params))


def _sql(condition: Condition, params: list[Any]) -> str:
    if isinstance(condition, Not):
        return f"NOT {_sql(condition.item, params)}"
    if isinstance(condition, All | Any_):
        joiner = " AND " if isinstance(condition, All) else " OR "
        return join_balanced([_sql(item, params) for item in condition.items], joiner)
    path = json_path(condition.key)
    op, operand = condition.op, condition.operand
    if op == "$eq":
        return _equals(path, operand, params)
    if op == "$in":
        return _one_of(path, operand, params)
    if op == "$exists":
        params.append(path)
        return f"(json_type(metadata, ?) IS {'NOT ' if operand else ''}NULL)"
    if op == "$contains":
        params.extend((path, path))
        kind, value = _json_kind(operand)
        params.append(value)
        return (
            "COALESCE(json_type(metadata, ?) = 'array' AND EXISTS (SELECT 1 FROM "
            f"json_each(metadata, ?) WHERE {kind} AND value = ?), 0)"
        )
    params.extend((path, path, operand))
    return (
        f"COALESCE(json_type(metadata, ?) IN ('integer', 'real') "
        f"AND json_extract(metadata, ?) {COMPARISONS[op]} ?, 0)"
    )


def join_balanced(parts: list[str], joiner: str) -> str:
    """``parts`` joined as a balanced tree of parenthesized pairs: SQLite's expression
    tree is at most 1,000 deep, and a flat ``a OR b OR ...`` of 1,000 is that deep."""
    while len(parts) > 2:
        parts = [
            "(" + joiner.join(parts[i : i + 2]) + ")" if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return "(" + joiner.join(parts) + ")"


def _one_of(path: str, values: tuple[Scalar, ...], params: list[Any]) -> str:
    """SQL that is 1 when the key holds one of ``values`` (same kind), else 0.

    The strings and numbers travel as one JSON array parameter read with
    ``json_each``: one ``?`` per value made SQLite refuse ~1,000 values ("Expression
    tree is too large") and 32,767 parameters at most (issue 15). A JSON text or number
    is compared with the list's items without type conversion (neither side has an
    affinity), so the text "1" never equals the number 1; ``json_extract`` gives 1 and 0
    for JSON true and false, so the kind is tested as well.
    """
    scalars = [v for v in values if not isinstance(v, bool)]
    terms = []
    if scalars:
        params.extend((path, path, json.dumps(scalars, allow_nan=False)))
        terms.append(
            "COALESCE(json_type(metadata, ?) IN ('integer', 'real', 'text') AND "
            "json_extract(metadata, ?) IN (SELECT value FROM json_each(?)), 0)"
        )
    terms += [_equals(path, flag, params) for flag in {v for v in values if isinstance(v, bool)}]
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"


def _json_kind(value: Scalar) -> tuple[str, Scalar]:
    """The json_each ``type`` test for a value of this kind, and the value to compare."""
    if isinstance(value, bool):
        return f"type = '{'true' if value else 'false'}'", int(value)
    if isinstance(value, str):
        return "type = 'text'", value
    return "type IN ('integer', 'real')", value


def _equals(path: str, value: Scalar, params: list[Any]) -> str:
    """SQL that is 1 when the key holds ``value`` (same kind), else 0 (never NULL)."""
    if isinstance(value, bool):
        params.append(path)
        return f"COALESCE(json_type(metadata, ?) = '{'true' if value else 'false'}', 0)"
    kind = "IN ('integer', 'real')" if not isinstance(value, str) else "= 'text'"
    params.extend((path, path, value))
    return f"COALESCE(json_type(metadata, ?) {kind} AND json_extract(metadata, ?) = ?, 0)"
