"""Each estimator on data whose answer is known, and against an independent
implementation: scikit-dimension (TwoNN, Levina-Bickel), scikit-learn's neighbours with
scipy's skewness (k-occurrence), scipy's pairwise distances (relative contrast,
near-duplicates)."""

from __future__ import annotations

import numpy as np
import pytest
import skdim
from scipy.spatial.distance import cdist
from scipy.stats import skew
from sklearn.neighbors import NearestNeighbors

from latentdb import InvalidArgumentError
from latentdb.analysis import (
    Steps,
    build_report,
    candidate_dimensions,
    count_near_duplicates,
    dimension_curve,
    gaussian_like,
    gaussian_rows,
    hubness,
    hubness_skewness,
    k_occurrence,
    levina_bickel,
    nearest_others,
    norm_summary,
    occurrence_skewness,
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


def ids(positions: np.ndarray) -> list[str]:
    return [f"r{p}" for p in positions.tolist()]


@pytest.mark.parametrize("intrinsic", [3, 6])
def test_two_nn_and_levina_bickel_agree_with_scikit_dimension(intrinsic: int) -> None:
    """Every row a query at the full scale: the same estimators as scikit-dimension's
    TwoNN (closed-form MLE, nothing discarded) and MLE (the unbiased k - 2 form, points
    combined as MacKay and Ghahramani), on neighbours it finds itself."""
    rows = embedded_gaussian(3000, intrinsic, ambient=30, seed=intrinsic)
    (point,) = dimension_curve(rows, np.arange(3000), scales=[3000], queries=3000, k=10)
    with np.errstate(divide="ignore"):  # its log(1 - F) for the linear fit, at F = 1
        theirs = skdim.id.TwoNN(discard_fraction=0.0, method="mle").fit(rows).dimension_
    assert point.two_nn == pytest.approx(theirs, rel=1e-3)
    mle = skdim.id.MLE(unbiased=True).fit(rows, n_neighbors=10, comb="mle").dimension_
    assert point.levina_bickel == pytest.approx(mle, rel=1e-3)
    # And both find the dimension the data has.
    assert abs(point.two_nn - intrinsic) <= 0.15 * intrinsic
    assert abs(point.levina_bickel - intrinsic) <= 0.15 * intrinsic
    assert point.two_nn_error == pytest.approx(point.two_nn / np.sqrt(3000), rel=1e-6)


def test_the_dimension_curve_shows_noise_that_only_dense_samples_resolve() -> None:
    """A plane with a little noise in 20 other directions: sparse samples see the
    plane (about 2), dense ones see the noise between close neighbours (higher). The
    curve rises with the rows; a clean 4-d Gaussian's stays put."""
    rng = np.random.default_rng(5)
    plane = np.zeros((16_000, 22), dtype=np.float32)
    plane[:, :2] = rng.uniform(-1, 1, (16_000, 2))
    plane[:, 2:] = rng.normal(0, 0.001, (16_000, 20))
    order = rng.permutation(16_000)
    curve = dimension_curve(plane, order, scales=[500, 2000, 16_000], queries=500, k=10)
    readings = [p.two_nn for p in curve]
    assert readings == sorted(readings) and readings[0] < 3.0 and readings[-1] > 1.5 * readings[0]
    clean = embedded_gaussian(16_000, 4, ambient=22)
    flat = [p.two_nn for p in dimension_curve(clean, order, scales=[2000, 16_000], queries=1000)]
    assert abs(flat[0] - flat[1]) <= 0.1 * flat[1]


def test_the_curve_uses_known_distances_and_refuses_bad_scales() -> None:
    rows = embedded_gaussian(400, 3, ambient=8)
    squared, _ = nearest_others(rows, np.arange(400), k=10, metric="l2")
    known = {400: np.sqrt(squared)}
    (given,) = dimension_curve(rows, np.arange(400), scales=[400], queries=400, known=known)
    (found,) = dimension_curve(rows, np.arange(400), scales=[400], queries=400)
    assert given.two_nn == pytest.approx(found.two_nn, rel=1e-5)
    with pytest.raises(InvalidArgumentError, match="scale must be"):
        dimension_curve(rows, np.arange(400), scales=[5], queries=10)


def test_two_nn_ignores_exact_duplicates() -> None:
    assert two_nn([0.0, 1.0, 1.0], [1.0, 2.0, 4.0]) == pytest.approx(1 / np.log(8) * 1)
    assert np.isnan(two_nn([0.0], [1.0]))
    with pytest.raises(InvalidArgumentError, match="k >= 3"):
        levina_bickel(np.ones((4, 2)))


def test_relative_contrast_is_he_et_al_mean_over_nearest() -> None:
    rows = embedded_gaussian(600, 5, ambient=16)
    positions = sample_positions(600, 50)
    scan = scan_neighbours(rows, positions, k=5, metric="l2")
    direct = cdist(rows[positions].astype(np.float64), rows.astype(np.float64))
    direct[np.arange(50), positions] = np.nan
    expected = np.nanmean(direct, axis=1).mean() / np.nanmin(direct, axis=1).mean()
    assert relative_contrast(scan.nearest, scan.mean) == pytest.approx(expected, rel=1e-4)
    assert relative_contrast([1.0, 3.0], [4.0, 8.0]) == pytest.approx(3.0)
    assert relative_contrast([0.0], [1.0]) == float("inf")


def test_relative_contrast_of_gaussian_data_shrinks_with_dimension() -> None:
    contrasts = [gaussian_like(2000, d, unit=False, queries=200)[0] for d in (2, 16, 128, 1024)]
    assert contrasts == sorted(contrasts, reverse=True)
    assert contrasts[0] > 10 and contrasts[-1] < 1.2


def test_k_occurrence_matches_scikit_learn_neighbours_and_scipy_skewness() -> None:
    rows = embedded_gaussian(1500, 12, ambient=12)
    _, neighbours = nearest_others(
        rows, np.random.default_rng(0).permutation(1500), k=10, metric="l2"
    )
    measured = hubness(neighbours, 1500)
    theirs = NearestNeighbors(n_neighbors=10).fit(rows).kneighbors(return_distance=False)
    counts = np.bincount(theirs.ravel(), minlength=1500)
    assert measured.exact and measured.low == measured.high == measured.skewness
    assert measured.skewness == pytest.approx(skew(counts), abs=0.02)  # ties may differ
    assert hubness_skewness(k_occurrence(rows, k=10, metric="l2")) == pytest.approx(
        measured.skewness, abs=0.02
    )


def test_sampled_queries_estimate_the_whole_collections_hubness() -> None:
    """A fifth of the rows as queries: the factorial-moment estimate lands on the
    skewness of every row's k-occurrence, and its interval covers it."""
    rows = gaussian_rows(8000, 48, unit=False, seed=2)
    order = np.random.default_rng(1).permutation(8000)
    _, neighbours = nearest_others(rows, order, k=10, metric="l2")
    exact = hubness(neighbours, 8000).skewness
    sampled = hubness(neighbours[:1600], 8000)
    assert not sampled.exact and sampled.groups == 20
    assert sampled.low < exact < sampled.high
    assert abs(sampled.skewness - exact) < 0.1 * exact
    top = int(np.argmax(sampled.counts))
    assert sampled.occurrences([top])[0] == pytest.approx(sampled.counts[top] * 5)


def test_the_hubness_interval_covers_the_exact_figure_across_query_samples() -> None:
    """40 random samples of a twentieth of the rows as queries: the jackknife's 95%
    intervals (20 groups) cover the skewness of every row's k-occurrence in most of
    them, and the estimates centre on it."""
    rows = gaussian_rows(8000, 48, unit=False, seed=2)
    _, neighbours = nearest_others(rows, np.arange(8000), k=10, metric="l2")
    exact = hubness(neighbours, 8000).skewness
    rng = np.random.default_rng(0)
    samples = [hubness(neighbours[rng.permutation(8000)[:400]], 8000) for _ in range(40)]
    covered = np.mean([one.low <= exact <= one.high for one in samples])
    assert covered >= 0.85
    assert abs(np.median([one.skewness for one in samples]) - exact) < 0.1 * exact


def test_occurrence_skewness_is_exact_with_every_row_and_refuses_too_few() -> None:
    counts = np.array([0, 0, 1, 3, 6])
    assert occurrence_skewness(counts, queries=5, rows=5, k=2) == pytest.approx(skew(counts))
    assert np.isnan(occurrence_skewness(counts, queries=2, rows=5, k=2))
    with pytest.raises(InvalidArgumentError, match="neighbours must be"):
        hubness(np.array([[0, 7]]), 5)


def test_gaussian_hubness_grows_with_dimension() -> None:
    skews = []
    for dimension in (3, 30, 300):
        rows = gaussian_rows(3000, dimension, unit=False)
        skews.append(hubness(nearest_others(rows, np.arange(3000), k=10, metric="l2")[1], 3000))
    assert skews[0].skewness < 0.6 < 1.0 < skews[2].skewness
    assert [s.skewness for s in skews] == sorted(s.skewness for s in skews)


def test_nearest_others_leave_out_the_query_among_exact_duplicates() -> None:
    rows = np.zeros((6, 3), dtype=np.float32)
    rows[5] = 1.0
    distances, found = nearest_others(rows, np.arange(6), k=2, metric="l2")
    assert all(p not in row for p, row in enumerate(found.tolist()))
    assert distances[:5].max() == 0.0 and distances[5].min() == pytest.approx(3.0)
    with pytest.raises(InvalidArgumentError, match="k must be"):
        nearest_others(rows, [0], k=6, metric="l2")


def brute_pairs(rows: np.ndarray, radius: float) -> set[tuple[int, int]]:
    distance = cdist(rows.astype(np.float64), rows.astype(np.float64))
    first, second = np.nonzero(np.triu(distance <= radius, k=1))
    return set(zip(first.tolist(), second.tolist(), strict=True))


@pytest.mark.parametrize("radius", [0.0, 0.05, 0.3])
def test_near_duplicate_count_is_exact_through_the_projection(radius: float) -> None:
    """64-d unit rows scanned in 16 PCA dimensions and 10 cells: the same pairs as a brute-force
    float64 scan of every pair, at radii catching only the planted copies and beyond."""
    rng = np.random.default_rng(3)
    rows = unit(rng.standard_normal((2000, 64)).astype(np.float32) + 2 * unit(np.ones(64)))
    for a in range(0, 60, 3):
        rows[1000 + a] = unit(rows[a] + 0.01 * rng.standard_normal(64).astype(np.float32))
    rows[1999] = rows[7]
    counted = count_near_duplicates(rows, radius)
    assert counted is not None
    assert set(zip(counted.first.tolist(), counted.second.tolist(), strict=True)) == brute_pairs(
        rows, radius
    )
    assert counted.pairs >= 1 and np.all(counted.distance <= radius)
    assert count_near_duplicates(rows, 2.0, limit=100) is None  # too many candidates


def test_near_duplicates_by_the_report_rule_off_the_unit_sphere() -> None:
    """Uniform 5-d l2 rows hold no duplicates: the rule (1/20 of the median nearest
    distance) finds none, where the old one (2% of the mean squared norm) would count
    ~50,000 pairs here; planted copies are all counted, exactly."""
    rows = np.random.default_rng(0).uniform(0, 1, (10_000, 5)).astype(np.float32)
    report = build_report(rows, ids, collection="c", model="m", metric="l2", sample=500)
    assert report.near_duplicate_pairs == 0 and not report.near_duplicates_estimated
    assert not [a for a in report.advice if a.topic == "duplicates"]
    assert "median nearest-neighbour distance" in report.near_duplicate_rule
    planted = rows.copy()
    noise = np.random.default_rng(1).normal(0, 1e-4, (25, 5)).astype(np.float32)
    planted[5000:5025] = planted[:25] + noise
    again = build_report(planted, ids, collection="c", model="m", metric="l2", sample=500)
    assert again.near_duplicate_pairs == 25 and not again.near_duplicates_estimated
    assert {(e.first, e.second) for e in again.near_duplicate_examples} <= {
        (f"r{i}", f"r{5000 + i}") for i in range(25)
    }


def test_scan_excludes_the_query_and_ranks_by_the_metric() -> None:
    rows = np.array([[1.0, 0], [2.0, 0], [0, 1.0], [0, 3.0]], dtype=np.float32)
    ip = scan_neighbours(rows, [0, 2], k=1, metric="ip")
    assert ip.neighbours.ravel().tolist() == [1, 3]  # largest inner product, not itself
    l2 = scan_neighbours(rows, [0], k=2, metric="l2", duplicate_radius=1.5)
    assert l2.neighbours.ravel().tolist() == [1, 2]
    assert l2.nearest[0] == pytest.approx(1.0) and l2.farthest[0] == pytest.approx(np.sqrt(10))
    assert l2.mean[0] == pytest.approx((1 + np.sqrt(2) + np.sqrt(10)) / 3)
    assert l2.near_duplicates.tolist() == [2]
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
        ids,
        collection="c",
        model="m",
        metric="cosine",
        sample=100,
        steps=Steps(seen.append),
    )
    assert seen == [
        "neighbours of 100 sampled rows among 300",
        "hubness: 300 queries against all 300 rows",
        "Gaussian baseline",
        "intrinsic dimension by scale",
        "near-duplicates",
        "PCA trials",
        "index recall",
        "done",
    ]
    assert report.index is None and report.sample == 100 and not report.near_duplicates_estimated
    assert [p.rows for p in report.dimension_curve] == [37, 75, 150, 300]
    with steps_bar("quiet", 3) as steps:  # stderr is not a terminal under pytest
        steps.advance("nothing drawn")
