"""The LlamaIndex vector store under a VectorStoreIndex, embedded and over HTTP, with a
small deterministic embedding model and the network shut off but for the loopback."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

import latentdb
from latentdb.integrations.llamaindex import LatentDBVectorStore, metadata_filters_to_where

# pytest-socket (installed with langchain-tests): any connection but to the loopback,
# where the session's latentdb server listens, fails the test.
pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])


class WordEmbedding(BaseEmbedding):
    """Each word adds a pseudo-random vector seeded by its hash: texts sharing words
    are near each other. Deterministic, no model, no download."""

    model_name: str = "test/words"

    def _embed(self, text: str) -> list[float]:
        vector = np.zeros(16)
        for word in text.lower().split():
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            vector += np.random.default_rng(seed).normal(size=16)
        return vector.tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed(text)


ANIMALS = [
    Document(text="cats purr and sleep", metadata={"animal": "cat", "legs": 4}, doc_id="cats"),
    Document(text="dogs bark and run", metadata={"animal": "dog", "legs": 4}, doc_id="dogs"),
    Document(
        text="birds sing and fly",
        metadata={"animal": "bird", "legs": 2, "ringed": None},
        doc_id="birds",
    ),
]


@pytest.fixture
def index(database: latentdb.Database) -> Iterator[VectorStoreIndex]:
    store = LatentDBVectorStore("animals", database=database, model="test/words")
    index = VectorStoreIndex.from_vector_store(store, embed_model=WordEmbedding())
    for document in ANIMALS:
        index.insert(document)
    yield index


def retrieved(index: VectorStoreIndex, text: str, **options: object) -> list[str | None]:
    """The source documents of the nodes retrieved for ``text``, nearest first."""
    hits = index.as_retriever(similarity_top_k=3, **options).retrieve(text)
    return [hit.node.ref_doc_id for hit in hits]


def test_index_inserts_retrieves_and_keeps_nodes_whole(index: VectorStoreIndex) -> None:
    store = index.vector_store
    assert isinstance(store, LatentDBVectorStore) and store.client is not None
    assert store.client.count() == 3
    assert store.client.space.model == "test/words"
    hits = index.as_retriever(similarity_top_k=1).retrieve("dogs bark")
    assert [hit.node.ref_doc_id for hit in hits] == ["dogs"]
    assert hits[0].node.get_content() == "dogs bark and run"
    assert hits[0].score is not None and 0 < hits[0].score <= 1  # cosine similarity
    assert retrieved(index, "birds sing")[0] == "birds"
    # A None value cannot be filtered on, so the record leaves it out; the node keeps it.
    (bird,) = store.get_nodes(
        filters=MetadataFilters(filters=[MetadataFilter(key="legs", value=2)])
    )
    assert bird.metadata == {"animal": "bird", "legs": 2, "ringed": None}


def test_metadata_filters_restrict_retrieval(index: VectorStoreIndex) -> None:
    def only(*filters: MetadataFilter, condition: FilterCondition = FilterCondition.AND) -> set:
        found = retrieved(
            index, "birds sing", filters=MetadataFilters(filters=list(filters), condition=condition)
        )
        return set(found)

    assert only(MetadataFilter(key="legs", value=4)) == {"cats", "dogs"}
    assert only(MetadataFilter(key="legs", value=3, operator=FilterOperator.LT)) == {"birds"}
    assert only(
        MetadataFilter(key="animal", value="cat"),
        MetadataFilter(key="animal", value="bird"),
        condition=FilterCondition.OR,
    ) == {"cats", "birds"}
    assert only(
        MetadataFilter(key="animal", value=["dog", "bird"], operator=FilterOperator.IN),
        MetadataFilter(key="legs", value=4, operator=FilterOperator.GTE),
    ) == {"dogs"}
    assert only(MetadataFilter(key="ringed", value=None, operator=FilterOperator.IS_EMPTY)) == {
        "cats",
        "dogs",
        "birds",
    }
    assert only(MetadataFilter(key="legs", value=4), condition=FilterCondition.NOT) == {"birds"}
    assert retrieved(index, "birds sing", doc_ids=["cats"]) == ["cats"]


def test_delete_by_ref_doc_id(index: VectorStoreIndex) -> None:
    index.delete_ref_doc("dogs")
    assert set(retrieved(index, "dogs bark")) == {"cats", "birds"}
    store = index.vector_store
    assert isinstance(store, LatentDBVectorStore) and store.client is not None
    assert store.client.count() == 2
    store.delete("no such document")
    store.clear()
    assert store.client.count() == 0


def test_a_store_before_its_first_insert(database: latentdb.Database) -> None:
    store = LatentDBVectorStore("later", database=database)
    result = store.query(VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=2))
    assert (result.nodes, result.ids) == ([], [])
    assert store.get_nodes() == []
    assert "later" not in database.list_collections()
    with pytest.raises(latentdb.InvalidArgumentError, match="query_embedding"):
        store.query(VectorStoreQuery(query_str="text only"))


def test_another_model_is_refused(database: latentdb.Database) -> None:
    database.create_collection("animals", embedder=None, dimension=16, model="test/words")
    with pytest.raises(latentdb.ModelMismatchError, match="other/model"):
        LatentDBVectorStore("animals", database=database, model="other/model")


def test_a_named_model_is_required_of_every_write(index: VectorStoreIndex) -> None:
    collection = index.vector_store.client
    assert collection is not None and collection.require_model
    assert collection.space.model == "test/words"


def test_without_a_model_name_the_store_makes_a_collection_that_takes_none(
    database: latentdb.Database,
) -> None:
    store = LatentDBVectorStore("unnamed", database=database)
    index = VectorStoreIndex.from_vector_store(store, embed_model=WordEmbedding())
    index.insert(ANIMALS[0])
    assert store.client is not None and not store.client.require_model
    assert store.client.space.model == "external" and store.client.count() == 1


def test_without_a_model_name_a_collection_that_requires_one_is_refused(
    database: latentdb.Database,
) -> None:
    database.create_collection("animals", embedder=None, dimension=16, model="test/words")
    with pytest.raises(latentdb.ModelRequiredError, match="model='test/words'"):
        LatentDBVectorStore("animals", database=database)


def test_filters_translate_to_where() -> None:
    nested = MetadataFilters(
        filters=[
            MetadataFilter(key="tags", value=["a", "b"], operator=FilterOperator.ANY),
            MetadataFilters(
                filters=[MetadataFilter(key="n", value=1, operator=FilterOperator.NE)],
                condition=FilterCondition.OR,
            ),
        ]
    )
    assert metadata_filters_to_where(nested) == {
        "$and": [
            {"$or": [{"tags": {"$contains": "a"}}, {"tags": {"$contains": "b"}}]},
            {"$or": [{"n": {"$ne": 1}}]},
        ]
    }
    assert metadata_filters_to_where(MetadataFilters(filters=[])) is None
    text = MetadataFilter(key="title", value="cat", operator=FilterOperator.TEXT_MATCH)
    with pytest.raises(latentdb.FilterError, match="text_match"):
        metadata_filters_to_where(MetadataFilters(filters=[text]))
