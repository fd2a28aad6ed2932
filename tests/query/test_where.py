"""The where language: SQL, the in-memory columns and the query planner all agree with a
plain-Python reading of the same filter, over fixed and random metadata."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentdb import Collection, Database, FilterError
from latentdb.query import compile_where, parse_where
from latentdb.query._columns import MetadataColumns, Unsupported, fields_of

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"


def same(a: Any, b: Any) -> bool:
    """Equal and of the same kind: a bool never equals a number, a str never a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return bool(a == b)


def scalar(value: Any) -> bool:
    return not isinstance(value, list)


def field_matches(metadata: dict[str, Any], key: str, condition: Any) -> bool:
    if not isinstance(condition, dict):
        condition = {"$eq": condition}
    ((operator, operand),) = condition.items()
    present = key in metadata
    value = metadata.get(key)
    if operator == "$not":
        return not field_matches(metadata, key, operand)
    if operator == "$exists":
        return present == operand
    if operator in ("$contains", "$not_contains"):
        found = isinstance(value, list) and any(same(item, operand) for item in value)
        return found if operator == "$contains" else not found
    if operator in ("$eq", "$ne"):
        equal = present and scalar(value) and same(value, operand)
        return equal if operator == "$eq" else not equal
    if operator in ("$in", "$nin"):
        found = present and scalar(value) and any(same(value, o) for o in operand)
        return found if operator == "$in" else not found
    if not present or isinstance(value, bool | str | list):
        return False
    return {
        "$gt": value > operand,
        "$gte": value >= operand,
        "$lt": value < operand,
        "$lte": value <= operand,
    }[operator]


def matches(metadata: dict[str, Any] | None, where: dict[str, Any]) -> bool:
    """The reference semantics, written independently of the SQL and numpy engines."""
    metadata = metadata or {}
    results = []
    for key, condition in where.items():
        if key == "$and":
            results.append(all(matches(metadata, c) for c in condition))
        elif key == "$or":
            results.append(any(matches(metadata, c) for c in condition))
        elif key == "$not":
            results.append(not matches(metadata, condition))
        else:
            results.append(field_matches(metadata, key, condition))
    return all(results)


METADATAS: list[dict[str, Any] | None] = [
    {"lang": "en", "year": 2020, "score": 0.5, "draft": False, "tags": ["a", "b"]},
    {"lang": "de", "year": 2021, "score": 1.5, "draft": True, "tags": ["b", 2]},
    {"lang": "en", "year": 2022, "score": 2, "tags": "a"},
    {"lang": "fr", "year": 1, "draft": False, "tags": [True, 1.0]},
    {"year": 2021, "draft": 1},
    {"lang": "1"},
    None,
    {},
]


@pytest.fixture
def filtered(db: Database) -> Collection:
    return collection_of(db, "f", METADATAS)


def collection_of(db: Database, name: str, metadatas: list[Any]) -> Collection:
    collection = db.create_collection(name, dimension=2, metric="l2", embedder=None, model=MODEL)
    count = len(metadatas)
    collection.add(
        [str(i) for i in range(count)],
        vectors=np.arange(count * 2, dtype=np.float32).reshape(count, 2),
        metadatas=metadatas,
        model=MODEL,
    )
    return collection


def expected_ids(metadatas: list[Any], where: dict[str, Any]) -> list[str]:
    return [str(i) for i, m in enumerate(metadatas) if matches(m, where)]


def column_ids(metadatas: list[Any], where: dict[str, Any]) -> list[str]:
    condition = parse_where(where)
    assert condition is not None
    columns = MetadataColumns()
    keys = np.arange(len(metadatas), dtype=np.int64)
    for name in sorted(fields_of(condition)):  # built as the store would give them
        columns.add_column(name, keys, [(m or {}).get(name) for m in metadatas])
    mask = columns.mask(condition)
    return [str(int(k)) for k in columns.keys[: columns.size][mask]]


def check_every_engine(collection: Collection, metadatas: list[Any], where: dict[str, Any]) -> None:
    want = expected_ids(metadatas, where)
    assert collection.get(where=where, include=[]).ids == want  # SQL
    assert column_ids(metadatas, where) == want  # numpy columns
    result = collection.query(vectors=[0.0, 0.0], k=100, where=where, include=[], explain=True)
    assert sorted(result.ids[0], key=int) == want  # the planner's path
    assert result.plan is not None and result.plan.allowed == len(want)


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
    {"tags": {"$contains": "b"}},
    {"tags": {"$contains": 2.0}},
    {"tags": {"$contains": 1}},
    {"tags": {"$contains": True}},
    {"tags": {"$contains": "a"}},  # the list ["a", "b"], not the string "a"
    {"tags": {"$not_contains": "b"}},
    {"tags": {"$exists": True}},
    {"draft": {"$exists": False}},
    {"year": {"$not": {"$gte": 2021}}},
    {"$not": {"lang": "en"}},
    {"$not": {"$or": [{"lang": "en"}, {"draft": True}]}},
    {"tags": {"$in": ["a", "b"]}},  # equality never matches a list
]


@pytest.mark.parametrize("where", EXAMPLES, ids=[str(w) for w in EXAMPLES])
def test_where_matches_reference(filtered: Collection, where: dict[str, Any]) -> None:
    check_every_engine(filtered, METADATAS, where)


# -- random metadata and random filters ------------------------------------------------

scalars = st.one_of(
    st.sampled_from(["en", "de", "1", "a"]),
    st.integers(-1, 5),
    st.sampled_from([0.5, 1.5, 2.0, -1.0]),
    st.booleans(),
)
values = st.one_of(scalars, st.lists(scalars, min_size=1, max_size=3))
keys = st.sampled_from(["lang", "year", "score", "draft", "tags"])
metadata_lists = st.lists(
    st.one_of(st.none(), st.dictionaries(keys, values, max_size=4)), min_size=1, max_size=25
)
numbers = st.one_of(st.integers(-1, 5), st.floats(-2, 6, allow_nan=False))


def field_conditions() -> st.SearchStrategy[dict[str, Any]]:
    plain = st.one_of(
        scalars,
        st.builds(lambda o, v: {o: v}, st.sampled_from(["$eq", "$ne"]), scalars),
        st.builds(
            lambda o, v: {o: v},
            st.sampled_from(["$in", "$nin"]),
            # past 4 values the columns match with np.isin, one pass per kind
            st.lists(scalars, min_size=1, max_size=8),
        ),
        st.builds(lambda o, v: {o: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), numbers),
        st.builds(lambda v: {"$exists": v}, st.booleans()),
        st.builds(lambda o, v: {o: v}, st.sampled_from(["$contains", "$not_contains"]), scalars),
    )
    either = st.one_of(
        plain, plain.filter(lambda c: isinstance(c, dict)).map(lambda c: {"$not": c})
    )
    return st.builds(lambda k, c: {k: c}, st.sampled_from(["lang", "year", "tags", "nope"]), either)


wheres = st.recursive(
    field_conditions(),
    lambda inner: st.one_of(
        st.builds(
            lambda o, items: {o: items},
            st.sampled_from(["$and", "$or"]),
            st.lists(inner, min_size=1, max_size=3),
        ),
        inner.map(lambda c: {"$not": c}),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(metadatas=metadata_lists, where=wheres)
def test_columns_match_reference_on_random_metadata(metadatas: list[Any], where: Any) -> None:
    assert column_ids(metadatas, where) == expected_ids(metadatas, where)


_names = itertools.count()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(metadatas=metadata_lists, where=wheres)
def test_sql_and_planner_match_reference_on_random_metadata(
    db: Database, metadatas: list[Any], where: Any
) -> None:
    collection = collection_of(db, f"r{next(_names)}", metadatas)
    check_every_engine(collection, metadatas, where)


def test_columns_follow_updates_and_deletes(filtered: Collection) -> None:
    where = {"lang": "en"}
    assert filtered.query(vectors=[0, 0], k=10, where=where, include=[]).ids == [["0", "2"]]
    filtered.update(["5"], metadatas=[{"lang": "en"}])
    filtered.delete(["0"])
    filtered.upsert(["9"], vectors=[[0, 0]], metadatas=[{"lang": "en"}], model=MODEL)
    result = filtered.query(vectors=[0, 0], k=10, where=where, include=[])
    assert result.ids == [["9", "2", "5"]]


def test_integers_past_float_precision_are_filtered_exactly(db: Database) -> None:
    big = 2**60
    collection = collection_of(db, "big", [{"n": big}, {"n": big + 1}, {"n": 3}])
    for where, want in (({"n": big + 1}, ["1"]), ({"n": {"$gt": big}}, ["1"]), ({"n": 3}, ["2"])):
        result = collection.query(vectors=[0, 0], k=10, where=where, include=[], explain=True)
        assert sorted(result.ids[0]) == want
        assert result.plan is not None and result.plan.filter_source == "sql"
    columns = MetadataColumns()
    columns.add_column("n", np.array([1], dtype=np.int64), [1])
    condition = parse_where({"n": big})
    assert condition is not None
    with pytest.raises(Unsupported):
        columns.mask(condition)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("lang", "dict"),
        ({"lang": {"$regex": "e"}}, r"\$regex"),
        ({"$nor": [{"lang": "en"}]}, r"\$nor"),
        ({"lang": {"$in": []}}, "non-empty list"),
        ({"lang": {"$in": "en"}}, "non-empty list"),
        ({"year": {"$gt": "2020"}}, "number"),
        ({"year": {"$gt": True}}, "number"),
        ({"year": {"$gt": 1, "$lt": 3}}, "exactly one operator"),
        ({"lang": ["en"]}, "str, int, float or bool"),
        ({"lang": None}, "str, int, float or bool"),
        ({"$and": {"lang": "en"}}, "list"),
        ({"$or": [{}]}, "non-empty dict"),
        ({"$not": "en"}, "non-empty dict"),
        ({"lang": {"$not": "en"}}, r"\$not on 'lang'"),
        ({"lang": {"$exists": 1}}, "true or false"),
        ({"tags": {"$contains": ["a"]}}, r"\$contains"),
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
