"""latentdb: a vector database for Python that indexes a model's latent space.

Start with :func:`connect`::

    import latentdb

    with latentdb.connect("my.db") as db:
        docs = db.get_or_create_collection("docs")      # all-MiniLM-L6-v2, cosine
        docs.add(["a", "b"], documents=["a cat sat", "stocks fell"])
        print(docs.query(texts="kitten", k=1).ids)        # [['a']]
"""

from latentdb import errors
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
    SpaceComparison,
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
    "Collection",
    "Database",
    "GetResult",
    "IndexSpec",
    "IndexStatus",
    "LatentSpace",
    "Migration",
    "MigrationStatus",
    "QueryResult",
    "RecallReport",
    "SpaceComparison",
    "SpaceMap",
    "SpaceReport",
    "__version__",
    "connect",
]
__all__ += errors.__all__
