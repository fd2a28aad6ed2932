"""The where and where_document languages' limits (issue 15, defect 9): past them a
FilterError, never SQLite's parser stack or Python's recursion; up to them, SQL that
SQLite runs."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from latentdb import FilterError
from latentdb.query import compile_where, compile_where_document, parse_where
from latentdb.query._where import MAX_CONDITIONS, MAX_DEPTH


def nested(depth: int, operator: str) -> dict[str, Any]:
    where: dict[str, Any] = {"k": 1}
    for _ in range(depth):
        where = {"$not": where} if operator == "$not" else {operator: [where]}
    return where


def runs(sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Evaluate a compiled filter over one row the way the store does."""
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE records (key INTEGER, document TEXT, metadata TEXT)")
    connection.execute("""CREATE VIRTUAL TABLE records_fts USING fts5(document)""")
    connection.execute("""INSERT INTO records VALUES (1, 'a b', '{"k": 1}')""")
    return connection.execute(f"SELECT key FROM records WHERE {sql}", params).fetchall()


@pytest.mark.parametrize("operator", ["$and", "$or", "$not"])
def test_nesting_up_to_the_limit_compiles_and_runs_past_it_is_refused(operator: str) -> None:
    sql = compile_where(nested(MAX_DEPTH, operator))
    assert sql is not None
    assert runs(sql.sql, sql.params) == [(1,)]
    for depth in (MAX_DEPTH + 1, 5000):
        with pytest.raises(FilterError, match=f"more than {MAX_DEPTH} deep"):
            parse_where(nested(depth, operator))


def test_field_not_nesting_is_limited_too() -> None:
    condition: dict[str, Any] = {"$eq": 1}
    for _ in range(MAX_DEPTH + 1):
        condition = {"$not": condition}
    with pytest.raises(FilterError, match="deep"):
        parse_where({"k": condition})


def test_conditions_are_counted_and_a_long_list_runs() -> None:
    wide = compile_where({"$or": [{"k": i} for i in range(MAX_CONDITIONS)]})
    assert wide is not None
    assert runs(wide.sql, wide.params) == [(1,)]
    with pytest.raises(FilterError, match="more than 1000 conditions"):
        parse_where({"$and": [{"k": i} for i in range(MAX_CONDITIONS + 1)]})


def test_in_is_one_condition_and_one_parameter_however_long() -> None:
    values: list[Any] = [*range(2, 200_000), "1", True]
    sql = compile_where({"k": {"$in": values}, "$and": [{"k": {"$nin": [1.5] * 5000}}]})
    assert sql is not None
    assert len(sql.params) < 10
    assert runs(sql.sql, sql.params) == []  # 1 is not among them: "1" and True differ
    sql = compile_where({"k": {"$in": [*values, 1]}})
    assert sql is not None
    assert runs(sql.sql, sql.params) == [(1,)]


@pytest.mark.parametrize(
    "where", [{"k": "\ud800"}, {"\udfff": 1}, {"k": {"$in": ["a", "b\ud800"]}}]
)
def test_strings_that_are_not_unicode_are_refused(where: dict[str, Any]) -> None:
    with pytest.raises(FilterError, match="Unicode"):
        parse_where(where)


@pytest.mark.parametrize("text", ['"abc', "*", "col:x", "AND", "-x"])
def test_malformed_match_is_a_filter_error(text: str) -> None:
    with pytest.raises(FilterError, match=r"\$match"):
        compile_where_document({"$match": text})


@pytest.mark.parametrize("text", ['"col:x"', "parse AND json*", "document:x", "NEAR(a b)"])
def test_valid_match_compiles(text: str) -> None:
    assert compile_where_document({"$match": text}) is not None


def test_where_document_nesting_is_limited() -> None:
    where: dict[str, Any] = {"$contains": "a"}
    for _ in range(MAX_DEPTH):
        where = {"$and": [where]}
    sql = compile_where_document(where)
    assert sql is not None
    assert runs(sql.sql, sql.params) == [(1,)]
    with pytest.raises(FilterError, match="deep"):
        compile_where_document({"$or": [where]})
