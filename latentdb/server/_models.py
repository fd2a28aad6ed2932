"""Request bodies of the HTTP API, for the OpenAPI document.

Fields are loosely typed on purpose: the engine checks every argument and raises the
same named error (``DimensionMismatchError``, ``FilterError``, ...) it raises in
process, so a client sees one set of messages whichever transport it uses. Unknown
fields are refused, so a misspelled argument is an error rather than ignored.

The OpenAPI document still says what each field takes (``schema=``), for readers and
for the fuzzer, which then draws well-formed values of every size (tests/server).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

__all__ = [
    "AliasBody",
    "AnalyzeBody",
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
]

VECTORS = (
    "A list of numbers (one vector), a list of lists (n, d), or the binary form "
    '{"dtype": "float32", "shape": [n, d], "data": base64 of little-endian float32}.'
)
WHERE = "Metadata filter ($eq $ne $gt $gte $lt $lte $in $nin $and $or $not $exists $contains)."
WHERE_DOCUMENT = "Document filter: $contains, $not_contains, or full-text $match."
IMAGES = "Images as base64 of their encoded bytes (PNG, JPEG, ...), one per id or query."


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _documented(default: Any, schema: JsonDict, description: str | None = None) -> Any:
    """A field of any type (the engine checks it) documented as taking ``schema``."""
    return Field(default, description=description, json_schema_extra=schema)


def _nullable(schema: JsonDict) -> JsonDict:
    return {"anyOf": [schema, {"type": "null"}]}


_STRING: JsonDict = {"type": "string"}
_INTEGER: JsonDict = {"type": "integer"}
_NUMBER: JsonDict = {"type": "number"}
_BOOLEAN: JsonDict = {"type": "boolean"}
_IDS: JsonDict = {"anyOf": [_STRING, {"type": "array", "items": _STRING}]}
_NUMBERS: JsonDict = {"type": "array", "items": _NUMBER}
_BINARY: JsonDict = {
    "type": "object",
    "properties": {
        "dtype": {"type": "string", "enum": ["float32"]},
        "shape": {"type": "array", "items": _INTEGER},
        "data": _STRING,
    },
    "required": ["shape", "data"],
}
_VECTORS: JsonDict = _nullable({"anyOf": [_NUMBERS, {"type": "array", "items": _NUMBERS}, _BINARY]})
_WHERE: JsonDict = _nullable({"type": "object"})
_STRINGS: JsonDict = {"type": "array", "items": _STRING}
_OPTIONAL_STRINGS: JsonDict = _nullable({"type": "array", "items": _nullable(_STRING)})
_METADATAS: JsonDict = _nullable({"type": "array", "items": _nullable({"type": "object"})})
_GET_INCLUDE: JsonDict = {
    "type": "array",
    "items": {"type": "string", "enum": ["documents", "metadatas", "vectors"]},
}
_QUERY_INCLUDE: JsonDict = {
    "type": "array",
    "items": {"type": "string", "enum": ["distances", "documents", "metadatas", "vectors"]},
}


class CreateCollectionBody(Body):
    """Arguments of ``create_collection`` / ``get_or_create_collection``."""

    name: Any = Field(
        description="1-128 letters, digits, '.', '_', '-'.", json_schema_extra=_STRING
    )
    dimension: Any = _documented(None, _nullable(_INTEGER), "Required without an embedder.")
    metric: Any = _documented(
        "cosine", {"type": "string", "enum": ["cosine", "l2", "ip"]}, "cosine, l2 or ip."
    )
    embedder: Any = _documented("minilm", _nullable(_STRING), "A registered embedder, or null.")
    model: Any = _documented(
        None, _nullable(_STRING), "Where the vectors come from (without an embedder)."
    )
    index: Any = _documented(
        "auto",
        {"anyOf": [_STRING, {"type": "object"}]},
        "auto, flat, hnsw, hnsw-sq8, ivf, ivf-pq, or fields.",
    )
    recall_target: Any = _documented(0.95, _NUMBER, "Recall@10 approximate search is tuned to.")
    reduce: Any = _documented(
        None, _nullable(_INTEGER), "Index a PCA projection to this many dimensions."
    )
    require_model: Any = _documented(
        True,
        _BOOLEAN,
        "Writes of vectors must name their model (model=, the collection's); false "
        "accepts vectors without one. True needs model= without an embedder.",
    )
    get_or_create: bool = Field(False, description="Return the collection if it exists.")


class CreateAliasBody(Body):
    """Arguments of ``create_alias``."""

    alias: Any = Field(json_schema_extra=_STRING)
    collection: Any = Field(json_schema_extra=_STRING)


class AliasBody(Body):
    """The collection an alias is switched to."""

    collection: Any = Field(json_schema_extra=_STRING)


class MigrateBody(Body):
    """Arguments of ``migrate`` (always in the background on the server)."""

    name: Any = Field(json_schema_extra=_STRING)
    embedder: Any = _documented(None, _nullable(_STRING))
    reduce: Any = _documented(None, _nullable(_INTEGER))
    new_name: Any = _documented(None, _nullable(_STRING))


class WriteBody(Body):
    """Arguments of ``add``, ``upsert`` and ``update``."""

    ids: Any = Field(description="String ids (or one string).", json_schema_extra=_IDS)
    vectors: Any = _documented(None, _VECTORS, VECTORS)
    documents: Any = _documented(None, _OPTIONAL_STRINGS)
    metadatas: Any = _documented(None, _METADATAS)
    model: Any = _documented(None, _nullable(_STRING))
    images: Any = _documented(None, _nullable(_STRINGS), IMAGES)


class DeleteBody(Body):
    """Arguments of ``delete``."""

    ids: Any = _documented(None, _nullable(_IDS))
    where: Any = _documented(None, _WHERE, WHERE)
    where_document: Any = _documented(None, _WHERE, WHERE_DOCUMENT)


class GetBody(Body):
    """Arguments of ``get``."""

    ids: Any = _documented(None, _nullable(_IDS))
    where: Any = _documented(None, _WHERE, WHERE)
    limit: Any = _documented(None, _nullable(_INTEGER))
    offset: Any = _documented(0, _INTEGER)
    include: Any = _documented(["documents", "metadatas"], _GET_INCLUDE)
    where_document: Any = _documented(None, _WHERE, WHERE_DOCUMENT)


class ScrollBody(Body):
    """One page of ``scroll``: the first without ``after``, the next with the cursor the
    previous page returned."""

    batch: Any = _documented(1000, _INTEGER)
    where: Any = _documented(None, _WHERE, WHERE)
    where_document: Any = _documented(None, _WHERE, WHERE_DOCUMENT)
    include: Any = _documented(["documents", "metadatas"], _GET_INCLUDE)
    after: str | None = Field(None, description="The cursor the previous page returned.")


class QueryBody(Body):
    """Arguments of ``query``."""

    vectors: Any = _documented(None, _VECTORS, VECTORS)
    texts: Any = _documented(None, _nullable({"anyOf": [_STRING, _STRINGS]}))
    k: Any = _documented(10, _INTEGER)
    where: Any = _documented(None, _WHERE, WHERE)
    include: Any = _documented(["distances", "documents", "metadatas"], _QUERY_INCLUDE)
    exact: Any = _documented(False, _BOOLEAN)
    model: Any = _documented(None, _nullable(_STRING))
    params: Any = _documented(
        None,
        _nullable({"type": "object", "additionalProperties": _INTEGER}),
        'Search knobs for this call: {"ef": 128}.',
    )
    images: Any = _documented(None, _nullable(_STRINGS), IMAGES)
    explain: Any = _documented(False, _BOOLEAN)
    where_document: Any = _documented(None, _WHERE, WHERE_DOCUMENT)
    hybrid: Any = _documented(False, _BOOLEAN)
    hybrid_weights: Any = _documented(
        (1.0, 1.0), {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2}
    )


class EvaluateBody(Body):
    """Arguments of ``evaluate``."""

    queries: Any = _documented(None, _VECTORS, VECTORS)
    k: Any = _documented(10, _INTEGER)
    sample: Any = _documented(500, _INTEGER)


class AnalyzeBody(Body):
    """Arguments of ``analyze``."""

    sample: Any = _documented(2000, _INTEGER)
    k: Any = _documented(10, _INTEGER)


class MapBody(Body):
    """Arguments of ``map`` (and ``project``)."""

    method: Any = _documented(
        "pca", {"type": "string", "enum": ["pca", "umap", "tsne"]}, "pca, umap or tsne."
    )
    sample: Any = _documented(5000, _INTEGER)
    where: Any = _documented(None, _WHERE, WHERE)


class RecallTargetBody(Body):
    """Argument of ``set_recall_target``."""

    target: Any = Field(json_schema_extra=_NUMBER)
