"""latentdb: a vector database for Python that indexes a model's latent space.

Start with :func:`connect`::

    import latentdb

    with latentdb.connect("my.db") as db:
        docs = db.get_or_create_collection("docs")      # all-MiniLM-L6-v2, cosine
        docs.add(["a", "b"], documents=["a cat sat", "stocks fell"])
        print(docs.query(texts="kitten", k=1).ids)        # [['a']]
"""

from latentdb._connect import connect
from latentdb._version import __version__
from latentdb.api import (
    Collection,
    Database,
    GetResult,
    IndexSpec,
    IndexStatus,
    Migration,
    MigrationStatus,
    QueryResult,
    RecallReport,
    SpaceMap,
    SpaceReport,
)
from latentdb.errors import (
    AuthError,
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptDatabaseError,
    DatabaseClosedError,
    DimensionMismatchError,
    DiskFullError,
    DuplicateIdError,
    EmbedderError,
    FilterError,
    ForbiddenError,
    ForeignDatabaseError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidMetadataError,
    InvalidVectorError,
    LatentDBError,
    LatentDBWarning,
    ModelMismatchError,
    ModelRequiredError,
    NotFoundError,
    PayloadTooLargeError,
    ReadOnlyError,
    RecordNotFoundError,
    ServerError,
    StorageError,
    TransportError,
)
from latentdb.space import LatentSpace

__all__ = [
    "AuthError",
    "Collection",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "CorruptDatabaseError",
    "Database",
    "DatabaseClosedError",
    "DimensionMismatchError",
    "DiskFullError",
    "DuplicateIdError",
    "EmbedderError",
    "FilterError",
    "ForbiddenError",
    "ForeignDatabaseError",
    "GetResult",
    "IndexSpec",
    "IndexStatus",
    "InvalidArgumentError",
    "InvalidIdError",
    "InvalidMetadataError",
    "InvalidVectorError",
    "LatentDBError",
    "LatentDBWarning",
    "LatentSpace",
    "Migration",
    "MigrationStatus",
    "ModelMismatchError",
    "ModelRequiredError",
    "NotFoundError",
    "PayloadTooLargeError",
    "QueryResult",
    "ReadOnlyError",
    "RecallReport",
    "RecordNotFoundError",
    "ServerError",
    "SpaceMap",
    "SpaceReport",
    "StorageError",
    "TransportError",
    "__version__",
    "connect",
]
