"""Each estimator on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from latentdb import InvalidArgumentError
from latentdb.analysis import (
    Steps,
    build_report,
    candidate_dimensions,
    gaussian_like,
    hubness_skewness,
    k_occurrence,
    levina_bickel,
    norm_summary,
    reduction_trials,
    relative_contrast,
    sample_positions,
    scan_neighbours,
    steps_bar,
    two_nn,
)


def embedded_gaussian(n: int, intrinsic: int, ambient: int, seed: int = 0) -> np.ndarray:
    """n Gaussian points of dimension ``intrinsic``, rotated into ``ambient`` dimensions."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, intrinsic)).astype(np.float32)
    basis = np.linalg.qr(rng.standard_normal((ambient, intrinsic)))[0].astype(np.float32)
    return np.ascontiguousarray(latent @ basis.T)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


@pytest.mark.parametrize("intrinsic", [8, 32])
def test_two_nn_finds_the_dimension_of_gaussian_data_within_20_percent(intrinsic: int) -> None:
    # 50,000 points: TwoNN reads low when neighbours are far apart (d=32 at 2,000
    # points reads ~23); the report scans sampled queries against every row for this.
    rows = embedded_gaussian(50_000, intrinsic, ambient=96)
    scan = scan_neighbours(rows, sample_positions(rows.shape[0], 2000), k=10, metric="l2")
    estimate = two_nn(scan.nearest, scan.second)
    assert abs(estimate - intrinsic) <= 0.2 * intrinsic, estimate


def test_levina_bickel_finds_a_low_dimension_and_reads_low_in_high_ones() -> None:
    rows = embedded_gaussian(20_000, 4, ambient=32)
    positions = sample_positions(rows.shape[0], 1000)
    scan = scan_neighbours(rows, positions, k=10, metric="l2")
    distances = np.linalg.norm(rows[scan.euclidean_neighbours] - rows[positions][:, None], axis=2)
    assert abs(levina_bickel(distances) - 4) <= 0.8
    with pytest.raises(InvalidArgumentError, match="k >= 3"):
        levina_bickel(distances[:, :2])


def test_two_nn_ignores_exact_duplicates() -> None:
    assert two_nn([0.0, 1.0, 1.0], [1.0, 2.0, 4.0]) == pytest.approx(1 / np.log(8) * 1)
    assert np.isnan(two_nn([0.0], [1.0]))


def test_relative_contrast_of_gaussian_data_shrinks_with_dimension() -> None:
    contrasts = [gaussian_like(2000, d, unit=False, queries=200)[0] for d in (2, 16, 128, 1024)]
    assert contrasts == sorted(contrasts, reverse=True)
    assert contrasts[0] > 20 and contrasts[-1] < 1.2


def test_relative_contrast_is_far_over_nearest() -> None:
    assert relative_contrast([1.0, 3.0], [4.0, 8.0]) == pytest.approx(3.0)
    assert relative_contrast([0.0], [1.0]) == float("inf")


def test_structured_data_has_more_contrast_than_gaussian_data_of_its_shape() -> None:
    rows = unit(embedded_gaussian(5000, 4, ambient=256))
    scan = scan_neighbours(rows, sample_positions(5000, 500), k=10, metric="cosine")
    baseline, _ = gaussian_like(5000, 256, unit=True, queries=500)
    assert relative_contrast(scan.nearest, scan.farthest) > 3 * baseline


def test_hubness_grows_with_dimension() -> None:
    low = hubness_skewness(k_occurrence(embedded_gaussian(2000, 3, 3), k=10, metric="l2"))
    high = hubness_skewness(k_occurrence(embedded_gaussian(2000, 300, 300), k=10, metric="l2"))
    assert low < 0.6 < 1.0 < high


def test_k_occurrence_counts_each_row_among_the_others_neighbours() -> None:
    # Points on a line at 0, 1, 2, 10: each one's nearest neighbour.
    rows = np.array([[0.0, 0], [1, 0], [2, 0], [10, 0]], dtype=np.float32)
    counts = k_occurrence(rows, k=1, metric="l2")
    # 0 -> 1, 1 -> 0 or 2 (tie: lowest position first), 2 -> 1, 10 -> 2.
    assert counts.tolist() == [1, 2, 1, 0]
    assert k_occurrence(rows, k=2, metric="l2").sum() == 8
    assert hubness_skewness([3, 3, 3]) == 0.0
    assert hubness_skewness([0, 0, 0, 12]) > 1.0
    with pytest.raises(InvalidArgumentError, match="k must be"):
        k_occurrence(rows, k=4, metric="l2")


def test_near_duplicates_count_planted_pairs() -> None:
    rng = np.random.default_rng(3)
    rows = unit(rng.standard_normal((1000, 64)).astype(np.float32))
    planted = [(10, 500), (20, 600), (30, 700), (40, 800), (50, 900)]
    for a, b in planted:  # cosine similarity ~0.9995
        rows[b] = unit(rows[a] + 0.03 * unit(rng.standard_normal(64).astype(np.float32)))
    scan = scan_neighbours(rows, np.arange(1000), k=5, metric="cosine")
    assert scan.near_duplicates.sum() == 2 * len(planted)
    found = {tuple(sorted((int(p), int(scan.euclidean_neighbours[p, 0])))) for p in range(1000)
             if scan.near_duplicates[p]}  # fmt: skip
    assert found == set(planted)


def test_scan_excludes_the_query_and_ranks_by_the_metric() -> None:
    rows = np.array([[1.0, 0], [2.0, 0], [0, 1.0], [0, 3.0]], dtype=np.float32)
    ip = scan_neighbours(rows, [0, 2], k=1, metric="ip")
    assert ip.neighbours.ravel().tolist() == [1, 3]  # largest inner product, not itself
    l2 = scan_neighbours(rows, [0], k=2, metric="l2")
    assert l2.neighbours.ravel().tolist() == [1, 2]
    assert l2.nearest[0] == pytest.approx(1.0) and l2.farthest[0] == pytest.approx(np.sqrt(10))
    with pytest.raises(InvalidArgumentError, match="k must be"):
        scan_neighbours(rows, [0], k=4, metric="l2")


def test_norm_summary_detects_unit_length() -> None:
    rows = unit(np.random.default_rng(0).standard_normal((100, 16)).astype(np.float32))
    assert norm_summary(rows).unit_length
    scaled = rows * np.linspace(0.5, 2, 100, dtype=np.float32)[:, None]
    summary = norm_summary(scaled)
    assert not summary.unit_length
    assert summary.min == pytest.approx(0.5, rel=1e-5) and summary.max == pytest.approx(2.0)
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        norm_summary(np.zeros((0, 3)))


def test_pca_keeps_recall_when_the_data_lives_in_few_dimensions() -> None:
    rows = unit(embedded_gaussian(4000, 6, ambient=64))
    positions = sample_positions(4000, 200)
    truth = scan_neighbours(rows, positions, k=10, metric="cosine").neighbours
    dims = candidate_dimensions(64)
    assert dims == [32, 16, 8]
    trials = reduction_trials(rows, positions, truth, metric="cosine", dimensions=dims)
    assert all(t.recall > 0.97 and t.variance_kept > 0.99 for t in trials)
    assert trials[0].memory_saved == 4000 * 32 * 4
    noise = unit(embedded_gaussian(4000, 64, ambient=64))
    truth = scan_neighbours(noise, positions, k=10, metric="cosine").neighbours
    (trial,) = reduction_trials(noise, positions, truth, metric="cosine", dimensions=[8])
    assert trial.recall < 0.3 and trial.recall < trial.recall_reranked


def test_sampling_is_fixed_and_covers_small_sets() -> None:
    assert sample_positions(5, 10).tolist() == [0, 1, 2, 3, 4]
    first = sample_positions(1000, 50)
    assert first.tolist() == sample_positions(1000, 50).tolist()
    assert len(set(first.tolist())) == 50 and first.tolist() == sorted(first.tolist())


def test_the_report_announces_each_step() -> None:
    seen: list[str] = []
    rows = unit(embedded_gaussian(300, 8, ambient=32))
    report = build_report(
        rows,
        lambda positions: [str(p) for p in positions.tolist()],
        collection="c",
        model="m",
        metric="cosine",
        sample=100,
        steps=Steps(seen.append),
    )
    assert seen == [
        "norms",
        "neighbours of 100 sampled rows among 300",
        "Gaussian baseline",
        "hubness",
        "PCA trials",
        "index recall",
        "done",
    ]
    assert report.index is None and report.sample == 100 and report.near_duplicates_estimated
    with steps_bar("quiet", 3) as steps:  # stderr is not a terminal under pytest
        steps.advance("nothing drawn")
