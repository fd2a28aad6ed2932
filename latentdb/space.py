"""The latent space a collection is bound to, and the checks on incoming vectors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from latentdb.errors import (
    DimensionMismatchError,
    InvalidArgumentError,
    InvalidVectorError,
    ModelMismatchError,
)

__all__ = ["METRICS", "LatentSpace", "Metric", "as_vector_batch"]

Metric = Literal["cosine", "l2", "ip"]
METRICS: tuple[Metric, ...] = ("cosine", "l2", "ip")

FloatMatrix = npt.NDArray[np.float32]
# A vector whose squared norm is this close to 1 is unit length already, to float32's
# rounding (a normalized 384-d float32 vector lands within ~1e-7 of 1).
_UNIT_TOLERANCE = 1e-6
_FLOAT32 = np.dtype(np.float32)
# Squared norms in this range are summed in float32 without overflow (float32 ends at
# 3.4e38) and without losing the small components to underflow (normal floats start at
# 1.2e-38): rows outside it are normalized the careful way, scaled by their largest
# component first (issue 15: [1e20] * 8 was stored as zeros, 1e-23 refused as zero).
_SAFE_SQUARED = (1e-30, 1e30)
# Rows of a float64 (or wider) input whose largest component is outside this range are
# scaled to it before the cast to float32 in a normalized space: only their direction
# counts, and float32 cannot hold them as they are.
_SAFE_PEAK = (1e-15, 1e15)
# In an unnormalized space (l2, ip) every distance must be a finite float32: the squared
# L2 distance of two rows is at most 4x the larger squared norm, so rows past a quarter
# of float32's largest value are refused (1e20 * 8 gave inf distances, unranked).
_MAX_SQUARED_NORM = float(np.finfo(np.float32).max) / 4


@dataclass(frozen=True)
class LatentSpace:
    """One model's latent space: what every vector of a collection must belong to.

    Attributes:
        model: Name of the model that made the vectors, e.g.
            ``"sentence-transformers/all-MiniLM-L6-v2"``.
        fingerprint: Hash of what changes the vectors (weights, tokenizer, pooling,
            normalization) when latentdb embeds; ``None`` for vectors users bring.
        dimension: Width of every vector.
        metric: ``"cosine"`` (distance 1 - cos), ``"l2"`` (squared Euclidean) or
            ``"ip"`` (distance -<q, x>).
        normalized: True when the collection stores unit vectors (cosine spaces).
        reduce: When set, the collection's ANN index searches a PCA projection of the
            space to this many dimensions, learned from the collection's rows; vectors
            in and out, and every distance returned, stay in the full space (candidates
            are re-scored with the original vectors). None: the index is full width.
    """

    model: str
    fingerprint: str | None
    dimension: int
    metric: Metric
    normalized: bool
    reduce: int | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InvalidArgumentError(
                f"metric must be one of {', '.join(METRICS)}; got {self.metric!r}"
            )
        if (
            not isinstance(self.dimension, int)
            or isinstance(self.dimension, bool)
            or self.dimension < 1
        ):
            raise InvalidArgumentError(
                f"dimension must be a positive integer; got {self.dimension!r}"
            )
        if not isinstance(self.model, str) or not self.model:
            raise InvalidArgumentError(f"model must be a non-empty string; got {self.model!r}")
        if self.reduce is not None and (
            not isinstance(self.reduce, int)
            or isinstance(self.reduce, bool)
            or not 1 <= self.reduce < self.dimension
        ):
            raise InvalidArgumentError(
                f"reduce must be an integer from 1 to {self.dimension - 1} (below the "
                f"space's dimension, {self.dimension}); got {self.reduce!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the space as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatentSpace:
        """Rebuild a space from :meth:`to_dict`'s output."""
        return cls(
            model=str(data["model"]),
            fingerprint=data.get("fingerprint"),
            dimension=int(data["dimension"]),
            metric=data["metric"],
            normalized=bool(data["normalized"]),
            reduce=data.get("reduce"),
        )

    def check_model(self, model: str | None) -> None:
        """Refuse vectors that say they come from another model.

        Raises:
            InvalidArgumentError: ``model`` is not a str.
            ModelMismatchError: ``model`` is given and is not this space's model.
        """
        if model is not None and not isinstance(model, str):
            raise InvalidArgumentError(
                f"model must be a string (a model name) or None; got {type(model).__name__}"
            )
        if model is not None and model != self.model:
            raise ModelMismatchError(
                f"vectors from model {model!r} cannot enter a collection of model "
                f"{self.model!r}: their latent spaces are not comparable"
            )

    def prepare(
        self, vectors: object, *, rows: int | None = None, copy: bool = True
    ) -> FloatMatrix:
        """Validate vectors for this space and return a new float32 (n, d) array.

        A single vector of shape (d,) is a batch of one. In a normalized space the
        result has unit rows. The caller's array is never modified.

        Args:
            vectors: Array-like of shape (n, d) or (d,).
            rows: The number of rows expected, when the caller knows it.
            copy: False lets one vector that needs no change come back as the caller's
                array itself, or a view of it (queries: they are never written to).

        Returns:
            A C-contiguous float32 array of shape (n, d), owned by the caller.

        Raises:
            InvalidVectorError: non-numeric, ragged, empty, NaN/inf, or a zero vector in
                a normalized space.
            DimensionMismatchError: the width is not ``dimension``.
        """
        if type(vectors) is np.ndarray and vectors.size == self.dimension and rows in (None, 1):
            one = self._prepare_one(vectors, copy=copy)
            if one is not None:
                return one
        matrix = as_vector_batch(vectors, directions=self.normalized)
        if matrix.shape[1] != self.dimension:
            raise DimensionMismatchError(
                f"expected vectors of dimension {self.dimension} "
                f"(model {self.model!r}); got dimension {matrix.shape[1]}"
            )
        if rows is not None and matrix.shape[0] != rows:
            raise InvalidArgumentError(
                f"expected {rows} vectors, one per id; got {matrix.shape[0]}"
            )
        if self.normalized:
            _normalize_rows(matrix, self.metric)
        else:
            _check_magnitude(matrix)
        return matrix

    def _prepare_one(self, vector: npt.NDArray[Any], *, copy: bool) -> FloatMatrix | None:
        """:meth:`prepare` of one float32 vector, (d,) or (1, d), in few numpy calls (a
        query's path); None sends anything unusual (non-finite, zero, other dtypes or
        shapes) to the general path, which names the problem."""
        if vector.dtype != _FLOAT32 or vector.ndim > 2 or vector.shape[-1] != self.dimension:
            return None
        squared = float(np.vdot(vector, vector))  # finite only if every value is
        if (
            not math.isfinite(squared)
            or squared > _MAX_SQUARED_NORM
            or (self.normalized and not _SAFE_SQUARED[0] <= squared <= _SAFE_SQUARED[1])
        ):
            return None
        if not self.normalized or abs(squared - 1.0) <= _UNIT_TOLERANCE:  # unit already
            if not copy and vector.flags.c_contiguous:
                return vector if vector.ndim == 2 else vector.reshape(1, -1)
            return np.array(vector, dtype=np.float32, order="C", copy=True).reshape(1, -1)
        scaled: FloatMatrix = vector * np.float32(1.0 / math.sqrt(squared))  # a new array
        return scaled if scaled.ndim == 2 else scaled.reshape(1, -1)


def _check_magnitude(matrix: FloatMatrix) -> None:
    """Refuse rows of a finite float32 (n, d) matrix whose squared norm is past
    ``_MAX_SQUARED_NORM`` (their distances would overflow to inf).

    Raises:
        InvalidVectorError: naming the first such row.
    """
    peak = np.maximum(matrix.max(axis=1), -matrix.min(axis=1)).astype(np.float64)
    suspect = np.flatnonzero(peak * peak * matrix.shape[1] > _MAX_SQUARED_NORM)
    if not suspect.size:
        return
    rows = matrix[suspect].astype(np.float64)
    squared = np.einsum("ij,ij->i", rows, rows)
    over = suspect[squared > _MAX_SQUARED_NORM]
    if over.size:
        row = int(over[0])
        raise InvalidVectorError(
            f"vector at position {row} has a squared norm of "
            f"{float(squared[suspect == row][0]):.3g}, past the {_MAX_SQUARED_NORM:.3g} "
            "that float32 distances can hold in an unnormalized space: scale it down"
        )


def _normalize_rows(matrix: FloatMatrix, metric: str) -> None:
    """Scale each row of a finite float32 (n, d) matrix to unit length, in place.

    Rows unit length already stay as they are, bit for bit (as one query does):
    preparing stored vectors again, e.g. copying them, changes nothing. Rows whose
    squared norm would overflow or underflow float32 are divided by their largest
    component first, in float64.

    Raises:
        InvalidVectorError: a row is all zeros.
    """
    # einsum: half of np.linalg.norm's time on one query (~10 of 20 us).
    with np.errstate(over="ignore", under="ignore"):
        squared = np.einsum("ij,ij->i", matrix, matrix)
    safe = (squared >= _SAFE_SQUARED[0]) & (squared <= _SAFE_SQUARED[1])
    scale = safe & (np.abs(squared - 1.0) > _UNIT_TOLERANCE)
    if scale.all():
        matrix /= np.sqrt(squared)[:, None]
    elif scale.any():
        matrix[scale] /= np.sqrt(squared[scale])[:, None]
    if safe.all():
        return
    careful = np.flatnonzero(~safe)
    rows = matrix[careful].astype(np.float64)
    peak = np.abs(rows).max(axis=1)
    if not peak.all():
        zero = int(careful[np.flatnonzero(peak == 0)[0]])
        raise InvalidVectorError(
            f"vector at position {zero} is all zeros and cannot be normalized for a {metric} space"
        )
    rows /= peak[:, None]  # the largest component is now +-1: no overflow, no underflow
    rows /= np.sqrt(np.einsum("ij,ij->i", rows, rows))[:, None]
    matrix[careful] = rows


def as_vector_batch(vectors: object, *, directions: bool = False) -> FloatMatrix:
    """Convert an array-like to a new finite float32 (n, d) array (a (d,) vector → (1, d)).

    Args:
        vectors: Array-like of shape (n, d) or (d,).
        directions: Only each row's direction matters (a normalized space): rows of a
            wider float type beyond float32's comfortable range are scaled into it
            before the cast, instead of becoming inf or zeros.

    Raises:
        InvalidVectorError: non-numeric, ragged, wrong rank, empty, or not finite.
    """
    try:
        array = np.asarray(vectors)
    except ValueError as error:  # numpy refuses ragged nested lists
        raise InvalidVectorError(f"vectors must be a rectangular numeric array: {error}") from None
    if array.dtype.kind not in "iuf":
        raise InvalidVectorError(
            f"vectors must be numeric (int or float); got an array of dtype {array.dtype}"
        )
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise InvalidVectorError(
            f"vectors must have shape (n, d) or (d,); got shape {tuple(array.shape)}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidVectorError(f"vectors must not be empty; got shape {tuple(array.shape)}")
    if directions and array.dtype.kind == "f" and array.dtype.itemsize > 4:
        array = _scale_wide_rows(array)
    # Always a copy: we normalize in place later and must never touch the caller's array.
    with np.errstate(over="ignore"):  # values past float32's range become inf, refused below
        matrix = np.array(array, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(matrix).all():  # one pass; rows only to name the bad one
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise InvalidVectorError(
            f"vector at position {bad} contains NaN or infinity (after conversion to float32)"
        )
    return matrix


def _scale_wide_rows(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``array`` (float64 or wider, (n, d)) with each finite row whose largest component
    is outside ``_SAFE_PEAK`` divided by that component (a new array; the caller's is
    never modified). Non-finite rows are left for the caller to refuse."""
    with np.errstate(invalid="ignore"):
        peak = np.abs(array).max(axis=1)
    wide = np.isfinite(peak) & (peak > 0) & ((peak < _SAFE_PEAK[0]) | (peak > _SAFE_PEAK[1]))
    if not wide.any():
        return array
    scaled = np.array(array, dtype=np.float64, copy=True)
    scaled[wide] /= peak[wide, None]
    return scaled
