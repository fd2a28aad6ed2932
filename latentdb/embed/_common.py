"""What the embedders share: the image input type, the model-directory fingerprint and
the offline, quiet import of Hugging Face libraries."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import numpy.typing as npt

from latentdb.errors import EmbedderError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DirectoryModel",
    "FloatMatrix",
    "ImageInput",
    "TextModel",
    "directory_fingerprint",
    "hugging_face_imports",
    "torch_threads",
]

FloatMatrix: TypeAlias = npt.NDArray[np.float32]
# A path to an image file, the encoded bytes of one (PNG, JPEG, ...), or a decoded image.
ImageInput: TypeAlias = "str | os.PathLike[str] | bytes | Image.Image"

# Files that do not change the vectors, left out of the fingerprint.
_NOT_FINGERPRINTED = frozenset({"README.md", ".gitattributes", "data_config.json"})


def directory_fingerprint(path: Path) -> str:
    """SHA-256 over every file of a model directory that can change the vectors.

    Each file contributes its path relative to ``path`` and its bytes, in sorted order,
    so two copies of one model agree wherever they live, and a changed weight, tokenizer
    or config file changes the hash. READMEs, git attributes and ``__pycache__`` are
    left out.

    Args:
        path: The model directory.

    Returns:
        ``"sha256:"`` followed by 64 hex digits.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path).as_posix()
        if file.name in _NOT_FINGERPRINTED or "__pycache__" in relative:
            continue
        digest.update(relative.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


class DirectoryModel:
    """A model loaded from a local directory: its fingerprint is the directory's,
    hashed once, on first use."""

    path: Path
    _fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the files that decide the vectors (weights, tokenizer,
        pooling, normalization and other configs)."""
        if self._fingerprint is None:
            self._fingerprint = directory_fingerprint(self.path)
        return self._fingerprint


class TextModel(DirectoryModel):
    """A model directory that embeds text only: images are refused by name."""

    name: str
    model: str
    modalities = frozenset({"text"})

    def embed_images(
        self,
        images: Sequence[ImageInput],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> FloatMatrix:
        """Refuse: a text model puts only text into its space.

        Raises:
            EmbedderError: always; use a ``"clip:..."`` embedder for images.
        """
        raise EmbedderError(
            f"embedder {self.name!r} (model {self.model!r}) embeds text only, not images; "
            "use a text+image embedder such as 'clip:/path/to/clip-model'"
        )


@contextmanager
def hugging_face_imports(runs_on: str, extra: str) -> Iterator[None]:
    """Around the imports that load a Hugging Face model: the hub and transformers are
    kept offline (models are read from their directory, never downloaded), a missing
    library is an EmbedderError naming the extra that installs it, and transformers'
    progress bars and warnings are silenced once the imports succeed.

    Args:
        runs_on: What needs which libraries, the message's start, e.g. ``"CLIP models
            run on torch and transformers"``.
        extra: The extra in ``pip install 'latentdb[<extra>]'``.

    Raises:
        EmbedderError: an import in the block failed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        yield
        from transformers.utils import logging as transformers_logging
    except ImportError as error:
        raise EmbedderError(
            f"{runs_on}, which are not installed ({error}): pip install 'latentdb[{extra}]'"
        ) from None
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


@contextmanager
def torch_threads(inputs: int) -> Iterator[None]:
    """Around a torch embedding call of ``inputs`` texts or images: one input runs on
    one torch thread, more on torch's default (every core).

    Why: torch's OpenMP threads split every operator of one short text across the cores
    and spin at each barrier; with another process on one of two cores, one query took
    0.39-0.89 s against ~45 ms on one thread (issue 18).

    ``torch.set_num_threads`` is set back on leaving. It reaches the calling thread's
    OpenMP pool, and MKL's (which the process shares), so a large batch embedded at the
    same moment in another thread may run its MKL calls on one thread meanwhile.
    """
    import torch

    previous = torch.get_num_threads()
    if inputs != 1 or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
