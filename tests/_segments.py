"""Helpers for tests that reach into a collection's index files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import latentdb


def clustered(rows: int, *, dimension: int = 16, seed: int = 0) -> np.ndarray:
    """Unit vectors around 30 centres: a space with neighbourhoods, like embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, dimension))
    points = centres[rng.integers(0, 30, rows)] + 0.3 * rng.standard_normal((rows, dimension))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def index_folder(database: latentdb.Database) -> Path:
    """The index folder of the database's only collection."""
    (folder,) = (database.path / "indexes").iterdir()
    return folder


def segment_folders(database: latentdb.Database) -> list[Path]:
    """The segment folders the manifest of the only collection names."""
    manifest = json.loads((index_folder(database) / "manifest.json").read_text())
    return [index_folder(database) / entry["name"] for entry in manifest["segments"]]
