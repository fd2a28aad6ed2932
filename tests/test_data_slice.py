"""The committed data slice (tests/data/pypi-minilm-3k/) is whole and agrees with itself:
its texts line up with its vectors, and its neighbours are exact within the slice."""

from __future__ import annotations

import numpy as np
import pytest

from tests._data import (
    SLICE,
    SLICE_QUERIES,
    SLICE_ROWS,
    pypi_minilm,
    pypi_neighbours,
    pypi_texts,
)


def test_slice_is_small_and_stored_as_the_source_stores_it() -> None:
    assert sum(path.stat().st_size for path in SLICE.iterdir()) < 5_000_000
    train = np.load(SLICE / "train.npy")
    test = np.load(SLICE / "test.npy")
    assert (train.dtype, train.shape) == (np.float16, (SLICE_ROWS, 384))
    assert (test.dtype, test.shape) == (np.float16, (SLICE_QUERIES, 384))


def test_rows_are_unit_float32() -> None:
    train, test = pypi_minilm(SLICE_ROWS, SLICE_QUERIES)
    assert train.dtype == test.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(train, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(test, axis=1), 1.0, atol=1e-5)


def test_texts_follow_the_vectors_in_order() -> None:
    train = pypi_texts(SLICE_ROWS)
    test = pypi_texts(SLICE_QUERIES, split="test")
    assert [record["id"] for record in train] == list(range(SLICE_ROWS))
    assert [record["id"] for record in test] == list(range(SLICE_QUERIES))
    assert all(record["text"] and record["name"] for record in train + test)


def test_neighbours_are_exact_within_the_slice() -> None:
    train, test = pypi_minilm(SLICE_ROWS, SLICE_QUERIES)
    ids, distances = pypi_neighbours()
    assert ids.shape == distances.shape == (SLICE_QUERIES, 100)
    assert ids.min() >= 0 and ids.max() < SLICE_ROWS
    scores = test @ train.T
    np.testing.assert_allclose(distances, 1.0 - np.take_along_axis(scores, ids, axis=1), atol=1e-5)
    # Nothing outside the listed 100 is nearer than the 100th (ties allowed).
    assert np.all(np.sort(scores, axis=1)[:, -100:][:, 0] <= 1.0 - distances[:, -1] + 1e-6)
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_asking_for_more_than_the_slice_names_the_script() -> None:
    with pytest.raises(ValueError, match="make_test_slice"):
        pypi_minilm(SLICE_ROWS + 1, 1)
