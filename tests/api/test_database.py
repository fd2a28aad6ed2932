"""Database: collections, their latent spaces, persistence and the public names."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import latentdb
from latentdb import (
    CollectionExistsError,
    CollectionNotFoundError,
    Database,
    DimensionMismatchError,
    EmbedderError,
    InvalidArgumentError,
    LatentSpace,
    ModelMismatchError,
    ModelRequiredError,
)
from tests.conftest import HashingEmbedder, SessionServer

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

# Each test that uses db or open_db runs embedded and over HTTP (tests/conftest.py).
pytestmark = pytest.mark.transports


def test_connect_creates_the_folder_and_works_as_context_manager(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    with latentdb.connect(folder) as db:
        db.create_collection("c", dimension=3, embedder=None, model=MODEL)
        assert db.list_collections() == ["c"]
    assert (folder / "latentdb.sqlite3").is_file()
    with pytest.raises(latentdb.DatabaseClosedError):
        db.list_collections()


def test_external_space_is_stored_and_reloaded(open_db: Callable[[], Database]) -> None:
    db = open_db()
    db.create_collection("ext", dimension=1536, metric="ip", embedder=None, model="openai/te3s")
    space = open_db().get_collection("ext").space
    assert space == LatentSpace(
        model="openai/te3s", fingerprint=None, dimension=1536, metric="ip", normalized=False
    )


def test_collections_listed_created_and_deleted(db: Database) -> None:
    for name in ("b", "a", "c.1"):
        db.create_collection(name, dimension=2, embedder=None, model=MODEL)
    assert db.list_collections() == ["a", "b", "c.1"]
    db.get_collection("a").add(["x"], vectors=[1.0, 2.0], model=MODEL)
    db.delete_collection("a")
    assert db.list_collections() == ["b", "c.1"]
    with pytest.raises(CollectionNotFoundError, match="'a'"):
        db.get_collection("a")
    with pytest.raises(CollectionNotFoundError):
        db.delete_collection("a")
    assert db.create_collection("a", dimension=2, embedder=None, model=MODEL).count() == 0


def test_name_taken(db: Database) -> None:
    db.create_collection("c", dimension=2, embedder=None, model=MODEL)
    with pytest.raises(CollectionExistsError, match="'c' already exists"):
        db.create_collection("c", dimension=2, embedder=None, model=MODEL)


@pytest.mark.parametrize("name", ["", "has space", "-start", "x" * 129, "semi;colon", 5])
def test_bad_collection_names(db: Database, name: object) -> None:
    with pytest.raises(InvalidArgumentError, match="collection names"):
        db.create_collection(name, dimension=2, embedder=None, model=MODEL)  # type: ignore[arg-type]
    assert db.list_collections() == []


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"embedder": None}, InvalidArgumentError, "needs dimension"),
        ({"embedder": None, "dimension": 0}, InvalidArgumentError, "dimension"),
        ({"embedder": None, "dimension": 2, "metric": "hamming"}, InvalidArgumentError, "metric"),
        ({"embedder": "no-such-model"}, EmbedderError, "unknown embedder"),
        ({"embedder": "test-hashing", "dimension": 3}, DimensionMismatchError, "16"),
        ({"embedder": "test-hashing", "model": "other"}, ModelMismatchError, "other"),
        ({"embedder": None, "dimension": 2}, InvalidArgumentError, "needs model=.*require_model"),
        (
            {"embedder": None, "dimension": 2, "model": "m", "require_model": 1},
            InvalidArgumentError,
            "require_model",
        ),
    ],
)
def test_bad_spaces_create_nothing(
    db: Database, hashing_embedder: object, arguments: dict[str, object], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        db.create_collection("c", **arguments)  # type: ignore[arg-type]
    assert db.list_collections() == []


def test_get_or_create_returns_existing_and_refuses_another_space(db: Database) -> None:
    first = db.get_or_create_collection("c", dimension=4, embedder=None, model="m")
    first.add(["a"], vectors=np.ones(4), model="m")
    again = db.get_or_create_collection("c", dimension=4, embedder=None, model="m")
    assert again.count() == 1
    with pytest.raises(CollectionExistsError, match="dimension 4"):
        db.get_or_create_collection("c", dimension=8, embedder=None, model="m")
    with pytest.raises(CollectionExistsError, match="model 'm'"):
        db.get_or_create_collection("c", dimension=4, embedder=None, model="other")


def test_writes_of_vectors_name_their_model_unless_the_collection_opts_out(
    open_db: Callable[[], Database],
) -> None:
    """Issue 16: vectors from another model can never slip in. A new collection
    requires model= with every write of vectors; require_model=False opts out; both
    settings are stored with the collection."""
    db = open_db()
    strict = db.create_collection("strict", dimension=2, embedder=None, model=MODEL)
    lenient = db.create_collection("lenient", dimension=2, embedder=None, require_model=False)
    assert strict.require_model and not lenient.require_model
    assert lenient.space.model == "external"  # no model named: none to check against
    for write in (strict.add, strict.upsert):
        with pytest.raises(ModelRequiredError, match=f"Pass model='{MODEL}'.*require_model=False"):
            write(["a"], vectors=[1.0, 0.0])
    with pytest.raises(ModelMismatchError, match="'other'"):
        strict.add(["a"], vectors=[1.0, 0.0], model="other")
    assert strict.count() == 0  # refused whole: nothing written
    strict.add(["a", "b"], vectors=[[1.0, 0.0], [0.0, 1.0]], model=MODEL)
    with pytest.raises(ModelRequiredError):
        strict.update("a", vectors=[1.0, 1.0], metadatas=[{"n": 1}])
    assert strict.get("a", include=["metadatas"]).metadatas == [None]  # not half-updated
    strict.update("a", metadatas=[{"n": 1}])  # no vectors, no model needed
    # Queries change nothing stored: model= is checked when given, not required.
    assert strict.query(vectors=[1.0, 0.1], k=1).ids == [["a"]]
    with pytest.raises(ModelMismatchError, match="'other'"):
        strict.query(vectors=[1.0, 0.0], k=1, model="other")
    lenient.add(["a"], vectors=[1.0, 0.0])  # opted out
    with pytest.raises(ModelMismatchError):  # a model given is checked all the same
        lenient.add(["b"], vectors=[1.0, 0.0], model="other")
    db.close()

    again = open_db()
    strict, lenient = again.get_collection("strict"), again.get_collection("lenient")
    assert strict.require_model and not lenient.require_model
    with pytest.raises(ModelRequiredError):
        strict.upsert(["c"], vectors=[1.0, 1.0])
    lenient.upsert(["c"], vectors=[1.0, 1.0])
    assert (strict.count(), lenient.count()) == (2, 2)
    # get_or_create returns a collection with its own setting, whatever the default says.
    assert not again.get_or_create_collection("lenient", dimension=2, embedder=None).require_model
    assert again.get_or_create_collection(
        "strict", dimension=2, embedder=None, model=MODEL, require_model=False
    ).require_model


def test_texts_the_collection_embeds_need_no_model(
    db: Database, hashing_embedder: HashingEmbedder
) -> None:
    texts = db.create_collection("texts", embedder="test-hashing")
    assert texts.require_model
    texts.add(["a"], documents=["a cat sat"])
    texts.update("a", documents=["a dog sat"])  # re-embedded by the collection
    texts.upsert(["b"], documents=["stocks fell"])
    with pytest.raises(ModelRequiredError, match="model='test/hashing-16'"):
        texts.add(["c"], vectors=np.ones(16))
    texts.add(["c"], vectors=np.ones(16), model=hashing_embedder.model)
    assert texts.count() == 3


def _strip_require_model(database_file: Path) -> None:
    """Make the collections of a database as those made before issue 16 stored them:
    a config with no require_model."""
    with sqlite3.connect(database_file) as connection:
        rows = connection.execute("SELECT id, config FROM collections").fetchall()
        for collection_id, config in rows:
            old = {k: v for k, v in json.loads(config).items() if k != "require_model"}
            connection.execute(
                "UPDATE collections SET config = ? WHERE id = ?", (json.dumps(old), collection_id)
            )
    connection.close()


@pytest.mark.embedded_only
def test_collections_of_an_older_database_keep_accepting_vectors_without_a_model(
    tmp_path: Path, http_server: SessionServer
) -> None:
    folder = tmp_path / "old"
    with latentdb.connect(folder) as db:
        db.create_collection("unnamed", dimension=2, embedder=None, require_model=False)
        db.create_collection("named", dimension=2, embedder=None, model="m")
    _strip_require_model(folder / "latentdb.sqlite3")
    with latentdb.connect(folder) as db:
        for name in ("unnamed", "named"):
            collection = db.get_collection(name)
            assert not collection.require_model
            collection.add(["a"], vectors=[1.0, 0.0])
        with pytest.raises(ModelMismatchError, match="'other'"):  # checked as it always was
            db.get_collection("named").add(["b"], vectors=[0.0, 1.0], model="other")
        # Code written for the old defaults opens them as they are.
        old = db.get_or_create_collection("unnamed", dimension=2, embedder=None)
        assert old.count() == 1 and not old.require_model
        # Over HTTP too: the server reports the setting and takes the same writes.
        http_server.serve(db)
        with latentdb.connect(http_server.url) as remote:
            named = remote.get_collection("named")
            assert not named.require_model
            named.upsert(["b"], vectors=[0.0, 1.0])
            assert named.count() == 2


def test_public_names_are_what_we_promise() -> None:
    promised = {
        "connect",
        "Database",
        "Collection",
        "GetResult",
        "QueryResult",
        "LatentSpace",
        "LatentDBError",
        "DimensionMismatchError",
        "ModelMismatchError",
        "ModelRequiredError",
        "InvalidVectorError",
        "DuplicateIdError",
        "CollectionNotFoundError",
        "FilterError",
        "AuthError",
    }
    assert promised <= set(latentdb.__all__)
    for name in latentdb.__all__:
        assert getattr(latentdb, name) is not None


def test_every_error_has_a_stable_code_and_status() -> None:
    errors = [getattr(latentdb, n) for n in latentdb.__all__ if n.endswith("Error")]
    codes = set()
    for error in errors:
        assert issubclass(error, latentdb.LatentDBError)
        assert 400 <= error.status < 600
        codes.add(error.code)
    assert len(codes) == len(errors)  # no two classes share a code
