"""Shared fixtures: temporary databases that are always closed, and test embedders."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import settings

import latentdb
from latentdb import embed

settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("nightly", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[latentdb.Database]:
    """A new database in a temporary folder, closed after the test."""
    database = latentdb.connect(tmp_path / "db")
    yield database
    database.close()


@pytest.fixture
def open_db(tmp_path: Path) -> Iterator[Callable[[], latentdb.Database]]:
    """Opens (and re-opens) one temporary folder; closes every database it opened."""
    opened: list[latentdb.Database] = []

    def open_again() -> latentdb.Database:
        database = latentdb.connect(tmp_path / "db")
        opened.append(database)
        return database

    yield open_again
    for database in opened:
        database.close()


class HashingEmbedder:
    """A deterministic, dependency-free text embedder for tests of the text path.

    Each word adds a pseudo-random unit vector seeded by its hash: texts sharing words
    are near each other, so nearest-neighbour answers are predictable. Not a model.
    """

    modalities = frozenset({"text"})
    metric = "cosine"
    normalized = True

    def __init__(self, name: str, *, dimension: int = 16, salt: str = "") -> None:
        self.name = name
        self.model = f"test/hashing-{dimension}"
        self.dimension = dimension
        self.salt = salt
        self.calls = 0

    @property
    def fingerprint(self) -> str:
        return "sha256:" + hashlib.sha256(f"{self.dimension}{self.salt}".encode()).hexdigest()

    def embed_texts(
        self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        self.calls += 1
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                out[row] += np.random.default_rng(seed).normal(size=self.dimension)
        if progress is not None:
            progress(len(texts))
        return out


@pytest.fixture
def hashing_embedder() -> Iterator[HashingEmbedder]:
    """Registers a HashingEmbedder as "test-hashing" for the duration of a test."""
    instance = HashingEmbedder("test-hashing")
    embed.register("test-hashing", lambda name: instance)
    yield instance
    embed.unregister("test-hashing")
