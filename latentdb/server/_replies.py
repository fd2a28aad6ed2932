"""Reply bodies of the HTTP API, for the OpenAPI document.

Routes answer with :func:`~latentdb.server._plumbing.json_response` (orjson, arrays in
the form the request asked for), so these models document the replies and are not used
to build them; the fuzz tests check every reply against them. The models of the
interface's result types are derived from their dataclasses (:func:`reply_of`), so a
field added to ``IndexStatus`` or ``SpaceReport`` is documented without a change here.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, create_model

from latentdb.api import (
    IndexStatus,
    MigrationStatus,
    QueryPlan,
    RecallReport,
    SpaceComparison,
    SpaceMap,
    SpaceReport,
)
from latentdb.server._models import BinaryArray
from latentdb.space import LatentSpace

__all__ = [
    "AliasReply",
    "ClearedReply",
    "CollectionReply",
    "CountReply",
    "DeletedCountReply",
    "DeletedReply",
    "GetReply",
    "HealthReply",
    "IndexStatusReply",
    "MigrationEntry",
    "MigrationReply",
    "OptimizedReply",
    "QueryReply",
    "RecallReportReply",
    "RecallTargetReply",
    "ScrollReply",
    "SpaceComparisonReply",
    "SpaceMapReply",
    "SpaceReportReply",
    "WrittenReply",
    "reply_of",
]

# An (n, d) array in the form the request's X-LatentDB-Vectors header names.
Matrix = list[list[float]] | BinaryArray


def reply_of(cls: type[Any]) -> type[BaseModel]:
    """A model of ``dataclasses.asdict(cls(...))`` as the server sends it: nested
    dataclasses become models, arrays nested lists, and every float may be null (JSON
    has no inf or nan: orjson and ``to_dict()`` send null)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {
        field.name: (_json_type(hints[field.name]), ...) for field in dataclasses.fields(cls)
    }
    model: type[BaseModel] = create_model(
        f"{cls.__name__}Reply", __doc__=f"``{cls.__name__}`` as JSON.", **fields
    )
    return model


def _json_type(hint: Any) -> Any:
    if hint is float:
        return float | None
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return reply_of(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is np.ndarray or origin is np.ndarray:
        return list[list[float | None]]
    if origin is None or origin is Literal or not args:
        return hint
    converted = tuple(_json_type(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, converted)
    return origin[converted if len(converted) > 1 else converted[0]]


SpaceReply = reply_of(LatentSpace)
IndexStatusReply = reply_of(IndexStatus)
RecallReportReply = reply_of(RecallReport)
MigrationStatusReply = reply_of(MigrationStatus)
QueryPlanReply = reply_of(QueryPlan)
SpaceReportReply = reply_of(SpaceReport)
SpaceMapReply = reply_of(SpaceMap)
SpaceComparisonReply = reply_of(SpaceComparison)


class HealthReply(BaseModel):
    """The server is up, and which latentdb it runs."""

    status: Literal["ok"]
    version: str


class CollectionReply(BaseModel):
    """A collection, as the client needs it to stand in for one."""

    name: str
    alias: str | None = Field(description="The alias it was opened by, if any.")
    space: SpaceReply  # type: ignore[valid-type]
    embedder: str | None
    recall_target: float
    require_model: bool


class DeletedReply(BaseModel):
    """The collection or alias deleted."""

    deleted: str


class DeletedCountReply(BaseModel):
    """How many records ``delete`` removed."""

    deleted: int


class AliasReply(BaseModel):
    """An alias and the collection it names."""

    alias: str
    collection: str


class MigrationReply(BaseModel):
    """A migration and where it stands."""

    id: int
    running: bool
    status: MigrationStatusReply  # type: ignore[valid-type]


class MigrationEntry(BaseModel):
    """A migration in the list of them."""

    id: int
    status: MigrationStatusReply  # type: ignore[valid-type]


class WrittenReply(BaseModel):
    """The write is committed."""

    written: Literal[True]


class OptimizedReply(BaseModel):
    """The index is built and tuned."""

    optimized: Literal[True]


class CountReply(BaseModel):
    """How many records the collection holds."""

    count: int


class ClearedReply(BaseModel):
    """How many recorded queries were forgotten."""

    cleared: int


class RecallTargetReply(BaseModel):
    """The recall target now set."""

    recall_target: float


class GetReply(BaseModel):
    """``GetResult``: one entry per record; fields not included are null."""

    ids: list[str]
    vectors: Matrix | None
    documents: list[str | None] | None
    metadatas: list[dict[str, Any] | None] | None


class ScrollReply(BaseModel):
    """One page of a scroll, and the cursor of the next (null after the last)."""

    page: GetReply | None
    after: str | None


class QueryReply(BaseModel):
    """``QueryResult``: a row per query, k entries per row (fewer when fewer match)."""

    ids: list[list[str]]
    distances: Matrix | None = Field(description="Smaller is closer.")
    documents: list[list[str | None]] | None
    metadatas: list[list[dict[str, Any] | None]] | None
    vectors: list[Matrix] | None
    plan: QueryPlanReply | None  # type: ignore[valid-type]
    scores: Matrix | None = Field(description="Hybrid search: the fused score, larger is better.")
