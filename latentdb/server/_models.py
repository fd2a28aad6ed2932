"""Request bodies of the HTTP API, for the OpenAPI document.

Fields are loosely typed on purpose: the engine checks every argument and raises the
same named error (``DimensionMismatchError``, ``FilterError``, ...) it raises in
process, so a client sees one set of messages whichever transport it uses. Unknown
fields are refused, so a misspelled argument is an error rather than ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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


class CreateCollectionBody(Body):
    """Arguments of ``create_collection`` / ``get_or_create_collection``."""

    name: Any = Field(description="1-128 letters, digits, '.', '_', '-'.")
    dimension: Any = Field(None, description="Required without an embedder.")
    metric: Any = Field("cosine", description="cosine, l2 or ip.")
    embedder: Any = Field("minilm", description="A registered embedder, or null.")
    model: Any = Field(None, description="Where the vectors come from (without an embedder).")
    index: Any = Field("auto", description="auto, flat, hnsw, hnsw-sq8, ivf, ivf-pq, or fields.")
    recall_target: Any = Field(0.95, description="Recall@10 approximate search is tuned to.")
    reduce: Any = Field(None, description="Index a PCA projection to this many dimensions.")
    get_or_create: bool = Field(False, description="Return the collection if it exists.")


class CreateAliasBody(Body):
    """Arguments of ``create_alias``."""

    alias: Any
    collection: Any


class AliasBody(Body):
    """The collection an alias is switched to."""

    collection: Any


class MigrateBody(Body):
    """Arguments of ``migrate`` (always in the background on the server)."""

    name: Any
    embedder: Any = None
    reduce: Any = None
    new_name: Any = None


class WriteBody(Body):
    """Arguments of ``add``, ``upsert`` and ``update``."""

    ids: Any = Field(description="String ids (or one string).")
    vectors: Any = Field(None, description=VECTORS)
    documents: Any = None
    metadatas: Any = None
    model: Any = None
    images: Any = Field(None, description=IMAGES)


class DeleteBody(Body):
    """Arguments of ``delete``."""

    ids: Any = None
    where: Any = Field(None, description=WHERE)
    where_document: Any = Field(None, description=WHERE_DOCUMENT)


class GetBody(Body):
    """Arguments of ``get``."""

    ids: Any = None
    where: Any = Field(None, description=WHERE)
    limit: Any = None
    offset: Any = 0
    include: Any = ["documents", "metadatas"]
    where_document: Any = Field(None, description=WHERE_DOCUMENT)


class ScrollBody(Body):
    """One page of ``scroll``: the first without ``after``, the next with the cursor the
    previous page returned."""

    batch: Any = 1000
    where: Any = Field(None, description=WHERE)
    where_document: Any = Field(None, description=WHERE_DOCUMENT)
    include: Any = ["documents", "metadatas"]
    after: str | None = Field(None, description="The cursor the previous page returned.")


class QueryBody(Body):
    """Arguments of ``query``."""

    vectors: Any = Field(None, description=VECTORS)
    texts: Any = None
    k: Any = 10
    where: Any = Field(None, description=WHERE)
    include: Any = ["distances", "documents", "metadatas"]
    exact: Any = False
    model: Any = None
    params: Any = Field(None, description='Search knobs for this call: {"ef": 128}.')
    images: Any = Field(None, description=IMAGES)
    explain: Any = False
    where_document: Any = Field(None, description=WHERE_DOCUMENT)
    hybrid: Any = False
    hybrid_weights: Any = (1.0, 1.0)


class EvaluateBody(Body):
    """Arguments of ``evaluate``."""

    queries: Any = Field(None, description=VECTORS)
    k: Any = 10
    sample: Any = 500


class AnalyzeBody(Body):
    """Arguments of ``analyze``."""

    sample: Any = 2000
    k: Any = 10


class MapBody(Body):
    """Arguments of ``map`` (and ``project``)."""

    method: Any = Field("pca", description="pca, umap or tsne.")
    sample: Any = 5000
    where: Any = Field(None, description=WHERE)


class RecallTargetBody(Body):
    """Argument of ``set_recall_target``."""

    target: Any
