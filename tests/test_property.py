"""A hypothesis state machine: the collection behaves like a plain-Python dict of records.

Rules add, upsert, update, delete (by id and by filter), query and re-open the database;
after each step, count and get agree with the model, and query returns the exact
nearest neighbours a numpy brute force finds on the model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import latentdb
from latentdb import DuplicateIdError, RecordNotFoundError

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

DIM = 4
id_strategy = st.sampled_from([f"id{i}" for i in range(12)])
vector_strategy = st.lists(st.integers(-8, 8).map(float), min_size=DIM, max_size=DIM).filter(
    lambda v: any(v)
)
metadata_strategy = st.one_of(
    st.none(), st.fixed_dictionaries({"group": st.sampled_from(["a", "b"]), "n": st.integers(0, 3)})
)


class CollectionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="latentdb-prop-"))
        self.model: dict[str, tuple[np.ndarray, str | None, dict[str, Any] | None]] = {}

    @initialize(metric=st.sampled_from(["l2", "cosine", "ip"]))
    def open(self, metric: str) -> None:
        self.metric = metric
        self.db = latentdb.connect(self.folder)
        self.collection = self.db.create_collection(
            "p", dimension=DIM, metric=metric, embedder=None, model=MODEL
        )

    def teardown(self) -> None:
        if hasattr(self, "db"):
            self.db.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def stored(self, vector: list[float]) -> np.ndarray:
        array = np.array(vector, dtype=np.float32)
        return array / np.linalg.norm(array) if self.metric == "cosine" else array

    @rule(
        records=st.lists(
            st.tuples(
                id_strategy, vector_strategy, st.none() | st.text(max_size=5), metadata_strategy
            ),
            min_size=1,
            max_size=4,
            unique_by=lambda r: r[0],
        ),
        upsert=st.booleans(),
    )
    def write(self, records: list[tuple[Any, ...]], upsert: bool) -> None:
        ids = [r[0] for r in records]
        arguments = {
            "vectors": [r[1] for r in records],
            "documents": [r[2] for r in records],
            "metadatas": [r[3] for r in records],
            "model": MODEL,
        }
        if not upsert and any(i in self.model for i in ids):
            try:
                self.collection.add(ids, **arguments)
            except DuplicateIdError:
                return
            raise AssertionError("add of a stored id must raise DuplicateIdError")
        (self.collection.upsert if upsert else self.collection.add)(ids, **arguments)
        for record_id, vector, document, metadata in records:
            self.model[record_id] = (self.stored(vector), document, metadata)

    @rule(ids=st.lists(id_strategy, min_size=1, max_size=3, unique=True), data=st.data())
    def update(self, ids: list[str], data: st.DataObject) -> None:
        metadatas = data.draw(st.lists(metadata_strategy, min_size=len(ids), max_size=len(ids)))
        new_vectors = data.draw(
            st.none() | st.lists(vector_strategy, min_size=len(ids), max_size=len(ids))
        )
        if any(i not in self.model for i in ids):
            try:
                self.collection.update(ids, metadatas=metadatas, vectors=new_vectors, model=MODEL)
            except RecordNotFoundError:
                return
            raise AssertionError("update of a missing id must raise RecordNotFoundError")
        self.collection.update(ids, metadatas=metadatas, vectors=new_vectors, model=MODEL)
        for position, record_id in enumerate(ids):
            vector, document, _ = self.model[record_id]
            if new_vectors is not None:
                vector = self.stored(new_vectors[position])
            self.model[record_id] = (vector, document, metadatas[position])

    @rule(ids=st.lists(id_strategy, max_size=3))
    def delete_ids(self, ids: list[str]) -> None:
        deleted = self.collection.delete(ids)
        assert deleted == len({i for i in ids if i in self.model})
        for record_id in ids:
            self.model.pop(record_id, None)

    @rule(group=st.sampled_from(["a", "b"]))
    def delete_where(self, group: str) -> None:
        doomed = [i for i, (_, _, m) in self.model.items() if m is not None and m["group"] == group]
        assert self.collection.delete(where={"group": group}) == len(doomed)
        for record_id in doomed:
            del self.model[record_id]

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = latentdb.connect(self.folder)
        self.collection = self.db.get_collection("p")

    @precondition(lambda self: hasattr(self, "collection"))
    @rule(queries=st.lists(vector_strategy, min_size=1, max_size=3), k=st.integers(1, 6))
    def query(self, queries: list[list[float]], k: int) -> None:
        result = self.collection.query(vectors=queries, k=k, include=["distances"])
        ids = list(self.model)
        assert result.distances is not None
        assert result.distances.shape == (len(queries), min(k, len(ids)))
        if not ids:
            return
        matrix = np.stack([self.model[i][0] for i in ids])
        for row, query in enumerate(queries):
            q = self.stored(query)
            if self.metric == "l2":
                expected = ((matrix - q) ** 2).sum(1)
            elif self.metric == "cosine":
                expected = 1 - matrix @ q
            else:
                expected = -(matrix @ q)
            by_id = dict(zip(ids, expected, strict=True))
            got = result.distances[row]
            # Ties may come in any order: compare distances, and each id's own distance.
            np.testing.assert_allclose(got, np.sort(expected)[: len(got)], atol=1e-4)
            for record_id, distance in zip(result.ids[row], got, strict=True):
                assert abs(by_id[record_id] - distance) < 1e-4

    @invariant()
    def agrees_with_model(self) -> None:
        if not hasattr(self, "collection"):
            return
        assert self.collection.count() == len(self.model)
        everything = self.collection.get(include=["vectors", "documents", "metadatas"])
        assert sorted(everything.ids) == sorted(self.model)
        assert everything.vectors is not None and everything.documents is not None
        assert everything.metadatas is not None
        for position, record_id in enumerate(everything.ids):
            vector, document, metadata = self.model[record_id]
            np.testing.assert_allclose(everything.vectors[position], vector, rtol=1e-6)
            assert everything.documents[position] == document
            assert everything.metadatas[position] == metadata


TestCollectionMachine = CollectionMachine.TestCase
