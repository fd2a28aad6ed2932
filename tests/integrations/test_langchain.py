"""The LangChain vector store: LangChain's own standard suite, embedded and over HTTP,
then what that suite leaves out (filters, scores, MMR, the collection's own model)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

import latentdb
from latentdb.integrations.langchain import LatentDBVectorStore, embeddings_model_name
from tests.conftest import HashingEmbedder, SessionServer
from tests.integrations.conftest import open_database

# -- LangChain's standard suite ----------------------------------------------------


class TestStandardSuiteEmbedded(VectorStoreIntegrationTests):
    """Every test of LangChain's suite, sync and async, on a database in a folder."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:
        with LatentDBVectorStore(
            "standard", embedding=self.get_embeddings(), path=tmp_path / "db"
        ) as store:
            yield store


class TestStandardSuiteOverHttp(VectorStoreIntegrationTests):
    """Every test of LangChain's suite, sync and async, through a latentdb server."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path, http_server: SessionServer) -> Iterator[VectorStore]:
        with latentdb.connect(tmp_path / "db") as served:
            http_server.serve(served)
            with LatentDBVectorStore(
                "standard", embedding=self.get_embeddings(), path=http_server.url
            ) as store:
                assert type(store.database).__name__ == "RemoteDatabase"
                yield store


# -- what the suite leaves out ----------------------------------------------------


class TableEmbeddings(Embeddings):
    """Texts to fixed vectors, so that distances and MMR's choices are known (any other
    text, such as the store's dimension probe, gets the first vector)."""

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        self.table = table
        self.model = "table"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return list(self.table.get(text) or next(iter(self.table.values())))


FAKE = DeterministicFakeEmbedding(size=8)
ANIMALS = [
    Document("a cat sat on the mat", metadata={"kind": "cat", "year": 2020, "tags": ["pet"]}),
    Document("a kitten slept", metadata={"kind": "cat", "year": 2023, "tags": ["pet", "young"]}),
    Document("a wolf howled", metadata={"kind": "dog", "year": 2021, "tags": ["wild"]}),
    Document("the puppy played", metadata={}),
]


def test_filters_are_latentdb_where(database: latentdb.Database) -> None:
    store = LatentDBVectorStore("animals", embedding=FAKE, database=database)
    ids = store.add_documents(ANIMALS)

    def found(**options: object) -> list[str | None]:
        return [doc.id for doc in store.similarity_search("a cat sat on the mat", 10, **options)]

    assert found()[0] == ids[0]
    assert sorted(found(filter={"kind": "cat"})) == sorted(ids[:2])
    assert sorted(found(filter={"year": {"$gte": 2021}})) == sorted(ids[1:3])
    assert found(filter={"tags": {"$contains": "young"}}) == [ids[1]]
    either = found(filter={"$or": [{"kind": "dog"}, {"kind": {"$exists": False}}]})
    assert sorted(either) == sorted(ids[2:])
    assert found(where_document={"$contains": "puppy"}) == [ids[3]]
    # The empty metadata comes back as it went in, and so do lists.
    assert store.get_by_ids([ids[3], ids[1]]) == [
        Document("the puppy played", id=ids[3]),
        Document(ANIMALS[1].page_content, metadata=ANIMALS[1].metadata, id=ids[1]),
    ]


def test_retriever_passes_search_options(database: latentdb.Database) -> None:
    store = LatentDBVectorStore("animals", embedding=FAKE, database=database)
    ids = store.add_documents(ANIMALS)
    retriever = store.as_retriever(search_kwargs={"k": 3, "filter": {"kind": "cat"}})
    assert sorted(doc.id or "" for doc in retriever.invoke("a wolf howled")) == sorted(ids[:2])
    assert store.as_retriever(search_kwargs={"k": 1}).invoke("a wolf howled")[0].id == ids[2]


async def test_async_retriever_and_search(database: latentdb.Database) -> None:
    store = LatentDBVectorStore("animals", embedding=FAKE, database=database)
    ids = await store.aadd_documents(ANIMALS)
    docs = await store.as_retriever(search_kwargs={"k": 1}).ainvoke("the puppy played")
    assert [doc.id for doc in docs] == [ids[3]]
    pairs = await store.asimilarity_search_with_score("a wolf howled", k=1)
    assert pairs[0][0].id == ids[2]
    assert pairs[0][1] == pytest.approx(0.0, abs=1e-6)


def test_scores_are_distances_smaller_closer(database: latentdb.Database) -> None:
    table = {"x": [1.0, 0.0], "y": [0.6, 0.8], "z": [0.0, 1.0]}
    store = LatentDBVectorStore("scores", embedding=TableEmbeddings(table), database=database)
    store.add_texts(["x", "y", "z"], ids=["x", "y", "z"])
    pairs = store.similarity_search_with_score("x", k=3)
    assert [doc.id for doc, _ in pairs] == ["x", "y", "z"]
    assert [score for _, score in pairs] == pytest.approx([0.0, 0.4, 1.0], abs=1e-6)  # 1 - cos
    relevance = store.similarity_search_with_relevance_scores("x", k=3)
    assert [score for _, score in relevance] == pytest.approx([1.0, 0.6, 0.0], abs=1e-6)
    above = store.similarity_search_with_relevance_scores("x", k=3, score_threshold=0.5)
    assert [doc.id for doc, _ in above] == ["x", "y"]
    by_vector = store.similarity_search_by_vector([0.0, 2.0], k=1)
    assert [doc.id for doc in by_vector] == ["z"]


def test_relevance_follows_the_collection_metric(database: latentdb.Database) -> None:
    table = {"x": [1.0, 0.0], "y": [0.0, 1.0]}
    embeddings = TableEmbeddings(table)
    for metric in ("l2", "ip"):
        database.create_collection(
            metric,
            embedder=None,
            dimension=2,
            model=embeddings_model_name(embeddings),
            metric=metric,
        )
        store = LatentDBVectorStore(metric, embedding=embeddings, database=database)
        store.add_texts(["x", "y"], ids=["x", "y"])
        relevance = store.similarity_search_with_relevance_scores("x", k=2)
        # l2: squared distance 0 and 2 -> 1 - sqrt(d)/sqrt(2); ip: the inner product.
        assert [score for _, score in relevance] == pytest.approx([1.0, 0.0], abs=1e-6)


def test_max_marginal_relevance_trades_similarity_for_diversity(
    database: latentdb.Database,
) -> None:
    table = {
        "q": [1.0, 0.0, 0.0],
        "a": [1.0, 0.3, 0.0],  # cos to q 0.958
        "a-again": [1.0, 0.31, 0.0],  # 0.955, but a near-copy of a
        "b": [1.0, -0.35, 0.0],  # 0.944, on the other side of q
        "far": [0.0, 0.0, 1.0],
    }
    store = LatentDBVectorStore("mmr", embedding=TableEmbeddings(table), database=database)
    store.add_texts(["a", "a-again", "b", "far"], ids=["a", "a-again", "b", "far"])
    assert [d.id for d in store.similarity_search("q", k=2)] == ["a", "a-again"]
    diverse = store.max_marginal_relevance_search("q", k=2, fetch_k=4, lambda_mult=0.5)
    assert [d.id for d in diverse] == ["a", "b"]
    assert [d.page_content for d in diverse] == ["a", "b"]
    none_pass = {"$not": {"x": {"$exists": False}}}
    assert store.max_marginal_relevance_search("q", k=2, filter=none_pass) == []
    retriever = store.as_retriever(search_type="mmr", search_kwargs={"k": 2})
    assert [d.id for d in retriever.invoke("q")] == ["a", "b"]


def test_the_collection_embeds_without_langchain_embeddings(
    database: latentdb.Database, hashing_embedder: HashingEmbedder
) -> None:
    database.create_collection("own", embedder="test-hashing")
    store = LatentDBVectorStore.from_texts(
        ["red apple pie", "green apple tart", "blue whale song"],
        metadatas=[{"n": 1}, {"n": 2}, {"n": 3}],
        ids=["pie", "tart", "whale"],
        collection_name="own",
        database=database,
    )
    assert store.embeddings is None
    assert store.collection.embedder == "test-hashing"
    assert [d.id for d in store.similarity_search("apple pie", k=1)] == ["pie"]
    assert [d.id for d in store.similarity_search("apple", k=1, filter={"n": {"$gt": 1}})] == [
        "tart"
    ]
    mmr = store.max_marginal_relevance_search("red apple pie", k=2, fetch_k=3, lambda_mult=0.0)
    assert mmr[0].id == "pie"


def test_new_collections_record_the_embeddings_model(tmp_path: Path) -> None:
    with LatentDBVectorStore("notes", embedding=FAKE, path=tmp_path / "db") as store:
        space = store.collection.space
        assert (space.model, space.dimension, store.collection.embedder) == (
            "langchain/DeterministicFakeEmbedding",
            8,
            None,
        )
        # Its writes name that model, so the collection can require it of every write.
        assert store.collection.require_model
        store.add_texts(["kept"], ids=["kept"])
    # Reopened with the same embeddings: the same collection, the same records.
    with LatentDBVectorStore("notes", embedding=FAKE, path=tmp_path / "db") as store:
        assert [d.id for d in store.similarity_search("kept", k=1)] == ["kept"]
    # Another model's vectors would mix latent spaces: refused.
    other = TableEmbeddings({"kept": [1.0] * 8})
    with pytest.raises(latentdb.ModelMismatchError, match="TableEmbeddings:table"):
        LatentDBVectorStore("notes", embedding=other, path=tmp_path / "db")
    assert embeddings_model_name(other) == "langchain/TableEmbeddings:table"


def test_delete_by_filter_and_everything(database: latentdb.Database) -> None:
    store = LatentDBVectorStore("animals", embedding=FAKE, database=database)
    ids = store.add_documents(ANIMALS, batch_size=3)
    assert store.collection.count() == 4
    assert store.delete(filter={"kind": "cat"}) is True
    assert sorted(d.id or "" for d in store.get_by_ids(ids)) == sorted(ids[2:])
    assert store.delete() is True
    assert store.collection.count() == 0


def test_bad_arguments_are_refused(database: latentdb.Database, tmp_path: Path) -> None:
    store = LatentDBVectorStore("animals", embedding=FAKE, database=database)
    with pytest.raises(latentdb.InvalidArgumentError, match="unknown keyword arguments"):
        store.similarity_search("x", k=1, fitler={"kind": "cat"})
    with pytest.raises(latentdb.InvalidArgumentError, match="2 ids for 1 texts"):
        store.add_texts(["x"], ids=["a", "b"])
    with pytest.raises(latentdb.InvalidMetadataError):
        store.add_texts(["x"], metadatas=[{"nested": {"no": 1}}])
    with pytest.raises(latentdb.FilterError):
        store.similarity_search("x", filter={"kind": {"$like": "c%"}})
    with pytest.raises(latentdb.InvalidArgumentError, match=r"path= .* or database="):
        LatentDBVectorStore("animals", embedding=FAKE)
    with pytest.raises(latentdb.InvalidArgumentError, match="not both"):
        LatentDBVectorStore("animals", embedding=FAKE, database=database, path=tmp_path)


def test_mmr_by_vector_keeps_order_of_choice(database: latentdb.Database) -> None:
    store = LatentDBVectorStore("animals", embedding=FAKE, database=database)
    ids = store.add_documents(ANIMALS)
    vector = np.asarray(FAKE.embed_query(ANIMALS[2].page_content))
    chosen = store.max_marginal_relevance_search_by_vector(vector.tolist(), k=1, fetch_k=4)
    assert [d.id for d in chosen] == [ids[2]]


def test_importing_latentdb_imports_no_framework() -> None:
    code = (
        "import sys, latentdb, latentdb.integrations\n"
        "loaded = [m for m in ('langchain_core', 'llama_index') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_both_transports_answer_the_same(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    answers = []
    for transport in ("embedded", "http"):
        opened = open_database(request, transport, tmp_path / transport)
        database = next(opened)
        store = LatentDBVectorStore("animals", embedding=FAKE, database=database)
        store.add_documents(ANIMALS, ids=["a", "b", "c", "d"])
        answers.append(store.similarity_search_with_score("a kitten", k=4))
        next(opened, None)
    # The same documents in the same order; distances agree to float32 rounding (over
    # HTTP the query vector travels as float32 before it is normalized).
    assert [doc for doc, _ in answers[0]] == [doc for doc, _ in answers[1]]
    assert [d for _, d in answers[0]] == pytest.approx([d for _, d in answers[1]], abs=1e-6)


@pytest.mark.slow
def test_a_new_collection_embeds_with_minilm_by_default(tmp_path: Path) -> None:
    with LatentDBVectorStore("notes", path=tmp_path / "db") as store:
        assert store.collection.embedder == "minilm"
        store.add_texts(
            ["a cat sat on the mat", "stock markets fell sharply"], ids=["cat", "stocks"]
        )
        assert [d.id for d in store.similarity_search("kitten", k=1)] == ["cat"]
        # MMR embeds the query here with the collection's own model.
        mmr = store.max_marginal_relevance_search("kitten", k=2, fetch_k=2)
        assert [d.id for d in mmr] == ["cat", "stocks"]
