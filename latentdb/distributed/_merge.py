"""Putting the shards' answers together: pages one after another, top k by distance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.api import GetResult, QueryResult
from latentdb.query import QueryPlan

__all__ = ["assemble", "concatenate", "merge", "merge_plans", "slice_page"]


def assemble(
    picked: Sequence[tuple[GetResult, int]], fields: frozenset[str], dimension: int
) -> GetResult:
    """A GetResult of the given (result, row) pairs, in that order."""
    vectors = None
    if "vectors" in fields:
        vectors = np.empty((len(picked), dimension), dtype=np.float32)
        for position, (result, row) in enumerate(picked):
            assert result.vectors is not None
            vectors[position] = result.vectors[row]
    return GetResult(
        ids=[result.ids[row] for result, row in picked],
        vectors=vectors,
        documents=[_field(r.documents)[row] for r, row in picked]
        if "documents" in fields
        else None,
        metadatas=[_field(r.metadatas)[row] for r, row in picked]
        if "metadatas" in fields
        else None,
    )


def _field(values: list[Any] | None) -> list[Any]:
    """A field the shards were asked for (so never None)."""
    assert values is not None
    return values


def concatenate(parts: Sequence[GetResult], fields: frozenset[str], dimension: int) -> GetResult:
    """Pages one after another."""
    return assemble([(part, row) for part in parts for row in range(len(part))], fields, dimension)


def slice_page(result: GetResult, start: int, stop: int) -> GetResult:
    """Records ``start`` to ``stop`` of a page."""
    return GetResult(
        ids=result.ids[start:stop],
        vectors=None if result.vectors is None else result.vectors[start:stop],
        documents=None if result.documents is None else result.documents[start:stop],
        metadatas=None if result.metadatas is None else result.metadatas[start:stop],
    )


def merge(
    answers: Sequence[QueryResult], k: int, count: int, fields: frozenset[str]
) -> QueryResult:
    """The ``k`` nearest of the shards' answers to each of ``count`` queries."""
    ids: list[list[str]] = []
    distances: list[npt.NDArray[np.float32]] = []
    documents: list[list[str | None]] = []
    metadatas: list[list[Any]] = []
    vectors: list[npt.NDArray[np.float32]] = []
    for query in range(count):
        candidates = np.concatenate(
            [answer.distances[query] for answer in answers if answer.distances is not None]
        )
        order = np.argsort(candidates, kind="stable")[:k]
        owners = [(answer, row) for answer in answers for row in range(len(answer.ids[query]))]
        chosen = [owners[position] for position in order.tolist()]
        ids.append([answer.ids[query][row] for answer, row in chosen])
        distances.append(candidates[order])
        if "documents" in fields:
            documents.append([answer.documents[query][row] for answer, row in chosen])
        if "metadatas" in fields:
            metadatas.append([answer.metadatas[query][row] for answer, row in chosen])
        if "vectors" in fields:
            # The width from the shards' answers: with no hit there is nothing to infer
            # it from (reshape(0, -1) raises).
            width_of = [a.vectors[query].shape[1] for a in answers if a.vectors is not None]
            vectors.append(
                np.array(
                    [answer.vectors[query][row] for answer, row in chosen],
                    dtype=np.float32,
                ).reshape(len(chosen), width_of[0] if width_of else 0)
            )
    width = min((len(row) for row in ids), default=0)
    matrix = np.array([row[:width] for row in distances], dtype=np.float32).reshape(count, width)
    return QueryResult(
        ids=ids,
        distances=matrix if "distances" in fields else None,
        documents=documents if "documents" in fields else None,
        metadatas=metadatas if "metadatas" in fields else None,
        vectors=vectors if "vectors" in fields else None,
    )


def merge_plans(plans: Sequence[QueryPlan]) -> QueryPlan:
    """One plan for the shards' plans: counts summed, the slowest shard's timings."""
    strategies = sorted({plan.strategy for plan in plans})
    params: dict[str, int] = {}
    for plan in plans:
        for key, value in plan.params.items():
            params[key] = max(params.get(key, value), value)
    timings: dict[str, float] = {}
    for plan in plans:
        for key, spent in plan.timings_ms.items():
            timings[key] = max(timings.get(key, spent), spent)
    estimated = [plan.estimated for plan in plans]
    allowed = [plan.allowed for plan in plans]
    return QueryPlan(
        strategy="+".join(strategies),
        rows=sum(plan.rows for plan in plans),
        estimated=None if None in estimated else sum(e for e in estimated if e is not None),
        allowed=None if None in allowed else sum(a for a in allowed if a is not None),
        params=params,
        exact_fallbacks=sum(plan.exact_fallbacks for plan in plans),
        filter_source=plans[0].filter_source if plans else None,
        timings_ms=timings,
    )
