"""Relevance (larger is better) from latentdb distances (smaller is closer), per metric,
as the frameworks expect it."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["relevance_function"]


def relevance_function(metric: str) -> Callable[[float], float]:
    """How a distance in ``metric`` becomes a relevance score.

    cosine: 1 - d, the cosine similarity (LangChain's cosine relevance); l2: 1 - √d/√2,
    since latentdb's l2 distance is squared (in [0, 1] for unit vectors, as LangChain's
    Euclidean relevance); ip: -d, the inner product itself.
    """
    if metric == "cosine":
        return _cosine
    if metric == "l2":
        return _squared_euclidean
    return _inner_product


def _cosine(distance: float) -> float:
    return 1.0 - distance


def _squared_euclidean(distance: float) -> float:
    return 1.0 - math.sqrt(max(distance, 0.0)) / math.sqrt(2)


def _inner_product(distance: float) -> float:
    return -distance
