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
            ModelMismatchError: ``model`` is given and is not this space's model.
        """
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
        matrix = as_vector_batch(vectors)
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
            # einsum: half of np.linalg.norm's time on one query (~10 of 20 us).
            squared = np.einsum("ij,ij->i", matrix, matrix)
            if not squared.all():
                zero = np.flatnonzero(squared == 0)
                raise InvalidVectorError(
                    f"vector at position {int(zero[0])} is all zeros and cannot be normalized "
                    f"for a {self.metric} space"
                )
            # Rows unit length already stay as they are, bit for bit (as one query does):
            # preparing stored vectors again, e.g. copying them, changes nothing.
            off = np.abs(squared - 1.0) > _UNIT_TOLERANCE
            if off.all():
                matrix /= np.sqrt(squared)[:, None]
            elif off.any():
                matrix[off] /= np.sqrt(squared[off])[:, None]
        return matrix

    def _prepare_one(self, vector: npt.NDArray[Any], *, copy: bool) -> FloatMatrix | None:
        """:meth:`prepare` of one float32 vector, (d,) or (1, d), in few numpy calls (a
        query's path); None sends anything unusual (non-finite, zero, other dtypes or
        shapes) to the general path, which names the problem."""
        if vector.dtype != _FLOAT32 or vector.ndim > 2 or vector.shape[-1] != self.dimension:
            return None
        squared = float(np.vdot(vector, vector))  # finite only if every value is
        if not math.isfinite(squared) or (self.normalized and squared == 0.0):
            return None
        if not self.normalized or abs(squared - 1.0) <= _UNIT_TOLERANCE:  # unit already
            if not copy and vector.flags.c_contiguous:
                return vector if vector.ndim == 2 else vector.reshape(1, -1)
            return np.array(vector, dtype=np.float32, order="C", copy=True).reshape(1, -1)
        scaled: FloatMatrix = vector * np.float32(1.0 / math.sqrt(squared))  # a new array
        return scaled if scaled.ndim == 2 else scaled.reshape(1, -1)


def as_vector_batch(vectors: object) -> FloatMatrix:
    """Convert an array-like to a new finite float32 (n, d) array (a (d,) vector → (1, d)).

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
    # Always a copy: we normalize in place later and must never touch the caller's array.
    with np.errstate(over="ignore"):  # values past float32's range become inf, refused below
        matrix = np.array(array, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(matrix).all():  # one pass; rows only to name the bad one
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise InvalidVectorError(
            f"vector at position {bad} contains NaN or infinity (after conversion to float32)"
        )
    return matrix
