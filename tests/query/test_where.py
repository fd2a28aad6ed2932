"""The where language: SQL results agree with a plain-Python reading of the same filter."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentdb import Collection, Database, FilterError
from latentdb.query import compile_where


def same(a: Any, b: Any) -> bool:
    """Equal and of the same kind: a bool never equals a number, a str never a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return bool(a == b)


def field_matches(metadata: dict[str, Any], key: str, condition: Any) -> bool:
    if not isinstance(condition, dict):
        condition = {"$eq": condition}
    ((operator, operand),) = condition.items()
    present = key in metadata
    value = metadata.get(key)
    if operator in ("$eq", "$ne"):
        equal = present and same(value, operand)
        return equal if operator == "$eq" else not equal
    if operator in ("$in", "$nin"):
        found = present and any(same(value, o) for o in operand)
        return found if operator == "$in" else not found
    if not present or isinstance(value, bool | str):
        return False
    return {
        "$gt": value > operand,
        "$gte": value >= operand,
        "$lt": value < operand,
        "$lte": value <= operand,
    }[operator]


def matches(metadata: dict[str, Any] | None, where: dict[str, Any]) -> bool:
    """The reference semantics, written independently of the SQL compiler."""
    metadata = metadata or {}
    results = []
    for key, condition in where.items():
        if key == "$and":
            results.append(all(matches(metadata, c) for c in condition))
        elif key == "$or":
            results.append(any(matches(metadata, c) for c in condition))
        else:
            results.append(field_matches(metadata, key, condition))
    return all(results)


METADATAS: list[dict[str, Any] | None] = [
    {"lang": "en", "year": 2020, "score": 0.5, "draft": False},
    {"lang": "de", "year": 2021, "score": 1.5, "draft": True},
    {"lang": "en", "year": 2022, "score": 2, "tags": "a"},
    {"lang": "fr", "year": 1, "draft": False},
    {"year": 2021, "draft": 1},
    {"lang": "1"},
    None,
    {},
]


@pytest.fixture
def filtered(db: Database) -> Collection:
    collection = db.create_collection("f", dimension=2, metric="l2", embedder=None)
    count = len(METADATAS)
    collection.add(
        [str(i) for i in range(count)],
        vectors=np.arange(count * 2, dtype=np.float32).reshape(count, 2),
        metadatas=METADATAS,
    )
    return collection


def expected_ids(where: dict[str, Any]) -> list[str]:
    return [str(i) for i, m in enumerate(METADATAS) if matches(m, where)]


EXAMPLES: list[dict[str, Any]] = [
    {"lang": "en"},
    {"lang": {"$ne": "en"}},
    {"year": {"$gte": 2021}},
    {"year": {"$lt": 2021}},
    {"score": {"$gt": 1}},
    {"draft": True},
    {"draft": False},
    {"draft": 1},
    {"lang": 1},
    {"lang": {"$in": ["de", "fr"]}},
    {"lang": {"$nin": ["de", "fr"]}},
    {"lang": "en", "year": 2022},
    {"$or": [{"lang": "de"}, {"year": {"$lte": 1}}]},
    {"$and": [{"lang": "en"}, {"$or": [{"score": 0.5}, {"tags": "a"}]}]},
    {"missing": {"$ne": 3}},
]


@pytest.mark.parametrize("where", EXAMPLES, ids=[str(w) for w in EXAMPLES])
def test_where_matches_reference(filtered: Collection, where: dict[str, Any]) -> None:
    assert filtered.get(where=where, include=[]).ids == expected_ids(where)
    hits = filtered.query(vectors=[0.0, 0.0], k=100, where=where, include=[]).ids[0]
    assert sorted(hits) == sorted(expected_ids(where))


scalars = st.one_of(
    st.sampled_from(["en", "de", "1", "a"]),
    st.integers(-1, 2023),
    st.sampled_from([0.5, 1.5, 2.0]),
    st.booleans(),
)
keys = st.sampled_from(["lang", "year", "score", "draft", "tags", "missing"])
numbers = st.one_of(st.integers(0, 2023), st.floats(-1, 3, allow_nan=False))


def field_conditions() -> st.SearchStrategy[dict[str, Any]]:
    operator = st.one_of(
        scalars,
        st.builds(lambda o, v: {o: v}, st.sampled_from(["$eq", "$ne"]), scalars),
        st.builds(
            lambda o, v: {o: v},
            st.sampled_from(["$in", "$nin"]),
            st.lists(scalars, min_size=1, max_size=3),
        ),
        st.builds(lambda o, v: {o: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), numbers),
    )
    return st.builds(lambda k, c: {k: c}, keys, operator)


wheres = st.recursive(
    field_conditions(),
    lambda inner: st.builds(
        lambda o, items: {o: items},
        st.sampled_from(["$and", "$or"]),
        st.lists(inner, min_size=1, max_size=3),
    ),
    max_leaves=6,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # read-only fixture
@given(where=wheres)
def test_random_filters_match_reference(filtered: Collection, where: dict[str, Any]) -> None:
    assert filtered.get(where=where, include=[]).ids == expected_ids(where)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("lang", "dict"),
        ({"lang": {"$regex": "e"}}, r"\$regex"),
        ({"$not": {"lang": "en"}}, r"\$not"),
        ({"lang": {"$in": []}}, "non-empty list"),
        ({"lang": {"$in": "en"}}, "non-empty list"),
        ({"year": {"$gt": "2020"}}, "number"),
        ({"year": {"$gt": True}}, "number"),
        ({"year": {"$gt": 1, "$lt": 3}}, "exactly one operator"),
        ({"lang": ["en"]}, "str, int, float or bool"),
        ({"lang": None}, "str, int, float or bool"),
        ({"$and": {"lang": "en"}}, "list"),
        ({"$or": [{}]}, "non-empty dict"),
        ({'we"ird': 1}, "cannot be filtered"),
        ({"year": {"$eq": 2**70}}, "str, int, float or bool"),
    ],
)
def test_malformed_filters_name_the_problem(where: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_where(where)


def test_empty_filter_is_no_filter() -> None:
    assert compile_where({}) is None
    assert compile_where(None) is None
