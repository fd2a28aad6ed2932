"""The CLIP embedder, on a tiny random-weight CLIP saved the way released weights ship."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from latentdb import Database, EmbedderError, InvalidArgumentError
from latentdb.embed import Embedder, clip_architecture_name, get_embedder

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

slow = pytest.mark.slow

# What clip_architecture_name makes of the tiny model below: vision width 384 is open_clip's
# S, patch 8, and a 32 px input is not the usual 224.
TINY_ARCHITECTURE = "ViT-S-8-32"
TINY_DIMENSION = 32


def byte_level_vocabulary() -> dict[str, int]:
    """A minimal CLIP BPE vocabulary: the 256 byte symbols, their word-final forms, specials.

    The byte-to-symbol table is GPT-2's (and CLIP's) bytes_to_unicode: printable bytes
    stand for themselves, the others map to code points from 256 upwards.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    symbols = [chr(b) for b in printable]
    symbols += [chr(256 + n) for n in range(256 - len(printable))]
    tokens = [*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def save_tiny_clip(directory: Path) -> None:
    """Save a seeded random CLIP (text width 64, vision width 384) with its tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    directory.mkdir(parents=True)
    vocabulary = byte_level_vocabulary()
    (directory / "vocab.json").write_text(json.dumps(vocabulary))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(directory, local_files_only=True)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocabulary),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 32,
            "bos_token_id": vocabulary["<|startoftext|>"],
            "eos_token_id": vocabulary["<|endoftext|>"],
            "pad_token_id": vocabulary["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 384,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=TINY_DIMENSION,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(directory)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("clip") / "tiny-clip"
    save_tiny_clip(directory)
    return directory


@pytest.fixture(scope="module")
def clip(clip_dir: Path) -> Embedder:
    return get_embedder(f"clip:{clip_dir}")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise(seed: int, size: tuple[int, int] = (40, 40)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Red, blue, two noise images and a non-square one (resized and cropped)."""
    return [
        Image.new("RGB", (40, 40), (255, 0, 0)),
        Image.new("RGB", (40, 40), (0, 0, 255)),
        noise(1),
        noise(2),
        noise(3, size=(60, 40)),
    ]


def assert_unit_rows(vectors: npt.NDArray[Any], rows: int) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (rows, TINY_DIMENSION)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@slow
def test_texts_and_images_land_in_one_space_of_unit_vectors(
    clip: Embedder, images: list[Image.Image]
) -> None:
    assert isinstance(clip, Embedder)
    assert clip.modalities == frozenset({"text", "image"})
    assert (clip.dimension, clip.metric, clip.normalized) == (TINY_DIMENSION, "cosine", True)
    assert clip.architecture == TINY_ARCHITECTURE  # type: ignore[attr-defined]
    texts = clip.embed_texts(["a red square", "blue", "noise, lots of it"])
    pictures = clip.embed_images(images)
    assert_unit_rows(texts, 3)
    assert_unit_rows(pictures, len(images))
    cosines = texts @ pictures.T  # one space: every text/image pair has a cosine
    assert cosines.shape == (3, len(images))
    assert np.all(np.abs(cosines) <= 1.0 + 1e-6)


@slow
def test_vectors_are_deterministic_and_batch_independent(
    clip: Embedder, images: list[Image.Image]
) -> None:
    texts = ["short", "a somewhat longer text that pads the others", "mid length"]
    np.testing.assert_array_equal(clip.embed_texts(texts), clip.embed_texts(texts))
    alone = clip.embed_texts(["short"])
    np.testing.assert_allclose(alone[0], clip.embed_texts(texts)[0], atol=1e-5)
    np.testing.assert_array_equal(clip.embed_images(images), clip.embed_images(images))
    np.testing.assert_allclose(
        clip.embed_images(images[2:3])[0], clip.embed_images(images)[2], atol=1e-5
    )


@slow
def test_different_inputs_give_different_vectors(clip: Embedder, images: list[Image.Image]) -> None:
    pictures = clip.embed_images(images)
    cosines = pictures @ pictures.T
    off_diagonal = cosines[~np.eye(len(images), dtype=bool)]
    assert off_diagonal.max() < 0.9999
    texts = clip.embed_texts(["cat", "dog", "stock market"])
    assert (texts @ texts.T)[~np.eye(3, dtype=bool)].max() < 0.9999


@slow
def test_paths_bytes_and_pil_images_give_the_same_vector(
    clip: Embedder, images: list[Image.Image], tmp_path: Path
) -> None:
    image = images[2]
    path = tmp_path / "noise.png"
    image.save(path)
    opaque = image.convert("RGBA")  # full alpha: laid on white it is the same picture
    vectors = clip.embed_images([str(path), path, path.read_bytes(), image, opaque])
    for row in vectors[1:]:
        np.testing.assert_allclose(row, vectors[0], atol=1e-6)


@slow
def test_transparency_is_laid_on_white_and_grey_becomes_rgb(clip: Embedder) -> None:
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    white = Image.new("RGB", (40, 40), (255, 255, 255))
    grey = Image.new("L", (40, 40), 128)
    grey_rgb = Image.new("RGB", (40, 40), (128, 128, 128))
    vectors = clip.embed_images([clear, white, grey, grey_rgb])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    np.testing.assert_allclose(vectors[2], vectors[3], atol=1e-6)


@slow
@pytest.mark.parametrize(
    ("bad", "position", "reason"),
    [
        ("missing", 1, "does not exist"),
        ("garbage", 2, "cannot decode 17 bytes"),
        ("truncated", 0, "cannot decode"),
        ("number", 1, "is int; expected a file path, encoded image bytes"),
        ("directory", 2, "is a directory"),
    ],
)
def test_bad_images_are_refused_by_position_before_any_embedding(
    clip: Embedder,
    images: list[Image.Image],
    tmp_path: Path,
    bad: str,
    position: int,
    reason: str,
) -> None:
    whole = png_bytes(images[3])
    values: dict[str, object] = {
        "missing": tmp_path / "nowhere.png",
        "garbage": b"this is not a png",
        "truncated": whole[: len(whole) // 2],
        "number": 7,
        "directory": tmp_path,
    }
    batch: list[Any] = [images[0], png_bytes(images[1]), images[2]]
    batch[position] = values[bad]
    done: list[int] = []
    with pytest.raises(EmbedderError, match=f"position {position}.*{reason}"):
        clip.embed_images(batch, progress=done.append)
    assert done == []


@slow
def test_a_single_image_or_text_must_come_in_a_list(clip: Embedder, tmp_path: Path) -> None:
    # A str is itself a Sequence[str]: the type checker lets it through, the embedder must not.
    with pytest.raises(EmbedderError, match="single str"):
        clip.embed_images(str(tmp_path / "a.png"))
    with pytest.raises(EmbedderError, match="single str"):
        clip.embed_texts("hello")
    with pytest.raises(EmbedderError, match="position 1 is bytes"):
        clip.embed_texts(["fine", b"bytes"])  # type: ignore[list-item]


@slow
def test_long_texts_are_cut_to_the_context(clip: Embedder) -> None:
    # The tiny model's context is 32 tokens; each "a " is one token.
    long_cat, long_dog = "a " * 100 + "cat", "a " * 100 + "dog"
    vectors = clip.embed_texts([long_cat, long_dog, "a cat"])
    assert_unit_rows(vectors, 3)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)  # the ends were cut
    assert vectors[0] @ vectors[2] < 0.9999


@slow
def test_progress_counts_batches_and_ends_at_the_total(
    clip: Embedder, images: list[Image.Image]
) -> None:
    done: list[int] = []
    clip.embed_texts([f"text number {i}" for i in range(70)], progress=done.append)
    assert done == [32, 64, 70]
    done.clear()
    clip.embed_images(images, progress=done.append)
    assert done == [len(images)]
    done.clear()
    assert clip.embed_images([], progress=done.append).shape == (0, TINY_DIMENSION)
    assert clip.embed_texts([], progress=done.append).shape == (0, TINY_DIMENSION)
    assert done == []


@slow
def test_fingerprint_is_stable_and_follows_the_weights(
    clip: Embedder, clip_dir: Path, images: list[Image.Image], tmp_path: Path
) -> None:
    import torch
    from transformers import CLIPModel

    first = clip.fingerprint
    assert first.startswith("sha256:") and len(first) == 7 + 64
    # A second name for the same directory is a second instance that hashes the files again.
    again = get_embedder(f"clip:{TINY_ARCHITECTURE}:{clip_dir}")
    assert again is not clip and again.fingerprint == first

    copy = tmp_path / "copy"
    shutil.copytree(clip_dir, copy)
    assert get_embedder(f"clip:{copy}").fingerprint == first  # location does not count
    perturbed_dir = tmp_path / "perturbed"
    shutil.copytree(clip_dir, perturbed_dir)
    model = CLIPModel.from_pretrained(perturbed_dir, local_files_only=True)
    with torch.no_grad():
        model.visual_projection.weight.add_(0.05)
    model.save_pretrained(perturbed_dir)
    perturbed = get_embedder(f"clip:{perturbed_dir}")
    assert perturbed.fingerprint != first
    assert not np.allclose(perturbed.embed_images(images[:1]), clip.embed_images(images[:1]))


@slow
def test_matching_architecture_loads_and_another_is_refused(clip_dir: Path) -> None:
    named = get_embedder(f"clip:{TINY_ARCHITECTURE}:{clip_dir}")
    assert named.dimension == TINY_DIMENSION
    with pytest.raises(EmbedderError, match=f"is {TINY_ARCHITECTURE}, not ViT-B-32"):
        get_embedder(f"clip:ViT-B-32:{clip_dir}")
    with pytest.raises(EmbedderError, match=r"cannot check CLIP architecture 'ViT-Q-14'.*bigG"):
        get_embedder(f"clip:ViT-Q-14:{clip_dir}")
    with pytest.raises(EmbedderError, match="cannot check CLIP architecture 'RN50'"):
        get_embedder(f"clip:RN50:{clip_dir}")


@slow
def test_collection_holds_images_and_answers_text_and_image_queries(
    db: Database, clip_dir: Path, clip: Embedder, images: list[Image.Image], tmp_path: Path
) -> None:
    collection = db.create_collection("pictures", embedder=f"clip:{clip_dir}")
    assert collection.space.dimension == TINY_DIMENSION
    assert collection.space.fingerprint == clip.fingerprint
    ids = [f"image-{i}" for i in range(len(images))]
    done: list[int] = []
    captions = [f"picture number {i}" for i in range(len(images))]
    collection.add(ids, images=images, documents=captions, progress=done.append)
    assert done[-1] == len(images)
    stored = collection.get(ids[:2], include=["vectors", "documents"])
    assert stored.documents == captions[:2]  # captions stored, the images embedded
    np.testing.assert_allclose(np.stack(stored.vectors), clip.embed_images(images[:2]), atol=1e-6)
    collection.add(["caption"], documents=["a red square"])  # text in the same space
    path = tmp_path / "query.png"
    images[3].save(path)
    for query in (images[3], path, png_bytes(images[3])):
        result = collection.query(images=[query], k=1)
        assert result.ids == [["image-3"]] and result.distances is not None
        assert result.distances[0, 0] < 1e-5
    by_text = collection.query(texts=["a red square"], k=len(images) + 1)
    assert by_text.ids[0][0] == "caption" and len(by_text.ids[0]) == len(images) + 1
    collection.upsert(["image-0"], images=[images[-1]])  # now the same picture as the last
    twins = collection.query(images=[images[-1]], k=2)
    assert set(twins.ids[0]) == {"image-0", ids[-1]}
    assert twins.distances is not None and twins.distances.max() < 1e-5
    with pytest.raises(InvalidArgumentError, match="2 images for 1 ids"):
        collection.add(["x"], images=images[:2])
    with pytest.raises(InvalidArgumentError, match="not both"):
        collection.add(["x"], images=images[:1], vectors=np.ones(TINY_DIMENSION))
    with pytest.raises(InvalidArgumentError, match="exactly one of"):
        collection.query(images=images[:1], texts=["a"])
    with pytest.raises(EmbedderError, match="position 0"):
        collection.add(["x"], images=[b"not an image"])
    assert collection.count() == len(images) + 1  # the refused writes changed nothing


def test_collections_of_text_models_refuse_images(
    db: Database, images: list[Image.Image], hashing_embedder: Any
) -> None:
    vectors_only = db.create_collection("v", dimension=4, embedder=None, model=MODEL)
    with pytest.raises(EmbedderError, match="no embedder"):
        vectors_only.query(images=images[:1])
    text = db.create_collection("t", embedder="test-hashing")
    with pytest.raises(EmbedderError, match="embeds text only, not images"):
        text.add(["a"], images=images[:1])
    assert text.count() == 0


@pytest.mark.parametrize(
    ("config", "name"),
    [
        ({}, "ViT-B-32"),  # transformers' defaults: what openai/clip-vit-base-patch32 is
        ({"vision_config": {"hidden_size": 768, "patch_size": 16}}, "ViT-B-16"),
        ({"vision_config": {"hidden_size": 1024, "patch_size": 14}}, "ViT-L-14"),
        (
            {"vision_config": {"hidden_size": 1024, "patch_size": 14, "image_size": 336}},
            "ViT-L-14-336",
        ),
        ({"vision_config": {"hidden_size": 1280, "patch_size": 14}}, "ViT-H-14"),
        ({"vision_config": {"hidden_size": 1664, "patch_size": 14}}, "ViT-bigG-14"),
        ({"vision_config": {"hidden_size": 768, "patch_size": [16, 16]}}, "ViT-B-16"),
        (
            {
                "vision_config": {"hidden_size": 768, "patch_size": 32},
                "vision_config_dict": {"patch_size": 16},  # pre-4.22 key, which wins
            },
            "ViT-B-16",
        ),
        ({"vision_config": {"hidden_size": 64, "patch_size": 8}}, None),
        ({"vision_config": {"hidden_size": 768, "patch_size": [16, 8]}}, None),
    ],
)
def test_architecture_names_follow_open_clip(config: dict[str, Any], name: str | None) -> None:
    assert clip_architecture_name(config) == name


def write_config_only_clip(directory: Path, vision: dict[str, Any]) -> Path:
    """The files the constructor checks, without weights (nothing is loaded)."""
    directory.mkdir(parents=True)
    config = {"model_type": "clip", "projection_dim": 16, "vision_config": vision}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "preprocessor_config.json").write_text("{}")
    (directory / "tokenizer.json").write_text("{}")
    return directory


def test_a_vision_tower_open_clip_does_not_name_cannot_be_checked(tmp_path: Path) -> None:
    directory = write_config_only_clip(tmp_path / "odd", {"hidden_size": 64, "patch_size": 8})
    embedder = get_embedder(f"clip:{directory}")
    assert (embedder.dimension, embedder.architecture) == (16, None)  # type: ignore[attr-defined]
    with pytest.raises(EmbedderError, match=r"hidden size 64, patch 8.*no name for"):
        get_embedder(f"clip:ViT-B-32:{directory}")


def test_a_path_may_hold_a_colon(tmp_path: Path) -> None:
    directory = write_config_only_clip(tmp_path / "a:b", {"patch_size": 16})
    assert get_embedder(f"clip:{directory}").path == directory  # type: ignore[attr-defined]
    named = get_embedder(f"clip:ViT-B-16:{directory}")
    assert named.path == directory  # type: ignore[attr-defined]


def test_directories_that_are_not_clip_models_are_refused(tmp_path: Path) -> None:
    with pytest.raises(
        EmbedderError, match=re.escape(f"{tmp_path} is not a CLIP model directory (no config.json)")
    ):
        get_embedder(f"clip:{tmp_path}")
    with pytest.raises(EmbedderError, match=r"not a CLIP model directory \(no such directory\)"):
        get_embedder(f"clip:{tmp_path / 'nowhere'}")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(EmbedderError, match=r"model_type 'bert', expected 'clip'"):
        get_embedder(f"clip:{bert}")
    no_processor = tmp_path / "no-processor"
    no_processor.mkdir()
    (no_processor / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(EmbedderError, match=r"no preprocessor_config\.json"):
        get_embedder(f"clip:{no_processor}")
    with pytest.raises(EmbedderError, match="names no model directory"):
        get_embedder("clip:")


def test_a_text_only_embedder_refuses_images() -> None:
    minilm = get_embedder("minilm")
    with pytest.raises(EmbedderError, match="embeds text only"):
        minilm.embed_images([Image.new("RGB", (8, 8))])
