"""Hybrid search: the vector ranking and the full-text (BM25) ranking of the same query
text, fused by reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["RRF_CONSTANT", "candidates", "fuse"]

RRF_CONSTANT = 60  # the k of RRF: 1 / (60 + rank), as in the paper and most systems
KeyArray = npt.NDArray[np.int64]


def candidates(k: int) -> int:
    """How deep each ranking is read before fusing."""
    return max(50, 5 * k)


def fuse(
    vector_keys: KeyArray,
    text_keys: Sequence[int],
    k: int,
    weights: tuple[float, float],
) -> tuple[list[int], list[float]]:
    """The top ``k`` keys by weighted reciprocal-rank score, and their scores.

    Args:
        vector_keys: Keys nearest first (-1 for none).
        text_keys: Keys best BM25 first.
        k: How many to keep.
        weights: (vector weight, text weight).
    """
    scores: dict[int, float] = {}
    for weight, ranking in ((weights[0], vector_keys.tolist()), (weights[1], list(text_keys))):
        if weight == 0:
            continue
        for rank, key in enumerate(ranking, start=1):
            if key >= 0:
                scores[key] = scores.get(key, 0.0) + weight / (RRF_CONSTANT + rank)
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [key for key, _ in best], [score for _, score in best]
