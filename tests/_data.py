"""Real vectors for tests: the first rows and queries of the shared PyPI MiniLM set."""

from __future__ import annotations

import h5py
import numpy as np

from tests.conftest import SHARED_DATA


def pypi_minilm(rows: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(train[:rows], test[:queries]) as unit float32 rows (the file stores float16)."""
    with h5py.File(SHARED_DATA / "pypi-minilm-100k.hdf5", "r") as file:
        train = file["train"][:rows].astype(np.float32)
        test = file["test"][:queries].astype(np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    return train, test
