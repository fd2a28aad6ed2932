"""The exact near-duplicate count (latentdb.analysis._duplicates) against a brute-force
float64 scan of every pair, on rows with planted copies on and off the unit sphere, with
the cells and the projection doing real pruning."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform

from latentdb import InvalidArgumentError
from latentdb.analysis import build_report, count_near_duplicates


def brute_pairs(rows: np.ndarray, radius: float) -> set[tuple[int, int]]:
    distance = squareform(pdist(rows.astype(np.float64)))
    first, second = np.nonzero(np.triu(distance <= radius, k=1))
    return set(zip(first.tolist(), second.tolist(), strict=True))


def found(counted: object) -> set[tuple[int, int]]:
    assert counted is not None
    return set(zip(counted.first.tolist(), counted.second.tolist(), strict=True))  # type: ignore[attr-defined]


def planted(scale: float, offset: float, seed: int = 11) -> np.ndarray:
    """3,000 clustered 48-d rows (12 blobs), scaled and shifted off the unit sphere, with
    copies at distances from 0 to twice 0.2 x scale: exact copies, a chain of three,
    copies inside and just outside the radius, and copies in other blobs' cells."""
    rng = np.random.default_rng(seed)
    centres = 3 * rng.standard_normal((12, 48))
    rows = centres[rng.integers(0, 12, 3000)] + rng.standard_normal((3000, 48))
    direction = rng.standard_normal((120, 48))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    lengths = np.linspace(0.0, 0.4, 120)  # the radius in the tests is 0.2
    rows[1500:1620] = rows[:120] + lengths[:, None] * direction
    rows[2999] = rows[2998] + 0.05 * direction[0]  # a chain: 2997 - 2998 - 2999
    rows[2997] = rows[2998] - 0.05 * direction[0]
    return (rows * scale + offset).astype(np.float32)


@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (1000.0, 5000.0), (1e-3, 1.0)])
def test_every_pair_within_the_radius_is_found_and_no_other(scale: float, offset: float) -> None:
    rows = planted(scale, offset)
    radius = 0.2 * scale
    truth = brute_pairs(rows, radius)
    assert 50 < len(truth) < 120  # some planted copies inside, some outside
    counted = count_near_duplicates(rows, radius, projected=8, cells=30)
    assert found(counted) == truth
    assert counted is not None and np.all(counted.distance <= radius)
    assert np.all(counted.first < counted.second)
    # The cells pruned: far fewer pairs compared than all of them.
    assert counted.compared < 0.25 * 3000 * 2999 / 2


@pytest.mark.parametrize("cells", [1, 7, 150])
@pytest.mark.parametrize("projected", [2, 16, 48])
def test_the_count_holds_for_any_cells_and_projection(cells: int, projected: int) -> None:
    """The bounds hold whatever the cells and the projection: a 2-d projection of 48-d
    rows, one cell or 150, all give the brute-force pairs."""
    rows = planted(1.0, 0.0, seed=4)[:2000]
    counted = count_near_duplicates(rows, 0.2, projected=projected, cells=cells)
    assert found(counted) == brute_pairs(rows, 0.2)


def test_unit_rows_at_the_reports_cosine_rule() -> None:
    """Unit rows, radius sqrt(0.02) (cosine similarity 0.99): the default projection and
    cells give the brute-force pairs, planted and natural."""
    rng = np.random.default_rng(8)
    rows = rng.standard_normal((3000, 64)) + 4 * np.eye(64)[rng.integers(0, 64, 3000)]
    rows[2000:2100] = rows[:100] + 0.0025 * rng.standard_normal((100, 64)) * np.arange(100)[:, None]
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    radius = float(np.sqrt(0.02))
    truth = brute_pairs(rows.astype(np.float32), radius)
    assert 40 < len(truth) < 100
    assert found(count_near_duplicates(rows, radius)) == truth


def test_too_many_candidates_or_bad_input() -> None:
    rows = planted(1.0, 0.0)[:500]
    assert count_near_duplicates(rows, 100.0, limit=1000) is None
    with pytest.raises(InvalidArgumentError, match="radius"):
        count_near_duplicates(rows, -1.0)
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        count_near_duplicates(np.zeros((0, 4)), 1.0)


def test_the_report_counts_by_its_rule_off_the_unit_sphere_as_brute_force_does() -> None:
    """l2 rows far off the unit sphere: the report's rule is relative to the data's
    median nearest-neighbour distance, and its exact count is the brute-force count at
    that radius."""
    rows = planted(1000.0, 5000.0)
    report = build_report(
        rows,
        lambda positions: [f"r{p}" for p in positions.tolist()],
        collection="c",
        model="m",
        metric="l2",
        sample=500,
    )
    assert not report.near_duplicates_estimated
    truth = brute_pairs(rows, report.near_duplicate_radius)
    assert report.near_duplicate_pairs == len(truth) > 0
    examples = {(int(e.first[1:]), int(e.second[1:])) for e in report.near_duplicate_examples}
    assert examples <= truth
