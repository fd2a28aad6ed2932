"""Database: collections, their latent spaces, persistence and the public names."""

from __future__ import annotations

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
)

# Each test that uses db or open_db runs embedded and over HTTP (tests/conftest.py).
pytestmark = pytest.mark.transports


def test_connect_creates_the_folder_and_works_as_context_manager(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    with latentdb.connect(folder) as db:
        db.create_collection("c", dimension=3, embedder=None)
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
        db.create_collection(name, dimension=2, embedder=None)
    assert db.list_collections() == ["a", "b", "c.1"]
    db.get_collection("a").add(["x"], vectors=[1.0, 2.0])
    db.delete_collection("a")
    assert db.list_collections() == ["b", "c.1"]
    with pytest.raises(CollectionNotFoundError, match="'a'"):
        db.get_collection("a")
    with pytest.raises(CollectionNotFoundError):
        db.delete_collection("a")
    assert db.create_collection("a", dimension=2, embedder=None).count() == 0


def test_name_taken(db: Database) -> None:
    db.create_collection("c", dimension=2, embedder=None)
    with pytest.raises(CollectionExistsError, match="'c' already exists"):
        db.create_collection("c", dimension=2, embedder=None)


@pytest.mark.parametrize("name", ["", "has space", "-start", "x" * 129, "semi;colon", 5])
def test_bad_collection_names(db: Database, name: object) -> None:
    with pytest.raises(InvalidArgumentError, match="collection names"):
        db.create_collection(name, dimension=2, embedder=None)  # type: ignore[arg-type]
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
    first.add(["a"], vectors=np.ones(4))
    again = db.get_or_create_collection("c", dimension=4, embedder=None, model="m")
    assert again.count() == 1
    with pytest.raises(CollectionExistsError, match="dimension 4"):
        db.get_or_create_collection("c", dimension=8, embedder=None, model="m")
    with pytest.raises(CollectionExistsError, match="model 'm'"):
        db.get_or_create_collection("c", dimension=4, embedder=None, model="other")


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
