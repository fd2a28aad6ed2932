"""Drift between two spaces (latentdb.analysis.compare_spaces) on known answers: a
rotation changes nothing, noise changes neighbourhoods more the louder it is, and
MiniLM against its own PCA projection gives a stable, measured figure."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.spatial import procrustes

from latentdb import InvalidArgumentError, SpaceComparison
from latentdb.analysis import ComparedSpace, compare_spaces, shared_positions
from tests._data import pypi_minilm

ROWS = 1500
DIM = 32


def gaussian(rows: int = ROWS, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def rotation(dim: int, seed: int = 1) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q.astype(np.float32)


def side(name: str, rows: np.ndarray, metric: str = "l2") -> ComparedSpace:
    return ComparedSpace(
        collection=name, model=f"model/{name}", metric=metric, count=len(rows), rows=rows
    )  # type: ignore[arg-type]


def ids(count: int) -> list[str]:
    return [f"r{i:05d}" for i in range(count)]


def compare(a: np.ndarray, b: np.ndarray, metric: str = "l2", **options: object) -> SpaceComparison:
    return compare_spaces(side("a", a, metric), side("b", b, metric), ids=ids(len(a)), **options)  # type: ignore[arg-type]


def pca(rows: np.ndarray, dimensions: int) -> np.ndarray:
    centred = rows - rows.mean(axis=0)
    _, _, basis = np.linalg.svd(centred, full_matrices=False)
    return (centred @ basis[:dimensions].T).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_a_rotation_changes_nothing(metric: str) -> None:
    rows = unit(gaussian()) if metric == "cosine" else gaussian()
    result = compare(rows, rows @ rotation(DIM), metric, sample=500)
    assert result.overlap == 1.0 and result.overlap_counts == [0] * 10 + [500]
    assert result.cka == pytest.approx(1.0, abs=1e-6)
    assert result.procrustes_residual == pytest.approx(0.0, abs=1e-6)
    assert result.distance_correlation == pytest.approx(1.0, abs=1e-6)
    assert result.global_distance_correlation == pytest.approx(1.0, abs=1e-6)
    assert result.padding is None
    assert result.verdict.startswith("queries will see about 100% of the same top-10")


def test_scaling_and_shifting_change_nothing_under_l2() -> None:
    rows = gaussian()
    result = compare(rows, 3.0 * (rows @ rotation(DIM)) + 5.0, sample=300)
    assert result.overlap == 1.0
    assert result.cka == pytest.approx(1.0, abs=1e-6)
    assert result.procrustes_residual == pytest.approx(0.0, abs=1e-6)


def test_more_noise_changes_more_neighbourhoods() -> None:
    rows = unit(gaussian())
    noise = gaussian(seed=7)
    results = [
        compare(rows, unit(rows + scale * noise / math.sqrt(DIM)), "cosine", sample=1000)
        for scale in (0.05, 0.1, 0.2, 0.4, 0.8)
    ]
    overlaps = [r.overlap for r in results]
    assert all(a > b for a, b in itertools.pairwise(overlaps)), overlaps
    assert overlaps[0] > 0.8 and overlaps[-1] < 0.4, overlaps
    for name in ("cka", "distance_correlation", "global_distance_correlation"):
        values = [getattr(r, name) for r in results]
        assert all(a > b for a, b in itertools.pairwise(values)), (name, values)
    residuals = [r.procrustes_residual for r in results]
    assert all(a < b for a, b in itertools.pairwise(residuals)), residuals


def test_cka_and_procrustes_match_independent_computations() -> None:
    """CKA against the n x n kernel form (HSIC with the centring matrix), the residual
    against scipy.spatial.procrustes on the zero-padded smaller space."""
    rows = gaussian(300, 24)
    other = (rows[:, :10] @ np.random.default_rng(3).standard_normal((10, 10))).astype(
        np.float32
    ) + 0.3 * gaussian(300, 10, seed=4)
    result = compare(rows, other, sample=50)

    centring = np.eye(300) - 1.0 / 300
    kx = centring @ (rows.astype(np.float64) @ rows.T) @ centring
    ky = centring @ (other.astype(np.float64) @ other.T) @ centring
    hsic = np.sum(kx * ky)
    expected_cka = hsic / math.sqrt(np.sum(kx * kx) * np.sum(ky * ky))
    assert result.cka == pytest.approx(expected_cka, abs=1e-9)

    padded = np.zeros_like(rows, dtype=np.float64)
    padded[:, :10] = other
    _, _, disparity = procrustes(rows.astype(np.float64), padded)
    assert result.procrustes_residual == pytest.approx(disparity, abs=1e-9)
    assert result.padding == "b's 10 dimensions padded with zeros to a's 24 for the fit"


def test_distance_correlation_is_spearman_of_each_neighbourhood() -> None:
    from scipy.stats import spearmanr

    rows = gaussian(400, 8)
    other = rows + 0.3 * gaussian(400, 8, seed=2)
    result = compare(rows, other, sample=400, k=5)
    (record,) = [c for c in result.changed[:1]]
    position = int(record.id[1:])
    union = sorted({int(i[1:]) for i in record.neighbours_a + record.neighbours_b})
    in_a = ((rows[union] - rows[position]) ** 2).sum(axis=1)
    in_b = ((other[union] - other[position]) ** 2).sum(axis=1)
    assert record.distance_correlation == pytest.approx(spearmanr(in_a, in_b)[0], abs=1e-6)


def test_spearman_shares_the_ranks_of_ties_as_scipy_does() -> None:
    from scipy.stats import spearmanr

    from latentdb.analysis._drift import _spearman

    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, size=(50, 12)).astype(np.float64)  # many ties
    y = x + rng.integers(0, 3, size=(50, 12))
    valid = rng.random((50, 12)) > 0.2
    found = _spearman(x, y, valid)
    for row in range(50):
        keep = valid[row]
        expected = spearmanr(x[row, keep], y[row, keep])[0]
        assert found[row] == pytest.approx(expected, abs=1e-12, nan_ok=True)


def test_minilm_against_its_pca_128_gives_a_stable_figure() -> None:
    """Measured on the 3,000-row slice, sample 1,000: overlap@10 0.705-0.709 over
    seeds 0-3 (each +-0.008), CKA 0.983, Procrustes residual 0.207; PCA to 32
    dimensions: overlap 0.425."""
    rows, _ = pypi_minilm(3000, 1)
    reduced = unit(pca(rows, 128))
    results = [compare(rows, reduced, "cosine", sample=1000, seed=seed) for seed in range(4)]
    overlaps = [r.overlap for r in results]
    assert max(overlaps) - min(overlaps) < 0.02, overlaps
    assert OVERLAP_PCA_128 - 0.03 < np.mean(overlaps) < OVERLAP_PCA_128 + 0.03, overlaps
    assert all(r.overlap_error < 0.02 for r in results)
    # CKA and Procrustes use every shared record, not the sample: the same each time.
    assert len({r.cka for r in results}) == 1
    assert CKA_PCA_128 - 0.02 < results[0].cka < CKA_PCA_128 + 0.02
    assert results[0].padding == "b's 128 dimensions padded with zeros to a's 384 for the fit"
    fewer = compare(rows, unit(pca(rows, 32)), "cosine", sample=1000)
    assert fewer.overlap < min(overlaps) - 0.1  # fewer dimensions, more drift


# Measured on the slice (see the test above).
OVERLAP_PCA_128 = 0.707
CKA_PCA_128 = 0.983


def test_the_records_that_change_most_come_first_with_their_documents() -> None:
    rows = gaussian(200, 8)
    moved = rows.copy()
    moved[17] = rows[150]  # record r00017 now sits where r00150 is
    result = compare_spaces(
        side("a", rows),
        side("b", moved),
        ids=ids(200),
        sample=200,
        k=5,
        documents_of=lambda wanted: [f"text of {i}" for i in wanted],
    )
    first = result.changed[0]
    assert first.id == "r00017" and first.overlap < 0.5
    assert first.document == "text of r00017"
    assert "r00150" in first.neighbours_b and len(first.neighbours_a) == 5
    assert len(result.changed) == 10
    assert [c.overlap for c in result.changed] == sorted(c.overlap for c in result.changed)
    assert sum(result.overlap_counts) == 200


def test_shared_positions_align_by_id_in_sorted_order() -> None:
    shared, in_a, in_b = shared_positions(["c", "a", "x", "b"], ["b", "y", "a", "c"])
    assert shared == ["a", "b", "c"]
    assert in_a.tolist() == [1, 3, 0] and in_b.tolist() == [2, 0, 3]


def test_a_comparison_survives_json_and_reads_as_markdown() -> None:
    rows = gaussian(100, 4)
    result = compare(rows, rows + 0.5 * gaussian(100, 4, seed=9), sample=50, k=3)
    again = SpaceComparison.from_dict(result.to_dict())
    assert again == result
    text = str(result)
    assert text.startswith("## a -> b: queries will see about")
    assert "| overlap@3 |" in text and "Records whose neighbourhoods change most" in text


def test_bad_input_is_refused_by_name() -> None:
    rows = gaussian(20, 4)
    with pytest.raises(InvalidArgumentError, match="share no ids"):
        compare_spaces(side("a", rows[:0]), side("b", rows[:0]), ids=[])
    with pytest.raises(InvalidArgumentError, match=r"more than k = 10 .* share 8"):
        compare(rows[:8], rows[:8])
    with pytest.raises(InvalidArgumentError, match="sample must be"):
        compare(rows, rows, sample=0)
    with pytest.raises(InvalidArgumentError, match="k must be"):
        compare(rows, rows, k=0)
    with pytest.raises(InvalidArgumentError, match=r"must be \(20, d\)"):
        compare_spaces(side("a", rows), side("b", rows[:5]), ids=ids(20))
