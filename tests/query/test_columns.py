"""Metadata columns built a key at a time from the store, then kept up to date by the
change feed: they answer like the SQL reference whatever writes came between, and the
store reads they are built from (one key of every record, in chunks; a filter tested on
given keys) give what the records hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import latentdb
from latentdb.query import parse_where
from latentdb.query._columns import MetadataColumns, fields_of, write_columns
from latentdb.query._where import json_path, to_sql
from tests.query.test_where import keys, matches, metadata_lists, values, wheres

MODEL = "test/vectors"

# A write: ("upsert", key, metadata) or ("delete", key).
metadata = st.one_of(st.none(), st.dictionaries(keys, values, max_size=4))
writes = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.integers(0, 40), metadata),
        st.tuples(st.just("delete"), st.integers(0, 40)),
    ),
    max_size=30,
)


def built(records: dict[int, Any], names: set[str]) -> MetadataColumns:
    """Columns of ``names`` as the store would give them for ``records`` (key order)."""
    columns = MetadataColumns()
    keys = np.array(sorted(records), dtype=np.int64)
    for name in sorted(names):
        columns.add_column(name, keys, [(records[k] or {}).get(name) for k in sorted(records)])
    return columns


def answer(columns: MetadataColumns, where: dict[str, Any]) -> list[int]:
    condition = parse_where(where)
    assert condition is not None
    mask = columns.mask(condition)
    return sorted(int(k) for k in columns.keys[: columns.size][mask])


@settings(max_examples=150, deadline=None)
@given(first=metadata_lists, changes=writes, where=wheres)
def test_columns_follow_writes_like_the_reference(
    first: list[Any], changes: list[Any], where: dict[str, Any]
) -> None:
    records: dict[int, Any] = dict(enumerate(first))
    condition = parse_where(where)
    assert condition is not None
    names = fields_of(condition)
    columns = built(records, names)
    next_key = len(first)
    for change in changes:  # one catch-up per write, as the change feed brings them
        if change[0] == "delete":
            records.pop(change[1], None)
            columns.delete([change[1]])
            continue
        _, key, metadata = change
        if key not in records:  # a new record gets a new key, above every other
            key, next_key = next_key, next_key + 1
        records[key] = metadata
        columns.upsert([(key, metadata)])
    want = sorted(k for k, m in records.items() if matches(m, where))
    assert answer(columns, where) == want
    assert columns.live == len(records)


@settings(max_examples=100, deadline=None)
@given(first=metadata_lists, changes=writes, where=wheres)
def test_columns_saved_and_restored_answer_as_the_ones_never_saved(
    tmp_path_factory: Any, first: list[Any], changes: list[Any], where: dict[str, Any]
) -> None:
    """A process that restores the saved columns and then applies the later writes
    answers every filter as the process that built them and saw every write (columns
    with list values are not saved: restoring leaves them to be read again)."""
    path = tmp_path_factory.mktemp("saved") / "columns.npz"
    records: dict[int, Any] = dict(enumerate(first))
    condition = parse_where(where)
    assert condition is not None
    columns = built(records, fields_of(condition))
    columns.applied = 7
    snapshot = columns.snapshot()
    assert snapshot is not None
    write_columns(path, snapshot)
    restored = MetadataColumns()
    names = restored.restore(path, fields_of(condition))
    assert names == {n for n, column in columns.columns.items() if not column.lists}
    if names:
        assert restored.applied == 7 and restored.live == columns.live
    next_key = len(first)
    for change in changes:
        if change[0] == "delete":
            records.pop(change[1], None)
            for target in (columns, restored):
                target.delete([change[1]])
            continue
        _, key, metadata = change
        if key not in records:
            key, next_key = next_key, next_key + 1
        records[key] = metadata
        for target in (columns, restored):
            target.upsert([(key, metadata)])
    if names == fields_of(condition):
        assert answer(restored, where) == answer(columns, where)
    else:
        assert restored.missing(condition)  # read from the store on first use


def test_keys_that_arrive_out_of_order_are_still_found() -> None:
    columns = built({5: {"a": 1}, 9: {"a": 2}}, {"a"})
    columns.upsert([(3, {"a": 1}), (12, {"a": 1})])  # 3 below the others
    assert answer(columns, {"a": 1}) == [3, 5, 12]
    assert columns.slots_of(np.array([12, 3, 4, 9])).tolist()[3] >= 0
    assert columns.slots_of(np.array([4])).tolist() == [-1]


def test_a_key_read_from_the_store_in_chunks_and_a_filter_tested_on_keys(
    tmp_path: Path,
) -> None:
    with latentdb.connect(tmp_path) as db:
        c = db.create_collection("c", dimension=2, embedder=None, index="flat", model=MODEL)
        metadatas: list[dict[str, Any] | None] = [
            {"n": i, "t": "x" if i % 3 else "y", "l": [i, "z"]} if i % 5 else None
            for i in range(23)
        ]
        c.add(
            [str(i) for i in range(23)],
            vectors=np.ones((23, 2), dtype=np.float32),
            metadatas=metadatas,
            model=MODEL,
        )
        other = db.create_collection("o", dimension=2, embedder=None, index="flat", model=MODEL)
        other.add(["a"], vectors=[[1.0, 0.0]], metadatas=[{"n": 1}], model=MODEL)
        store, collection_id = c._database.store, c._state.row.id  # type: ignore[attr-defined]
        keys_of = store.keys_for_ids(collection_id, [str(i) for i in range(23)])
        keys = np.array([keys_of[str(i)] for i in range(23)])
        for name in ("n", "t", "l", "missing"):
            got_keys, got_values, after = [], [], 0
            while True:
                _, chunk, values = store.metadata_field(
                    collection_id, json_path(name), after=after, limit=5
                )
                got_keys += chunk.tolist()
                got_values += values
                if chunk.shape[0] < 5:
                    break
                after = int(chunk[-1])
            assert got_keys == keys.tolist()  # this collection's only, ascending
            assert got_values == [(m or {}).get(name) for m in metadatas]
        condition = parse_where({"t": "y"})
        assert condition is not None
        some = keys[::2]
        passed = store.keys_matching(collection_id, some.tolist(), to_sql(condition))
        rows = zip(range(0, 23, 2), some, strict=True)
        want = [int(k) for i, k in rows if (metadatas[i] or {}).get("t") == "y"]
        assert passed.tolist() == want
