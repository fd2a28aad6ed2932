"""What reads return: frozen dataclasses of lists and numpy arrays."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.query import QueryPlan

__all__ = ["GetResult", "QueryResult", "RecallReport", "query_result"]

Metadata = dict[str, str | int | float | bool]


@dataclass(frozen=True)
class GetResult:
    """Records read by id or filter.

    Attributes:
        ids: The ids, in the order asked for (or insertion order).
        vectors: float32 (n, d) when ``include`` named "vectors", else None.
        documents: One document (or None) per id when included, else None.
        metadatas: One metadata dict (or None) per id when included, else None.
    """

    ids: list[str]
    vectors: npt.NDArray[np.float32] | None = None
    documents: list[str | None] | None = None
    metadatas: list[Metadata | None] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class QueryResult:
    """Nearest neighbours of each query, nearest first.

    Attributes:
        ids: One list per query of up to k ids.
        distances: float32 (nq, k') with k' <= k, smaller is closer, when included.
        documents: Per query, the documents of the hits, when included.
        metadatas: Per query, the metadata of the hits, when included.
        vectors: Per query, float32 (k', d) stored vectors of the hits, when included.
        plan: How the query was answered, with ``explain=True``.
        scores: With ``hybrid=True``, the fused reciprocal-rank score of each hit
            (larger is better; the hits are in this order).
    """

    ids: list[list[str]]
    distances: npt.NDArray[np.float32] | None = None
    documents: list[list[str | None]] | None = None
    metadatas: list[list[Metadata | None]] | None = None
    vectors: list[npt.NDArray[np.float32]] | None = None
    plan: QueryPlan | None = None
    scores: npt.NDArray[np.float32] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (JSON-ready)."""
        return {
            "ids": self.ids,
            "distances": None if self.distances is None else self.distances.tolist(),
            "documents": self.documents,
            "metadatas": self.metadatas,
            "vectors": None if self.vectors is None else [v.tolist() for v in self.vectors],
            "plan": None if self.plan is None else dataclasses.asdict(self.plan),
            "scores": None if self.scores is None else self.scores.tolist(),
        }


def query_result(
    ids: list[list[str]],
    distances: npt.NDArray[np.float32] | None,
    documents: list[list[str | None]] | None,
    metadatas: list[list[Metadata | None]] | None,
    vectors: list[npt.NDArray[np.float32]] | None,
) -> QueryResult:
    """``QueryResult(ids, distances, documents, metadatas, vectors)``, made without the
    frozen dataclass's ``object.__setattr__`` per field: 1 us instead of 3, on the path
    of every query."""
    result: QueryResult = object.__new__(QueryResult)
    result.__dict__.update(
        ids=ids,
        distances=distances,
        documents=documents,
        metadatas=metadatas,
        vectors=vectors,
        plan=None,
        scores=None,
    )
    return result


@dataclass(frozen=True)
class RecallReport:
    """How well approximate search does on a collection, measured now.

    Attributes:
        recall: Mean recall@k of the default (tuned) search against an exact scan of
            the same rows.
        qps: Approximate queries per second, one query at a time.
        exact_qps: Exact-scan queries per second, one query at a time.
        k: Neighbours per query.
        queries: Number of queries measured.
        source: Where the queries came from: "given queries"; "held-out rows", rows
            not in the ANN index (fresh writes, or the tuning sample before it joins
            the index), a fair stand-in for new queries; or "indexed rows", rows inside
            the index, which find themselves and their graph neighbours easily, so
            recall reads high (an hnsw setting at 0.97 on them gave 0.87 on new
            queries). Pass your own queries for a number to trust.
        kind: The index kind in use ("flat": everything exact).
        params: The search parameters used.
        recall_target: The collection's target.
        reduce: The dimension the index searches in, for a collection created with
            ``reduce=``; None when it searches the full vectors.
        recall_without_rerank: For a reduced collection: recall@k when only the
            reduced index's own top k are re-scored, with no extra candidates, which is
            what the reduction alone costs (``recall`` is with the tuned ``rerank``).
    """

    recall: float
    qps: float
    exact_qps: float
    k: int
    queries: int
    source: str
    kind: str
    params: dict[str, int]
    recall_target: float
    reduce: int | None = None
    recall_without_rerank: float | None = None
