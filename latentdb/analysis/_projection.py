"""2-D projections of a latent space: PCA (faiss), UMAP (umap-learn), t-SNE (scikit-learn)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.errors import InvalidArgumentError

__all__ = ["PROJECTIONS", "SpaceMap", "project"]

FloatMatrix = npt.NDArray[np.float32]
PROJECTIONS = ("pca", "umap", "tsne")
_EXTRA = "pip install 'latentdb[maps]'"


@dataclass(frozen=True)
class SpaceMap:
    """Records of a collection placed on a plane (:meth:`Collection.map`).

    Attributes:
        ids: The ids of the projected records, one per row of ``coordinates``.
        coordinates: float32 (n, 2).
        documents: The records' documents (None where they have none).
        metadatas: The records' metadata (None where they have none).
        method: "pca", "umap" or "tsne".
        total: Records that matched (``ids`` is a fixed-seed sample when fewer).
        collection: The collection's name.
    """

    ids: list[str]
    coordinates: FloatMatrix
    documents: list[str | None]
    metadatas: list[dict[str, Any] | None]
    method: str
    total: int
    collection: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready lists."""
        return {
            "ids": self.ids,
            "coordinates": self.coordinates.tolist(),
            "documents": self.documents,
            "metadatas": self.metadatas,
            "method": self.method,
            "total": self.total,
            "collection": self.collection,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpaceMap:
        """Rebuild a map from :meth:`to_dict`'s output."""
        coordinates = np.asarray(data["coordinates"], dtype=np.float32).reshape(-1, 2)
        return cls(
            ids=list(data["ids"]),
            coordinates=coordinates,
            documents=list(data["documents"]),
            metadatas=list(data["metadatas"]),
            method=str(data["method"]),
            total=int(data["total"]),
            collection=str(data["collection"]),
        )


def check_method(method: object) -> str:
    """The method name, or an error naming the ones there are."""
    if method not in PROJECTIONS:
        raise InvalidArgumentError(
            f"method must be one of {', '.join(PROJECTIONS)}; got {method!r}"
        )
    return str(method)


def project(vectors: object, *, method: str, metric: str = "cosine", seed: int = 0) -> FloatMatrix:
    """Place rows on a plane.

    Args:
        vectors: float32 (n, d), n >= 3 (t-SNE and UMAP need more than a handful).
        method: "pca" (linear, fast, faithful to global distances), "umap" or "tsne"
            (non-linear, keep neighbourhoods: clusters show, distances between them
            mean little).
        metric: The space's metric; "cosine" makes UMAP and t-SNE use cosine distance.
        seed: Fixed randomness: the same input gives the same map.

    Returns:
        float32 (n, 2).

    Raises:
        InvalidArgumentError: unknown method, or too few rows.
        ImportError: umap-learn or scikit-learn is missing (the ``maps`` extra).
    """
    method = check_method(method)
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] < 3 or rows.shape[1] < 2:
        raise InvalidArgumentError(
            "a map needs at least 3 vectors of at least 2 dimensions; got shape "
            f"{tuple(rows.shape)}"
        )
    if method == "pca":
        return _pca(rows)
    distance = "cosine" if metric == "cosine" else "euclidean"
    if method == "umap":
        try:
            with warnings.catch_warnings():
                # "Tensorflow not installed; ParametricUMAP will be unavailable": not used.
                warnings.simplefilter("ignore", ImportWarning)
                import umap
        except ImportError as error:
            raise ImportError(f"UMAP maps need umap-learn: {_EXTRA}") from error
        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=min(15, rows.shape[0] - 1),
            metric=distance,
            random_state=seed,
            n_jobs=1,  # a random_state forces one thread anyway; saying so stops a warning
            # Its spectral start needs more rows than components + 1 (scipy's eigsh
            # raises TypeError on 3 rows: found by bench/fuzz_server.py, issue 15).
            init="spectral" if rows.shape[0] > 3 else "random",
        )
        with warnings.catch_warnings():
            # umap warns that its spectral layout fell back to random on tiny inputs.
            warnings.simplefilter("ignore", UserWarning)
            out = reducer.fit_transform(rows)
    else:
        try:
            from sklearn.manifold import TSNE
        except ImportError as error:
            raise ImportError(f"t-SNE maps need scikit-learn: {_EXTRA}") from error
        tsne = TSNE(
            n_components=2,
            perplexity=float(min(30.0, (rows.shape[0] - 1) / 3)),
            metric=distance,
            init="pca",
            random_state=seed,
        )
        out = tsne.fit_transform(rows)
    return np.ascontiguousarray(out, dtype=np.float32)


def _pca(rows: FloatMatrix) -> FloatMatrix:
    import faiss

    pca = faiss.PCAMatrix(rows.shape[1], 2)
    pca.train(rows)
    return np.ascontiguousarray(pca.apply(rows), dtype=np.float32)
