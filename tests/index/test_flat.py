"""FlatIndex: exact top-k on both scan paths, with masks, compaction and subsets."""

from __future__ import annotations

import numpy as np
import pytest

from latentdb.index import FlatIndex, _flat
from latentdb.index._flat import exact_search, scores_of_rows


def brute_force(metric: str, data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    if metric == "l2":
        return ((queries[:, None] - data[None]) ** 2).sum(-1)
    if metric == "cosine":
        return 1 - queries @ data.T
    return -(queries @ data.T)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("queries_count", [1, 7])  # the numpy path and the faiss path
def test_search_is_exact(metric: str, queries_count: int) -> None:
    rng = np.random.default_rng(0)
    data = unit(rng.normal(size=(500, 16)))
    queries = unit(rng.normal(size=(queries_count, 16)))
    index = FlatIndex(16, metric)  # type: ignore[arg-type]
    keys = np.arange(10, 510, dtype=np.int64)
    index.upsert(keys, data)
    distances, found = index.search(queries, 10)
    expected = brute_force(metric, data, queries)
    order = np.argsort(expected, axis=1)[:, :10]
    np.testing.assert_array_equal(found, keys[order])
    np.testing.assert_allclose(distances, np.take_along_axis(expected, order, 1), atol=1e-4)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("kernel", ["numpy", "faiss"])
def test_both_batch_kernels_find_the_exact_neighbours(
    monkeypatch: pytest.MonkeyPatch, metric: str, kernel: str
) -> None:
    """Large batches take numpy's or faiss's scan, whichever this machine runs faster
    (numpy_batches_faster): both give the exact top-k, masked rows left out, in
    blocks of queries when the scores would not fit at once."""
    monkeypatch.setattr(_flat, "numpy_batches_faster", lambda: kernel == "numpy")
    monkeypatch.setattr(_flat, "_BATCH_SCORES", 300 * 37)  # blocks of 37 queries
    rng = np.random.default_rng(3)
    data = unit(rng.normal(size=(300, 16)))
    queries = unit(rng.normal(size=(100, 16)))
    alive = rng.random(300) > 0.2
    norms = (data**2).sum(1) if metric == "l2" else None
    distances, found = exact_search(queries, data, 10, metric, alive=alive, norms=norms)  # type: ignore[arg-type]
    expected = brute_force(metric, data, queries)
    expected[:, ~alive] = np.inf
    order = np.argsort(expected, axis=1)[:, :10]
    np.testing.assert_array_equal(found, order)
    np.testing.assert_allclose(distances, np.take_along_axis(expected, order, 1), atol=1e-4)


@pytest.mark.parametrize("queries_count", [1, 5])
@pytest.mark.parametrize("deleted", [3, 400])  # masked rows, and enough to compact
def test_removed_rows_never_come_back(queries_count: int, deleted: int) -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(1000, 8)).astype(np.float32)
    index = FlatIndex(8, "l2")
    index.upsert(np.arange(1000, dtype=np.int64), data)
    gone = rng.choice(1000, size=deleted, replace=False)
    index.remove(gone)
    index.remove(gone[:2])  # removing twice changes nothing
    assert len(index) == 1000 - deleted
    alive = np.setdiff1d(np.arange(1000), gone)
    queries = data[gone[:queries_count]]  # each query sits exactly on a removed row
    _, found = index.search(queries, 20)
    assert not np.isin(found, gone).any()
    expected = brute_force("l2", data[alive], queries)
    np.testing.assert_array_equal(found, alive[np.argsort(expected, axis=1)[:, :20]])


def test_upsert_overwrites_and_out_of_order_keys_are_sorted() -> None:
    index = FlatIndex(2, "l2")
    index.upsert(np.array([5, 9], dtype=np.int64), np.array([[0, 0], [10, 10]], np.float32))
    index.upsert(np.array([2, 9], dtype=np.int64), np.array([[1, 1], [0, 0.1]], np.float32))
    assert len(index) == 3
    _, found = index.search(np.array([[0, 0.2]], np.float32), 3)
    assert found.tolist() == [[9, 5, 2]]
    np.testing.assert_array_equal(
        index.vectors_of(np.array([2, 9])), np.float32([[1, 1], [0, 0.1]])
    )


def test_subset_search_only_returns_allowed_keys() -> None:
    rng = np.random.default_rng(2)
    data = rng.normal(size=(300, 4)).astype(np.float32)
    index = FlatIndex(4, "ip")
    index.upsert(np.arange(300, dtype=np.int64), data)
    index.remove(np.array([4, 8]))
    allowed = np.array([4, 8, 12, 16, 20, 999], dtype=np.int64)  # 4, 8 removed; 999 unknown
    distances, found = index.search(data[:2], 10, keys=allowed)
    assert found.shape == (2, 3)
    assert set(found.ravel().tolist()) <= {12, 16, 20}
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_empty_and_growth() -> None:
    index = FlatIndex(3, "cosine")
    distances, found = index.search(unit(np.ones((2, 3))), 4)
    assert distances.shape == (2, 0) and found.shape == (2, 0)
    for start in range(0, 5000, 1000):  # several doublings of the buffer
        keys = np.arange(start, start + 1000, dtype=np.int64)
        index.upsert(keys, unit(np.random.default_rng(start).normal(size=(1000, 3))))
    assert len(index) == 5000


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_a_distance_is_the_same_bits_whatever_the_matrix_and_batch(metric: str) -> None:
    """A row's distance to a query does not depend on which rows it was scanned with
    (segments, shards), how many queries came along (the numpy and faiss paths), or
    the BLAS thread count: they change the scan's summation order, not the answer."""
    from threadpoolctl import threadpool_limits

    from latentdb.index._flat import exact_search

    rng = np.random.default_rng(7)
    data = rng.normal(size=(3000, 384)).astype(np.float32)
    queries = rng.normal(size=(40, 384)).astype(np.float32)
    if metric == "cosine":  # cosine spaces hold unit rows
        data, queries = unit(data), unit(queries)
    whole, rows = exact_search(queries, data, 10, metric)  # type: ignore[arg-type]
    for parts in (2, 3):  # the same rows split as shards would be, merged by distance
        found = []
        for part in np.array_split(np.arange(3000), parts):
            distances, positions = exact_search(queries, data[part], 10, metric)  # type: ignore[arg-type]
            found.append((distances, part[positions]))
        merged = np.concatenate([d for d, _ in found], axis=1)
        merged_rows = np.concatenate([r for _, r in found], axis=1)
        order = np.argsort(merged, axis=1, kind="stable")[:, :10]
        np.testing.assert_array_equal(np.take_along_axis(merged_rows, order, 1), rows)
        assert np.take_along_axis(merged, order, 1).tobytes() == whole.tobytes()
    with threadpool_limits(1):
        one_thread = exact_search(queries, data, 10, metric)[0]  # type: ignore[arg-type]
    singles = [exact_search(queries[i : i + 1], data, 10, metric)[0] for i in range(40)]  # type: ignore[arg-type]
    assert one_thread.tobytes() == whole.tobytes()
    assert np.concatenate(singles).tobytes() == whole.tobytes()
    # And they are the distances themselves, to float32 rounding.
    np.testing.assert_allclose(
        whole, np.take_along_axis(brute_force(metric, data, queries), rows, 1), rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize("queries_count", [1, 100])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_a_matrix_not_aligned_for_blas_is_scanned_exactly(
    monkeypatch: pytest.MonkeyPatch, queries_count: int, metric: str
) -> None:
    """A mapped index's vectors may start at any byte (faiss's file layout): numpy will
    not hand such a matrix to BLAS, so it is scanned a copied block of rows at a time,
    with the same answers."""
    monkeypatch.setattr(_flat, "numpy_batches_faster", lambda: True)
    monkeypatch.setattr(_flat, "_UNALIGNED_ROWS", 128)  # several blocks
    rng = np.random.default_rng(4)
    data = unit(rng.normal(size=(1000, 16)))
    raw = bytearray(data.nbytes + 2)
    raw[2:] = data.tobytes()
    skewed = np.frombuffer(raw, dtype=np.float32, offset=2).reshape(1000, 16)
    assert not skewed.flags.aligned and np.array_equal(skewed, data)
    queries = unit(rng.normal(size=(queries_count, 16)))
    alive = rng.random(1000) > 0.1
    norms = (data**2).sum(1) if metric == "l2" else None
    got = exact_search(queries, skewed, 10, metric, alive=alive, norms=norms)  # type: ignore[arg-type]
    want = exact_search(queries, data, 10, metric, alive=alive, norms=norms)  # type: ignore[arg-type]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    expected = brute_force(metric, data, queries)
    expected[:, ~alive] = np.inf
    np.testing.assert_array_equal(got[1], np.argsort(expected, axis=1)[:, :10])


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_a_few_queries_are_scored_against_the_rows_where_they_lie(metric: str) -> None:
    """The scan of a few queries reads the allowed rows in place (faiss, by index), even
    from a matrix not aligned for BLAS as a mapped index's is: the scores are those of
    the matrix product over the same rows."""
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((500, 24)).astype(np.float32)
    if metric == "cosine":
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    buffer = np.empty(rows.size + 1, dtype=np.float32)
    shifted = buffer[1:].reshape(rows.shape)  # 4 bytes past the buffer's alignment
    shifted[:] = rows
    queries = rng.standard_normal((3, 24)).astype(np.float32)
    allowed = np.flatnonzero(rng.random(500) < 0.4)
    scores = scores_of_rows(queries, shifted, allowed, metric)
    if metric == "l2":
        want = 2 * queries @ rows[allowed].T - (rows[allowed] ** 2).sum(axis=1)
    else:
        want = queries @ rows[allowed].T
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("queries_count", [1, 3, 9])
def test_search_allowed_is_the_search_over_the_allowed_keys(
    metric: str, queries_count: int
) -> None:
    """Rows a filter allows, tested in place and scored where they lie (a few queries)
    or looked up and copied (more): the same hits and the same distance bits as a
    search over those keys, masked rows never among them."""
    rng = np.random.default_rng(11)
    index = FlatIndex(16, metric)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    if metric == "cosine":
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    keys = np.arange(300, dtype=np.int64) * 3
    index.upsert(keys, vectors)
    index.remove(keys[::7])  # masked rows
    queries = rng.standard_normal((queries_count, 16)).astype(np.float32)
    if metric == "cosine":  # the space normalizes them
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    allowed = set(keys[rng.random(300) < 0.3].tolist())

    def test(asked: np.ndarray) -> np.ndarray:
        return np.array([int(key) in allowed for key in asked], dtype=bool)

    distances, found = index.search_allowed(queries, 10, test)
    live_allowed = np.array(sorted(allowed - set(keys[::7].tolist())), dtype=np.int64)
    want_distances, want = index.search(queries, 10, keys=live_allowed)
    assert found.tolist() == want.tolist()
    assert np.array_equal(distances, want_distances)
    none = index.search_allowed(queries, 10, lambda asked: np.zeros(asked.shape, dtype=bool))
    assert none[0].shape == none[1].shape == (queries_count, 0)
