"""all-MiniLM-L6-v2 on ONNX Runtime: the same latent space as sentence-transformers, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentdb import Database, EmbedderError
from latentdb.embed import MINILM_MODEL, OnnxBertEmbedder, get_embedder, minilm_directory
from latentdb.embed._onnx import available_threads
from tests._data import pypi_texts

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _awkward_texts() -> list[str]:
    """Texts that exercise the tokenizer's edges: empty, padded with spaces, accents,
    CJK, emoji, and one far past the 256-token cut."""
    return [
        "",
        "   leading and trailing spaces   ",
        "Crème brûlée für Ärzte: naïve façade",
        "机器学习 and 東京 in one line",
        "emoji 🚀🔥 and symbols ≤ ≥ ∑",
        "UPPER case Should Match lower CASE",
        " ".join(f"token{i} is part of a very long package description" for i in range(120)),
    ]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [record["text"] for record in pypi_texts(300)] + _awkward_texts()


def test_the_same_space_as_sentence_transformers(texts: list[str]) -> None:
    """The ONNX graph and sentence-transformers' encode agree to cosine >= 0.99999 on
    real texts and on the tokenizer's edge cases (truncation included)."""
    from sentence_transformers import SentenceTransformer

    onnx = get_embedder("minilm")
    assert isinstance(onnx, OnnxBertEmbedder)
    reference = SentenceTransformer(str(minilm_directory()), device="cpu").encode(
        texts, convert_to_numpy=True, show_progress_bar=False
    )
    ours = onnx.embed_texts(texts)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    cosine = (ours * reference).sum(1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.99999, texts[int(cosine.argmin())]
    assert np.abs(np.linalg.norm(ours, axis=1) - 1).max() < 1e-5


def test_one_fingerprint_for_both_runtimes() -> None:
    onnx = get_embedder("minilm")
    torch_path = get_embedder(f"sentence-transformers:{minilm_directory()}")
    local_onnx = get_embedder(f"onnx:{minilm_directory()}")
    assert onnx.fingerprint == torch_path.fingerprint == local_onnx.fingerprint
    assert onnx.model == MINILM_MODEL and local_onnx.model == str(minilm_directory())


def test_a_collection_built_with_torch_takes_onnx_vectors_and_back(db: Database) -> None:
    """Vectors of either runtime enter and query a collection of the other."""
    texts = [record["text"] for record in pypi_texts(50)]
    st = get_embedder(f"sentence-transformers:{minilm_directory()}")
    onnx = get_embedder("minilm")
    built = db.create_collection("torch-built", embedder=None, dimension=384, model=MINILM_MODEL)
    built.add([str(i) for i in range(50)], vectors=st.embed_texts(texts), model=MINILM_MODEL)
    hits = built.query(vectors=onnx.embed_texts(texts[:10]), k=1, model=MINILM_MODEL)
    assert [row[0] for row in hits.ids] == [str(i) for i in range(10)]
    assert hits.distances is not None and float(hits.distances.max()) < 1e-5

    default = db.create_collection("onnx-built")  # the default embedder: ONNX Runtime
    default.add([str(i) for i in range(50)], documents=texts)
    hits = default.query(vectors=st.embed_texts(texts[10:20]), k=1, model=MINILM_MODEL)
    assert [row[0] for row in hits.ids] == [str(i) for i in range(10, 20)]


def test_batches_keep_input_order(texts: list[str]) -> None:
    """Texts are sorted by token count and batched: each row still belongs to its text."""
    embedder = get_embedder("minilm")
    shuffled = list(reversed(texts))
    together = embedder.embed_texts(shuffled)
    for i in (0, 3, len(shuffled) // 2, len(shuffled) - 1):
        alone = embedder.embed_texts([shuffled[i]])
        np.testing.assert_allclose(together[i], alone[0], atol=2e-6)


def test_progress_counts_up_to_the_number_of_texts(texts: list[str]) -> None:
    seen: list[int] = []
    get_embedder("minilm").embed_texts(texts * 2, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == len(texts) * 2 and len(seen) >= 2
    assert get_embedder("minilm").embed_texts([]).shape == (0, 384)


def test_one_text_runs_on_one_thread_and_batches_on_every_core() -> None:
    """The session runs a batch on the caller's thread alone (no intra-op pool, nothing
    spins); a call of several batches runs as many at once as the process has cores."""
    embedder = get_embedder("minilm")
    assert isinstance(embedder, OnnxBertEmbedder)
    embedder.embed_texts(["load"])
    assert embedder.threads == available_threads() == len(os.sched_getaffinity(0))
    options = embedder._session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def _model_copy(tmp_path: Path, **config_changes: object) -> Path:
    """A copy of the MiniLM directory (the weights linked) with config.json changed."""
    source = minilm_directory()
    target = tmp_path / "model"
    for file in source.rglob("*"):
        if file.is_file():
            (target / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (target / file.relative_to(source)).symlink_to(file)
    _rewrite(target / "config.json", **config_changes)
    return target


def _rewrite(path: Path, **changes: object) -> None:
    """Replace a (linked) JSON file by a copy with ``changes`` applied."""
    data = json.loads(path.read_text())
    data.update(changes)
    path.unlink()
    path.write_text(json.dumps(data))


def test_cls_pooling_without_normalize_matches_sentence_transformers(
    tmp_path: Path, texts: list[str]
) -> None:
    """Another model layout: [CLS] pooling and no Normalize module, as sentence-transformers
    reads the same directory (raw vectors, not unit length)."""
    from sentence_transformers import SentenceTransformer

    model = _model_copy(tmp_path)
    _rewrite(
        model / "1_Pooling" / "config.json",
        pooling_mode_mean_tokens=False,
        pooling_mode_cls_token=True,
    )
    modules = json.loads((model / "modules.json").read_text())
    (model / "modules.json").unlink()
    (model / "modules.json").write_text(json.dumps(modules[:2]))  # no Normalize
    ours = get_embedder(f"onnx:{model}")
    assert not ours.normalized
    vectors = ours.embed_texts(texts)
    reference = SentenceTransformer(str(model), device="cpu").encode(
        texts, convert_to_numpy=True, show_progress_bar=False
    )
    assert np.abs(np.linalg.norm(reference, axis=1) - 1).min() > 0.1  # really not unit
    np.testing.assert_allclose(vectors, reference, rtol=0, atol=2e-5 * np.abs(reference).max())
    _rewrite(
        model / "1_Pooling" / "config.json",
        pooling_mode_cls_token=False,
        pooling_mode_max_tokens=True,
    )
    with pytest.raises(EmbedderError, match=r"mean or CLS pooling.*max_tokens"):
        get_embedder(f"onnx:{model}/")


def test_a_model_it_cannot_run_is_refused_with_the_way_out(tmp_path: Path) -> None:
    roberta = _model_copy(tmp_path, model_type="roberta")
    with pytest.raises(EmbedderError, match=r"roberta.*sentence-transformers:"):
        get_embedder(f"onnx:{roberta}")
    with pytest.raises(EmbedderError, match="not a sentence-transformers model directory"):
        get_embedder(f"onnx:{tmp_path / 'model' / '1_Pooling'}")
    with pytest.raises(EmbedderError, match="is not a directory"):
        get_embedder(f"onnx:{tmp_path / 'missing'}")


def test_damaged_weights_fail_with_a_named_error(tmp_path: Path) -> None:
    model = _model_copy(tmp_path)
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(EmbedderError, match=r"model\.safetensors has no tensor"):
        get_embedder(f"onnx:{model}").embed_texts(["anything"])
    (model / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(EmbedderError, match=r"cannot read the weights of .*invalid header"):
        get_embedder(f"onnx:{model}/").embed_texts(["anything"])


_BLOCK_HEAVY = """
import importlib.abc, sys
BLOCKED = {"torch", "transformers", "sentence_transformers", "PIL", "fastapi", "uvicorn",
           "httpx", "ray", "pandas", "pyarrow", "sklearn", "umap", "matplotlib", "h5py",
           "langchain_core", "llama_index", "scipy"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not in the base install")
        return None
sys.meta_path.insert(0, Block())
"""


def test_the_base_install_needs_no_torch(tmp_path: Path) -> None:
    """With torch, transformers, Pillow and every extra made unimportable, the default
    embedder, the engine and the CLI still work end to end."""
    script = (
        _BLOCK_HEAVY
        + f"""
import latentdb, numpy as np
from latentdb.cli import main
db = latentdb.connect({str(tmp_path / "db")!r})
docs = db.create_collection("docs", index="hnsw")
texts = ["A cat is sleeping on the sofa.", "Stock markets fell sharply.",
         "How to read a JSON file in Python."] * 100
docs.add([str(i) for i in range(300)], documents=texts,
         metadatas=[{{"n": i}} for i in range(300)])
docs.optimize()
hits = docs.query(texts="a kitten napping", k=3, where={{"n": {{"$lt": 30}}}})
assert texts[int(hits.ids[0][0])].startswith("A cat"), hits.ids
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok []"
    cli = subprocess.run(
        [
            sys.executable,
            "-c",
            _BLOCK_HEAVY + "from latentdb.cli import main\nmain()",
            "collections",
            str(tmp_path / "db"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert cli.returncode == 0, cli.stderr
    assert "docs" in cli.stdout


def test_a_missing_extra_names_the_install(tmp_path: Path) -> None:
    """Without torch, a sentence-transformers embedder says which extra to install."""
    script = (
        _BLOCK_HEAVY
        + f"""
from latentdb import EmbedderError
from latentdb.embed import get_embedder
try:
    get_embedder("sentence-transformers:{minilm_directory()}").embed_texts(["x"])
except EmbedderError as error:
    print(error)
"""
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'latentdb[torch]'" in done.stdout
