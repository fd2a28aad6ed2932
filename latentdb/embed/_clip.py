"""Text and image embedders backed by a local Hugging Face CLIP model directory.

A CLIP model has two towers, one for text and one for images, trained so that a caption
and its picture land near each other: both project into one space of ``projection_dim``
dimensions, so a collection can hold image vectors and answer text queries (or the
reverse). The model is run with transformers' ``CLIPModel``; images are prepared with the
PIL/numpy image processor (``CLIPImageProcessorPil``), never the torchvision one, so
torchvision is not needed.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from latentdb.embed._common import (
    DirectoryModel,
    FloatMatrix,
    ImageInput,
    hugging_face_imports,
    torch_threads,
)
from latentdb.errors import EmbedderError
from latentdb.space import Metric

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["ClipEmbedder", "clip_architecture_name", "clip_embedder"]

# Vision tower widths of open_clip's ViT family (open_clip src/open_clip/model_configs/
# ViT-*.json: "width"), which name an architecture by this letter, then the patch size.
_SIZE_BY_WIDTH = {384: "S", 512: "M", 768: "B", 1024: "L", 1280: "H", 1408: "g", 1664: "bigG"}
# ViT-G-14.json and ViT-bigG-14.json in open_clip are one model under two names.
_SIZE_ALIASES = {"G": "bigG"}
# open_clip names leave the usual input size out: ViT-L-14 is 224 px, ViT-L-14-336 is not.
_USUAL_IMAGE_SIZE = 224
_ARCHITECTURE_PATTERN = re.compile(r"ViT-(S|M|B|L|H|g|G|bigG)-(\d+)(?:-(\d+))?")
# transformers' CLIPConfig and CLIPVisionConfig defaults: a config.json may leave out the
# values that equal them (older save_pretrained wrote only the differences).
_DEFAULT_PROJECTION_DIM = 512
_DEFAULT_VISION = {"hidden_size": 768, "patch_size": 32, "image_size": 224}
# Texts or images per forward pass and per progress step; texts are sorted by length first
# so a batch pads to similar lengths. 32 as for sentence-transformers (bench on the 2-core
# machine); not yet measured with real CLIP weights.
_BATCH_SIZE = 32


@dataclass(frozen=True)
class _LoadedModel:
    """The CLIP model with the tokenizer and image processor saved beside it."""

    model: Any
    tokenizer: Any
    processor: Any
    max_text_tokens: int


class ClipEmbedder(DirectoryModel):
    """Embeds texts and images into one space with a local Hugging Face CLIP model.

    The directory holds what ``CLIPModel.save_pretrained`` and the tokenizer's and image
    processor's ``save_pretrained`` write, which is also how released CLIP weights such
    as openai/clip-vit-base-patch32 are shipped: ``config.json``, the weights
    (``model.safetensors``), tokenizer files and ``preprocessor_config.json``. The model
    loads on first use, in eval mode on the CPU, never from a hub (HF_HUB_OFFLINE is
    set). Vectors are L2-normalized, so cosine and inner product rank alike.

    Attributes:
        name: The registry name, e.g. ``"clip:ViT-B-32:/models/clip"``.
        path: The model directory.
        model: A readable model name: the ``model`` argument, else the directory.
        architecture: The open_clip name of the vision tower (``"ViT-B-32"``), or None
            when its width is not one open_clip names.
        dimension: ``projection_dim``, the width of the shared space.
    """

    modalities = frozenset({"text", "image"})
    normalized = True

    def __init__(
        self,
        name: str,
        *,
        path: Path,
        architecture: str | None = None,
        model: str | None = None,
    ) -> None:
        """Read the model's config (the weights load on first use).

        Args:
            name: The registry name.
            path: A Hugging Face CLIP model directory.
            architecture: An open_clip architecture name the model must have, e.g.
                ``"ViT-L-14"``; None checks nothing.
            model: The model name to record in collections; defaults to ``str(path)``.

        Raises:
            EmbedderError: ``path`` is not a CLIP model directory, or its architecture is
                not ``architecture`` (or ``architecture`` is not a name that can be
                checked).
        """
        config = _read_config(path)
        self.name = name
        self.path = path
        self.model = model or str(path)
        self.architecture = clip_architecture_name(config)
        self.dimension = int(config.get("projection_dim", _DEFAULT_PROJECTION_DIM))
        self.metric: Metric = "cosine"
        if architecture is not None:
            _check_architecture(architecture, self.architecture, config, path)
        self._loaded: _LoadedModel | None = None
        self._lock = threading.Lock()

    def embed_texts(
        self,
        texts: Sequence[str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> FloatMatrix:
        """Embed texts with the text tower into float32 (n, dimension) unit vectors.

        Texts longer than the model's context (77 tokens for released CLIP models) are
        cut to it, as CLIP was trained. One text runs on one torch thread (see
        :func:`~latentdb.embed._common.torch_threads`).

        Args:
            texts: The texts, in order.
            progress: Called with the number of texts embedded so far, after each batch.

        Returns:
            float32 (len(texts), dimension), row i for texts[i], each of norm 1.

        Raises:
            EmbedderError: ``texts`` is a single string, or holds something that is not a
                string; or the model cannot be loaded.
        """
        if isinstance(texts, str):
            raise EmbedderError("texts must be a sequence of strings; got a single str")
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise EmbedderError(
                    f"text at position {position} is {type(text).__name__}, not str"
                )
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        loaded = self._load()
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch_threads(len(texts)):
            for start in range(0, len(order), _BATCH_SIZE):
                batch = order[start : start + _BATCH_SIZE]
                tokens = loaded.tokenizer(
                    [texts[i] for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=loaded.max_text_tokens,
                    return_tensors="pt",
                )
                with torch.inference_mode():
                    features = loaded.model.get_text_features(
                        input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
                    ).pooler_output
                out[batch] = _unit_rows(features.to(torch.float32).numpy())
                if progress is not None:
                    progress(start + len(batch))
        return out

    def embed_images(
        self,
        images: Sequence[ImageInput],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> FloatMatrix:
        """Embed images with the vision tower into float32 (n, dimension) unit vectors.

        Every image is decoded and prepared (converted to RGB, transparency laid on
        white, resized and cropped as the model's image processor says) before the first
        one is embedded, so a bad image fails the call before any work is spent. The
        prepared inputs (0.6 MB each at 224 px) are held for the whole call: embed very
        large sets in chunks. One image runs on one torch thread (see
        :func:`~latentdb.embed._common.torch_threads`).

        Args:
            images: File paths (``str`` or ``os.PathLike``), encoded image bytes (PNG,
                JPEG, anything Pillow reads) or ``PIL.Image.Image`` objects, in order.
            progress: Called with the number of images embedded so far, after each batch.

        Returns:
            float32 (len(images), dimension), row i for images[i], each of norm 1.

        Raises:
            EmbedderError: an image is missing, cannot be decoded or has an unsupported
                type (the message names its position), or the model cannot be loaded.
        """
        pil = _pil_image()
        if isinstance(images, str | bytes | bytearray | os.PathLike | pil.Image):
            raise EmbedderError(
                f"images must be a sequence of images; got a single {type(images).__name__} "
                "(wrap it in a list)"
            )
        out = np.empty((len(images), self.dimension), dtype=np.float32)
        if not images:
            return out
        loaded = self._load()
        pixels = [
            _prepare_image(loaded.processor, _decode_image(image, position), position)
            for position, image in enumerate(images)
        ]
        import torch

        with torch_threads(len(pixels)):
            for start in range(0, len(pixels), _BATCH_SIZE):
                batch = torch.from_numpy(np.stack(pixels[start : start + _BATCH_SIZE]))
                with torch.inference_mode():
                    features = loaded.model.get_image_features(pixel_values=batch).pooler_output
                out[start : start + len(batch)] = _unit_rows(features.to(torch.float32).numpy())
                if progress is not None:
                    progress(start + len(batch))
        return out

    def _load(self) -> _LoadedModel:
        with self._lock:
            if self._loaded is None:
                self._loaded = _load_model(self.path, self.dimension)
            return self._loaded


def clip_architecture_name(config: Mapping[str, Any]) -> str | None:
    """The open_clip name of a CLIP model's vision tower, from its Hugging Face config.

    open_clip names a ViT by its width (S 384, M 512, B 768, L 1024, H 1280, g 1408,
    bigG 1664) and patch size, and adds the input size when it is not 224 px:
    ``ViT-B-32``, ``ViT-L-14``, ``ViT-L-14-336``.

    Args:
        config: The parsed ``config.json`` of a ``CLIPModel`` (``vision_config`` is read;
            values it leaves out take transformers' defaults, as loading does).

    Returns:
        The name, or None when the width or a non-square patch or input has no open_clip
        name.
    """
    vision = _vision_config(config)
    size = _SIZE_BY_WIDTH.get(_square(vision["hidden_size"]) or -1)
    patch = _square(vision["patch_size"])
    image_size = _square(vision["image_size"])
    if size is None or patch is None or image_size is None:
        return None
    name = f"ViT-{size}-{patch}"
    return name if image_size == _USUAL_IMAGE_SIZE else f"{name}-{image_size}"


def clip_embedder(name: str) -> ClipEmbedder:
    """The embedder for ``"clip:/path/to/model"`` or ``"clip:ARCH:/path/to/model"``.

    ARCH is an open_clip architecture name (``ViT-B-32``, ``ViT-L-14``, ...) that the
    model must have; it holds no "/", so ``"clip:a:b"`` reads ``a`` as ARCH while
    ``"clip:/models/a:b"`` is the path ``/models/a:b``. ``~`` in the path is expanded.

    Raises:
        EmbedderError: no path, not a CLIP model directory, or the architecture differs.
    """
    prefix, _, rest = name.partition(":")
    if prefix != "clip":
        raise EmbedderError(f"a CLIP embedder name starts with 'clip:'; got {name!r}")
    architecture, separator, location = rest.partition(":")
    if not separator or "/" in architecture or "\\" in architecture:
        architecture, location = "", rest
    if not location:
        raise EmbedderError(
            f"{name!r} names no model directory; expected 'clip:/path/to/model' or "
            "'clip:ARCH:/path/to/model'"
        )
    path = Path(location).expanduser().resolve()
    return ClipEmbedder(name, path=path, architecture=architecture or None)


def _read_config(path: Path) -> dict[str, Any]:
    """The parsed config.json of a CLIP model directory, after checking the files are there."""
    if not path.is_dir():
        raise EmbedderError(f"{path} is not a CLIP model directory (no such directory)")
    try:
        config: Any = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise EmbedderError(f"{path} is not a CLIP model directory (no config.json)") from None
    except (OSError, ValueError) as error:
        raise EmbedderError(f"cannot read {path / 'config.json'}: {error}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(config, dict) or model_type != "clip":
        raise EmbedderError(
            f"{path} is not a CLIP model directory (config.json has model_type "
            f"{model_type!r}, expected 'clip')"
        )
    if not (path / "preprocessor_config.json").is_file():
        raise EmbedderError(
            f"{path} has no preprocessor_config.json: save the CLIP image processor beside "
            "the model (CLIPImageProcessor.save_pretrained)"
        )
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
        raise EmbedderError(
            f"{path} has no tokenizer (tokenizer.json or vocab.json + merges.txt): save the "
            "CLIP tokenizer beside the model (CLIPTokenizer.save_pretrained)"
        )
    return config


def _vision_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The vision tower's settings, with transformers' defaults for what is left out."""
    vision = config.get("vision_config") or {}
    # Configs written before transformers 4.22 may carry "vision_config_dict", which
    # CLIPConfig lets override "vision_config".
    legacy = config.get("vision_config_dict") or {}
    return {**_DEFAULT_VISION, **vision, **legacy}


def _square(value: Any) -> int | None:
    """An int, or the side of a square given as [side, side]; None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list | tuple) and len(value) == 2 and value[0] == value[1]:
        return _square(value[0])
    return None


def _check_architecture(
    wanted: str, actual: str | None, config: Mapping[str, Any], path: Path
) -> None:
    """Refuse a model whose vision tower is not the architecture the name asked for."""
    match = _ARCHITECTURE_PATTERN.fullmatch(wanted)
    if match is None:
        sizes = ", ".join(f"{letter} ({width})" for width, letter in _SIZE_BY_WIDTH.items())
        raise EmbedderError(
            f"cannot check CLIP architecture {wanted!r}: known architectures are "
            f"ViT-<size>-<patch>[-<image size>] with size one of {sizes}, "
            "e.g. ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-H-14"
        )
    size, patch, image_size = match.groups()
    canonical = f"ViT-{_SIZE_ALIASES.get(size, size)}-{int(patch)}"
    if image_size is not None and int(image_size) != _USUAL_IMAGE_SIZE:
        canonical += f"-{int(image_size)}"
    if actual is None:
        vision = _vision_config(config)
        raise EmbedderError(
            f"cannot check CLIP architecture {wanted!r}: the model at {path} has a vision "
            f"tower (hidden size {vision['hidden_size']}, patch {vision['patch_size']}, "
            f"image size {vision['image_size']}) that open_clip has no name for"
        )
    if canonical != actual:
        raise EmbedderError(
            f"the CLIP model at {path} is {actual}, not {wanted}: drop the architecture "
            f"from the name or write 'clip:{actual}:{path}'"
        )


def _load_model(path: Path, dimension: int) -> _LoadedModel:
    """Load model, tokenizer and the PIL image processor from ``path``, offline."""
    with hugging_face_imports("CLIP models run on torch and transformers", "clip"):
        import torch
        from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer
    try:
        model: Any = CLIPModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
        # CLIPImageProcessor is the torchvision-backed class in transformers 5; the Pil
        # one reads the same preprocessor_config.json with PIL and numpy only.
        processor = CLIPImageProcessorPil.from_pretrained(path, local_files_only=True)
    except Exception as error:
        raise EmbedderError(f"cannot load the CLIP model at {path}: {error}") from error
    model.eval()
    if model.config.projection_dim != dimension:
        raise EmbedderError(
            f"the CLIP model at {path} projects to {model.config.projection_dim} dimensions "
            f"but its config.json was read as {dimension}"
        )
    return _LoadedModel(
        model=model,
        tokenizer=tokenizer,
        processor=processor,
        max_text_tokens=int(model.config.text_config.max_position_embeddings),
    )


def _pil_image() -> Any:
    """Pillow's Image module, which decodes images (the clip extra installs it)."""
    try:
        from PIL import Image
    except ImportError:
        raise EmbedderError(
            "embedding images needs Pillow, torch and transformers: pip install 'latentdb[clip]'"
        ) from None
    return Image


def _decode_image(image: object, position: int) -> Image.Image:
    """One input image as a decoded RGB PIL image; EmbedderError naming ``position``."""
    pil = _pil_image()
    source: Image.Image | io.BytesIO | Path
    if isinstance(image, pil.Image):
        source, described = image, "the PIL image"
    elif isinstance(image, bytes | bytearray):
        source, described = io.BytesIO(image), f"{len(image)} bytes"
    elif isinstance(image, str | os.PathLike):
        source = Path(image)
        described = str(source)
        if not source.is_file():
            reason = "is a directory" if source.is_dir() else "does not exist"
            raise EmbedderError(f"image at position {position}: {source} {reason}")
    else:
        raise EmbedderError(
            f"image at position {position} is {type(image).__name__}; expected a file "
            "path, encoded image bytes or a PIL.Image.Image"
        )
    try:
        if isinstance(source, pil.Image):
            return _to_rgb(source)
        with pil.open(source) as opened:
            opened.load()  # decode now: a truncated file fails here, not inside a batch
            return _to_rgb(opened)
    # Pillow's decoders raise many types on bad data (OSError, SyntaxError, struct.error,
    # DecompressionBombError, ...): every one of them means this image cannot be used.
    except Exception as error:
        raise EmbedderError(
            f"image at position {position}: cannot decode {described}: {error}"
        ) from error


def _to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy; transparent pixels are laid on white, as transformers' convert_to_rgb does."""
    pil = _pil_image()
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = pil.new("RGBA", rgba.size, (255, 255, 255, 255))
        composed: Image.Image = pil.alpha_composite(background, rgba).convert("RGB")
        return composed
    return image.convert("RGB")


def _prepare_image(processor: Any, image: Image.Image, position: int) -> npt.NDArray[np.float32]:
    """The model's float32 (3, height, width) input for one RGB image."""
    try:
        pixels = processor(images=[image], return_tensors="np")["pixel_values"][0]
    except Exception as error:
        raise EmbedderError(
            f"image at position {position} ({image.width}x{image.height}) cannot be "
            f"prepared for the model: {error}"
        ) from error
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _unit_rows(vectors: FloatMatrix) -> FloatMatrix:
    """Rows scaled to norm 1 (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: FloatMatrix = vectors / np.maximum(norms, np.finfo(np.float32).tiny)
    return unit.astype(np.float32, copy=False)
