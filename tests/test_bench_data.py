"""bench/embed_dataset.py rebuilds benchmark data from committed texts with the default
embedder: the slice's vectors come back, so a bare clone can make its own data set."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from latentdb.embed import MINILM_MODEL, get_embedder
from tests._data import pypi_minilm, pypi_texts

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_the_committed_texts_embed_back_to_the_committed_vectors(tmp_path: Path) -> None:
    out = tmp_path / "pypi.hdf5"
    done = subprocess.run(
        [
            sys.executable,
            "bench/embed_dataset.py",
            "--train",
            "200",
            "--test",
            "20",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "200 train, 20 test" in done.stderr
    train_ref, test_ref = pypi_minilm(200, 20)
    with h5py.File(out, "r") as file:
        train, test = file["train"][:], file["test"][:]
        neighbors, distances = file["neighbors"][:], file["distances"][:]
        attrs = dict(file.attrs)
    assert train.dtype == np.float16 and train.shape == (200, 384) and test.shape == (20, 384)
    # float16 on both sides: about 1e-4 of cosine
    for ours, reference in ((train, train_ref), (test, test_ref)):
        ours32 = ours.astype(np.float32)
        cosine = (ours32 * reference).sum(1) / np.linalg.norm(ours32, axis=1)
        assert cosine.min() > 0.999
    assert attrs["model"] == MINILM_MODEL and attrs["distance"] == "angular"
    assert attrs["fingerprint"] == get_embedder("minilm").fingerprint
    assert neighbors.shape == (20, 100) and neighbors.dtype == np.int32
    assert (np.diff(distances, axis=1) >= 0).all()
    exact = 1 - (test.astype(np.float32) @ train.astype(np.float32).T)
    np.testing.assert_allclose(distances[:, 0], exact.min(axis=1), atol=1e-3)
    with gzip.open(tmp_path / "pypi.texts.jsonl.gz", "rt", encoding="utf-8") as lines:
        written = [json.loads(line) for line in lines]
    assert written == pypi_texts(200) + pypi_texts(20, "test")


def test_bad_input_is_named(tmp_path: Path) -> None:
    texts = tmp_path / "texts.jsonl"
    texts.write_text(json.dumps({"split": "train", "text": "only train"}) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "bench/embed_dataset.py",
            "--texts",
            str(texts),
            "--out",
            str(tmp_path / "x.hdf5"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode != 0 and "needs train and test texts" in done.stderr
    assert not (tmp_path / "x.hdf5").exists()
