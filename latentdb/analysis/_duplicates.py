"""Every pair of rows within a distance, found exactly without scanning every pair.

Two lower bounds of the distance make it cheap. A projection onto orthonormal
directions (PCA) never lengthens a difference, so a pair within the radius is within it
in the projection; and in the projection, a point is at least as far from any point of
another k-means cell as from the hyperplane that bisects the two cells' centroids. So a
row need only be compared with the rows of the cells whose bisector lies within the
radius: at 100,000 PyPI MiniLM rows, 16 PCA dimensions and 512 cells, 17 cells of 512
(each pair of cells once: about 9), 2.2 s on one core where the same range search over
every pair took 79 s (issue 19). The pairs the
projection keeps are checked on the full vectors in float64: nothing is missed and
nothing is made up, whatever the cells or the projection are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from latentdb.errors import InvalidArgumentError

__all__ = ["DuplicateCount", "count_near_duplicates"]

FloatMatrix = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Rows per k-means cell: at 100k rows, 512 cells of ~200 rows left 9 cells to compare
# each row with (16 dimensions, cosine 0.99 on MiniLM); smaller cells leave more of them.
_CELL_ROWS = 200
_MOST_CELLS = 512
# Rows per block of the row-to-centroid distances: 8,192 x 512 float32 is 16 MiB.
_BLOCK = 8192
# Relative float32 rounding allowed for in each bound (a sum of 16 products errs by at
# most 16 * 2^-24 ~ 1e-6 of its terms' magnitudes; ten times that to spare).
_ROUNDING = 1e-5
# Most projected distances computed at once: 4M float32 is 16 MiB.
_SCORES = 4_000_000


@dataclass(frozen=True)
class DuplicateCount:
    """Every pair of rows within a Euclidean radius, found exactly.

    Attributes:
        first, second: int64 (p,) positions of each pair, first < second.
        distance: float64 (p,) their Euclidean distance.
        candidates: Pairs the projected scan proposed and the full vectors checked.
        compared: Row pairs whose projected distance was computed (of n (n - 1) / 2).
    """

    first: IntArray
    second: IntArray
    distance: FloatArray
    candidates: int
    compared: int = 0

    @property
    def pairs(self) -> int:
        """Pairs within the radius."""
        return int(self.first.size)


def count_near_duplicates(
    rows: object,
    radius: float,
    *,
    projected: int = 16,
    cells: int | None = None,
    limit: int = 5_000_000,
    seed: int = 0,
) -> DuplicateCount | None:
    """Every pair of rows at Euclidean distance <= ``radius``, exactly.

    Projects the rows by PCA to ``projected`` dimensions, splits the projection into
    k-means cells, and compares each row only with the rows of cells whose bisecting
    hyperplane with its own cell lies within the radius (each pair of cells once); the
    pairs within the radius there are checked on the full vectors.

    Args:
        rows: float32 (n, d).
        radius: Euclidean distance, >= 0.
        projected: Dimensions of the candidate scan (the rows' own when d is not more):
            16 left 5,000 candidates for 79 pairs at 100k MiniLM rows, 32 left 1,500
            and compared fewer pairs but cost more per pair.
        cells: k-means cells (default: one per 200 rows, at most 512).
        limit: Most candidate pairs checked; beyond it the scan gives up.
        seed: Which rows train the PCA and the cells (any do: the bounds hold for every
            projection and every set of centroids).

    Returns:
        A :class:`DuplicateCount`, or None when more than ``limit`` candidates turned up.

    Raises:
        InvalidArgumentError: not a non-empty (n, d) array, or a radius that is negative
            or not finite.
    """
    matrix = np.ascontiguousarray(rows, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise InvalidArgumentError(
            f"rows must be a non-empty (n, d) array; got shape {tuple(matrix.shape)}"
        )
    if radius < 0 or not np.isfinite(radius):
        raise InvalidArgumentError(f"radius must be finite and >= 0; got {radius}")
    n = matrix.shape[0]
    rng = np.random.default_rng(seed)
    reduced = _project(matrix, projected, rng)
    count = cells if cells is not None else min(_MOST_CELLS, max(1, n // _CELL_ROWS))
    centroids = _centroids(reduced, max(1, min(count, n)), rng)
    cell, probes = _probes(reduced, centroids, float(radius))
    found = _pairs_in_cells(reduced, cell, probes, float(radius), centroids.shape[0], limit)
    if found is None:
        return None
    first, second, compared = found
    distance = np.empty(first.size)
    for start in range(0, first.size, 65_536):
        part = slice(start, start + 65_536)
        difference = matrix[first[part]].astype(np.float64) - matrix[second[part]]
        distance[part] = np.sqrt(np.einsum("ij,ij->i", difference, difference))
    keep = distance <= radius
    swap = first > second
    low = np.where(swap, second, first)[keep]
    high = np.where(swap, first, second)[keep]
    order = np.lexsort((high, low))
    return DuplicateCount(
        low[order], high[order], distance[keep][order], int(first.size), int(compared)
    )


def _project(matrix: FloatMatrix, projected: int, rng: np.random.Generator) -> FloatMatrix:
    """The rows by PCA to ``projected`` dimensions (trained on up to 20,000 of them), or
    centred when they have no more dimensions than that."""
    import faiss

    n, d = matrix.shape
    if d <= projected or n < 2:
        return np.ascontiguousarray(matrix - matrix.mean(axis=0), dtype=np.float32)
    train = matrix
    if n > 20_000:
        train = np.ascontiguousarray(matrix[np.sort(rng.choice(n, 20_000, replace=False))])
    pca = faiss.PCAMatrix(d, min(projected, n - 1))
    pca.train(train)
    return np.ascontiguousarray(pca.apply(matrix), dtype=np.float32)


def _centroids(reduced: FloatMatrix, count: int, rng: np.random.Generator) -> FloatMatrix:
    """``count`` k-means centroids of the projected rows (a few rounds on a sample: their
    quality only decides how many cells a row is compared with, never the result)."""
    import faiss

    n, d = reduced.shape
    if count == 1:
        return np.ascontiguousarray(reduced.mean(axis=0, keepdims=True), dtype=np.float32)
    train = reduced
    if n > count * 40:
        train = np.ascontiguousarray(reduced[np.sort(rng.choice(n, count * 40, replace=False))])
    # min_points_per_centroid=1: a small sample trains few-row cells without a warning.
    kmeans = faiss.Kmeans(
        d,
        count,
        niter=6,
        seed=int(rng.integers(1 << 30)),
        max_points_per_centroid=40,
        min_points_per_centroid=1,
    )
    kmeans.train(train)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def _probes(
    reduced: FloatMatrix, centroids: FloatMatrix, radius: float
) -> tuple[IntArray, tuple[IntArray, IntArray]]:
    """Each row's cell (nearest centroid), and the (row, cell) pairs to compare: cell b
    of a row x in cell a, b >= a, where x is within ``radius`` of the bisector of a and b.

    With g(z) = |z - c_b|^2 - |z - c_a|^2 = 2 z.(c_a - c_b) + |c_b|^2 - |c_a|^2, whose
    gradient has length 2 |c_a - c_b|, a row y of cell b has g(y) <= 0, so a row x of
    cell a within ``radius`` of y has g(x) <= 2 radius |c_a - c_b|. Cells b < a are
    reached from the other end of the pair.
    """
    n = reduced.shape[0]
    count = centroids.shape[0]
    squared = np.einsum("ij,ij->i", centroids, centroids)
    wide = centroids.astype(np.float64)
    gaps = np.sqrt(
        np.maximum(((wide[:, None, :] - wide[None, :, :]) ** 2).sum(axis=2), 0.0)
    ).astype(np.float32)
    allowance = 2.0 * radius * (1 + _ROUNDING) * gaps
    # g is computed in float32 from terms as large as |z|^2 + |c|^2: allow their rounding.
    scale = float(np.einsum("ij,ij->i", reduced, reduced).max() + squared.max())
    slack = 4 * _ROUNDING * scale + 1e-30
    cell = np.empty(n, dtype=np.int64)
    rows_parts, cell_parts = [], []
    columns = np.arange(count)
    for start in range(0, n, _BLOCK):
        block = reduced[start : start + _BLOCK]
        # |z - c|^2 - |z|^2 for every centroid: g against the nearest one.
        score = block @ centroids.T
        score *= -2.0
        score += squared[None, :]
        nearest = score.argmin(axis=1)
        cell[start : start + block.shape[0]] = nearest
        score -= score[np.arange(block.shape[0]), nearest][:, None]
        score -= allowance[nearest]
        score[columns[None, :] < nearest[:, None]] = np.inf
        row, other = np.nonzero(score <= slack)
        rows_parts.append(row + start)
        cell_parts.append(other)
    return cell, (np.concatenate(rows_parts), np.concatenate(cell_parts))


def _pairs_in_cells(
    reduced: FloatMatrix,
    cell: IntArray,
    probes: tuple[IntArray, IntArray],
    radius: float,
    count: int,
    limit: int,
) -> tuple[IntArray, IntArray, int] | None:
    """Pairs within ``radius`` in the projection, each once: every probing row against
    the rows of the cell it probes (in its own cell, only the rows after it)."""
    probe_rows, probe_cells = probes
    order = np.argsort(probe_cells, kind="stable")
    probe_rows = probe_rows[order]
    probe_starts = np.searchsorted(probe_cells[order], np.arange(count + 1))
    members = np.argsort(cell, kind="stable")
    member_starts = np.searchsorted(cell[members], np.arange(count + 1))
    halves = 0.5 * np.einsum("ij,ij->i", reduced, reduced)
    # |x - y|^2 <= r^2  <=>  x.y - |x|^2/2 - |y|^2/2 >= -r^2/2, in float32: widen it by
    # the rounding of the largest norms, so no pair within the radius is lost. One
    # product gives the left side: (x, -|x|^2/2, 1) . (y, 1, -|y|^2/2).
    bound = -0.5 * (radius**2 * (1 + 1e-4) + 4 * _ROUNDING * 2 * float(halves.max()) + 1e-30)
    ones = np.ones((reduced.shape[0], 1), dtype=np.float32)
    left_side = np.hstack([reduced, -halves[:, None], ones])
    right_side = np.hstack([reduced, ones, -halves[:, None]])
    firsts, seconds = [], []
    candidates = compared = 0
    for index in range(count):
        queries = probe_rows[probe_starts[index] : probe_starts[index + 1]]
        inside = members[member_starts[index] : member_starts[index + 1]]
        if inside.size == 0 or queries.size == 0:
            continue
        targets = np.ascontiguousarray(right_side[inside].T)
        step = max(1, _SCORES // inside.size)
        for start in range(0, queries.size, step):
            some = queries[start : start + step]
            score = left_side[some] @ targets
            compared += score.size
            # Few rows hold a candidate: find them by one pass, then their columns.
            hot = np.flatnonzero(score.max(axis=1) >= bound)
            if hot.size == 0:
                continue
            rows_hit, right = np.nonzero(score[hot] >= bound)
            left = hot[rows_hit]
            first, second = some[left], inside[right]
            # In its own cell a row meets the others twice (and itself): first < second.
            keep = (cell[first] != index) | (first < second)
            firsts.append(first[keep])
            seconds.append(second[keep])
            candidates += int(np.count_nonzero(keep))
            if candidates > limit:
                return None
    if not firsts:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, compared
    return np.concatenate(firsts), np.concatenate(seconds), compared
