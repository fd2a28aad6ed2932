"""Request bodies of the HTTP API, typed for the OpenAPI document, with the interface's
defaults.

Each field has its real type (what JSON carries for the argument), so ``/openapi.json``
describes every field, and its default is read from the signature of the method it
feeds (``latentdb.api.Collection.query`` and so on), so the server cannot drift from
the interface. The types document and are not enforced (``SkipValidation``): the
implementation checks every argument and raises the same named error
(``DimensionMismatchError``, ``FilterError``, ``InvalidVectorError``, ...) with the same
message over HTTP as in process. Unknown fields are refused, so a misspelled argument is
an error rather than ignored.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from latentdb.api import Collection, Database
from latentdb.index import INDEX_KINDS

__all__ = [
    "AliasBody",
    "AnalyzeBody",
    "BinaryArray",
    "CreateAliasBody",
    "CreateCollectionBody",
    "DeleteBody",
    "EvaluateBody",
    "GetBody",
    "MapBody",
    "MigrateBody",
    "QueryBody",
    "RecallTargetBody",
    "ScrollBody",
    "WriteBody",
    "interface_default",
]

VECTORS = (
    "A list of numbers (one vector), a list of lists (n, d), or the binary form "
    '{"dtype": "float32", "shape": [n, d], "data": base64 of little-endian float32}.'
)
WHERE = "Metadata filter ($eq $ne $gt $gte $lt $lte $in $nin $and $or $not $exists $contains)."
WHERE_DOCUMENT = "Document filter: $contains, $not_contains, or full-text $match."
IMAGES = "Images as base64 of their encoded bytes (PNG, JPEG, ...), one per id or query."


class BinaryArray(BaseModel):
    """An array in the binary wire form: its little-endian float32 bytes in base64."""

    dtype: Literal["float32"] = "float32"
    shape: list[int] = Field(description="[n, d] for n vectors of d dimensions.")
    data: str = Field(description="Base64 of the little-endian float32 bytes, row by row.")


Ids = list[str] | str
Vectors = list[float] | list[list[float]] | BinaryArray
Where = dict[str, Any]
GetField = Literal["documents", "metadatas", "vectors"]
QueryField = Literal["distances", "documents", "metadatas", "vectors"]


def interface_default(method: Callable[..., Any], parameter: str) -> Any:
    """The default of ``parameter`` in the interface's ``method`` (its signature)."""
    return inspect.signature(method).parameters[parameter].default


def _argument(method: Callable[..., Any], parameter: str, description: str | None = None) -> Any:
    """A field that feeds ``parameter`` of ``method``, with the interface's default."""
    return Field(interface_default(method, parameter), description=description)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateCollectionBody(Body):
    """Arguments of ``create_collection`` / ``get_or_create_collection``."""

    name: SkipValidation[str] = Field(description="1-128 letters, digits, '.', '_', '-'.")
    dimension: SkipValidation[int | None] = _argument(
        Database.create_collection, "dimension", "Required without an embedder."
    )
    metric: SkipValidation[Literal["cosine", "l2", "ip"]] = _argument(
        Database.create_collection, "metric", "cosine, l2 or ip."
    )
    embedder: SkipValidation[str | None] = _argument(
        Database.create_collection, "embedder", "A registered embedder, or null."
    )
    model: SkipValidation[str | None] = _argument(
        Database.create_collection, "model", "Where the vectors come from (without an embedder)."
    )
    index: SkipValidation[str | dict[str, Any]] = _argument(
        Database.create_collection,
        "index",
        f"{', '.join(INDEX_KINDS)}, or the fields of an IndexSpec.",
    )
    recall_target: SkipValidation[float] = _argument(
        Database.create_collection, "recall_target", "Recall@10 approximate search is tuned to."
    )
    reduce: SkipValidation[int | None] = _argument(
        Database.create_collection, "reduce", "Index a PCA projection to this many dimensions."
    )
    require_model: SkipValidation[bool] = _argument(
        Database.create_collection,
        "require_model",
        "Writes of vectors must name their model (model=, the collection's); false "
        "accepts vectors without one. True needs model= without an embedder.",
    )
    get_or_create: bool = Field(False, description="Return the collection if it exists.")


class CreateAliasBody(Body):
    """Arguments of ``create_alias``."""

    alias: SkipValidation[str]
    collection: SkipValidation[str]


class AliasBody(Body):
    """The collection an alias is switched to."""

    collection: SkipValidation[str]


class MigrateBody(Body):
    """Arguments of ``migrate`` (always in the background on the server)."""

    name: SkipValidation[str]
    embedder: SkipValidation[str | None] = _argument(Database.migrate, "embedder")
    reduce: SkipValidation[int | None] = _argument(Database.migrate, "reduce")
    new_name: SkipValidation[str | None] = _argument(Database.migrate, "new_name")


class WriteBody(Body):
    """Arguments of ``add``, ``upsert`` and ``update`` (their signatures are one)."""

    ids: SkipValidation[Ids] = Field(description="String ids (or one string).")
    vectors: SkipValidation[Vectors | None] = _argument(Collection.add, "vectors", VECTORS)
    documents: SkipValidation[list[str | None] | None] = _argument(Collection.add, "documents")
    metadatas: SkipValidation[list[dict[str, Any] | None] | None] = _argument(
        Collection.add, "metadatas"
    )
    model: SkipValidation[str | None] = _argument(Collection.add, "model")
    images: SkipValidation[list[str] | None] = _argument(Collection.add, "images", IMAGES)


class DeleteBody(Body):
    """Arguments of ``delete``."""

    ids: SkipValidation[Ids | None] = _argument(Collection.delete, "ids")
    where: SkipValidation[Where | None] = _argument(Collection.delete, "where", WHERE)
    where_document: SkipValidation[Where | None] = _argument(
        Collection.delete, "where_document", WHERE_DOCUMENT
    )


class GetBody(Body):
    """Arguments of ``get``."""

    ids: SkipValidation[Ids | None] = _argument(Collection.get, "ids")
    where: SkipValidation[Where | None] = _argument(Collection.get, "where", WHERE)
    limit: SkipValidation[int | None] = _argument(Collection.get, "limit")
    offset: SkipValidation[int] = _argument(Collection.get, "offset")
    include: SkipValidation[list[GetField]] = _argument(Collection.get, "include")
    where_document: SkipValidation[Where | None] = _argument(
        Collection.get, "where_document", WHERE_DOCUMENT
    )


class ScrollBody(Body):
    """One page of ``scroll``: the first without ``after``, the next with the cursor the
    previous page returned."""

    batch: SkipValidation[int] = _argument(Collection.scroll, "batch")
    where: SkipValidation[Where | None] = _argument(Collection.scroll, "where", WHERE)
    where_document: SkipValidation[Where | None] = _argument(
        Collection.scroll, "where_document", WHERE_DOCUMENT
    )
    include: SkipValidation[list[GetField]] = _argument(Collection.scroll, "include")
    after: str | None = Field(None, description="The cursor the previous page returned.")


class QueryBody(Body):
    """Arguments of ``query``."""

    vectors: SkipValidation[Vectors | None] = _argument(Collection.query, "vectors", VECTORS)
    texts: SkipValidation[list[str] | str | None] = _argument(Collection.query, "texts")
    k: SkipValidation[int] = _argument(Collection.query, "k")
    where: SkipValidation[Where | None] = _argument(Collection.query, "where", WHERE)
    include: SkipValidation[list[QueryField]] = _argument(Collection.query, "include")
    exact: SkipValidation[bool] = _argument(Collection.query, "exact")
    model: SkipValidation[str | None] = _argument(Collection.query, "model")
    params: SkipValidation[dict[str, int] | None] = _argument(
        Collection.query, "params", 'Search knobs for this call: {"ef": 128}.'
    )
    images: SkipValidation[list[str] | None] = _argument(Collection.query, "images", IMAGES)
    explain: SkipValidation[bool] = _argument(Collection.query, "explain")
    where_document: SkipValidation[Where | None] = _argument(
        Collection.query, "where_document", WHERE_DOCUMENT
    )
    hybrid: SkipValidation[bool] = _argument(Collection.query, "hybrid")
    hybrid_weights: SkipValidation[tuple[float, float]] = _argument(
        Collection.query, "hybrid_weights"
    )


class EvaluateBody(Body):
    """Arguments of ``evaluate``."""

    queries: SkipValidation[Vectors | None] = _argument(Collection.evaluate, "queries", VECTORS)
    k: SkipValidation[int] = _argument(Collection.evaluate, "k")
    sample: SkipValidation[int] = _argument(Collection.evaluate, "sample")


class AnalyzeBody(Body):
    """Arguments of ``analyze``."""

    sample: SkipValidation[int] = _argument(Collection.analyze, "sample")
    k: SkipValidation[int] = _argument(Collection.analyze, "k")


class MapBody(Body):
    """Arguments of ``map`` (and ``project``)."""

    method: SkipValidation[Literal["pca", "umap", "tsne"]] = _argument(
        Collection.map, "method", "pca, umap or tsne."
    )
    sample: SkipValidation[int] = _argument(Collection.map, "sample")
    where: SkipValidation[Where | None] = _argument(Collection.map, "where", WHERE)


class RecallTargetBody(Body):
    """Argument of ``set_recall_target``."""

    target: SkipValidation[float]
