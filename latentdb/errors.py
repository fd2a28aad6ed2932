"""Errors raised by latentdb.

Every error latentdb raises on purpose is a :class:`LatentDBError`. Each subclass has a
stable ``code`` (for programs and the HTTP API) and the HTTP ``status`` the server
answers with, so a client can re-raise the very class the embedded engine raised::

    LatentDBError (code "latentdb_error", 500)
    ├── InvalidArgumentError (400)         bad arguments that fit no narrower class
    │   ├── PayloadTooLargeError (413)     a request over the server's body or batch limit
    │   ├── InvalidVectorError (400)       non-numeric, ragged, NaN/inf, zero in cosine
    │   ├── DimensionMismatchError (400)   vector width differs from the space's
    │   ├── InvalidIdError (400)           empty or non-string ids
    │   ├── DuplicateIdError (409)         ids repeated in a call or already stored
    │   ├── InvalidMetadataError (400)     metadata that is not a flat JSON object
    │   └── FilterError (400)              malformed ``where``
    ├── ModelMismatchError (409)           vectors or texts from another latent space
    │   └── ModelRequiredError (409)       vectors without model= where the collection
    │                                      requires their model to be named
    ├── EmbedderError (400)                no embedder, or it cannot be loaded
    ├── NotFoundError (404)
    │   ├── CollectionNotFoundError (404)
    │   └── RecordNotFoundError (404)      ``update`` of ids that are not stored
    ├── CollectionExistsError (409)
    ├── AuthError (401)                    no API key, or one the server does not know
    │   └── ForbiddenError (403)           the key's scope does not allow the call
    ├── DatabaseClosedError (400)
    ├── StorageError (500)                 the database file cannot be opened or used
    │   ├── DiskFullError (507)            the disk or the file size limit is full
    │   ├── ReadOnlyError (409)            a write to a database opened read-only
    │   ├── CorruptDatabaseError (500)     the database file is damaged or truncated
    │   └── ForeignDatabaseError (500)     the file is not a latentdb database
    ├── ServerError (500)                  the server failed (details are in its log)
    └── TransportError (503)               the server cannot be reached, or did not
                                           answer as a latentdb server
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "CorruptDatabaseError",
    "DatabaseClosedError",
    "DimensionMismatchError",
    "DiskFullError",
    "DuplicateIdError",
    "EmbedderError",
    "FilterError",
    "ForbiddenError",
    "ForeignDatabaseError",
    "InvalidArgumentError",
    "InvalidIdError",
    "InvalidMetadataError",
    "InvalidVectorError",
    "LatentDBError",
    "LatentDBWarning",
    "ModelMismatchError",
    "ModelRequiredError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ReadOnlyError",
    "RecordNotFoundError",
    "ServerError",
    "StorageError",
    "TransportError",
]


class LatentDBError(Exception):
    """Base class of every error latentdb raises on purpose.

    A subclass names its stable ``code`` and, where it differs from its parent's, its
    HTTP ``status`` in its header: ``class FilterError(InvalidArgumentError,
    code="invalid_filter")``.
    """

    code: str = "latentdb_error"
    status: int = 500

    def __init_subclass__(cls, *, code: str | None = None, status: int | None = None) -> None:
        super().__init_subclass__()
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status


class InvalidArgumentError(LatentDBError, ValueError, code="invalid_argument", status=400):
    """An argument has the wrong type, shape or value."""


class InvalidVectorError(InvalidArgumentError, code="invalid_vector"):
    """Vectors are not a finite numeric (n, d) array, or cannot be normalized."""


class DimensionMismatchError(InvalidArgumentError, code="dimension_mismatch"):
    """Vectors have a width other than the collection's dimension."""


class InvalidIdError(InvalidArgumentError, code="invalid_id"):
    """An id is empty or not a string."""


class DuplicateIdError(InvalidArgumentError, code="duplicate_id", status=409):
    """Ids repeat within one call, or ``add`` names ids that are already stored."""


class InvalidMetadataError(InvalidArgumentError, code="invalid_metadata"):
    """Metadata is not a flat JSON object of str, int, float or bool values."""


class FilterError(InvalidArgumentError, code="invalid_filter"):
    """A ``where`` filter is malformed: unknown operator, wrong operand type."""


class PayloadTooLargeError(InvalidArgumentError, code="payload_too_large", status=413):
    """A request to the server is over its body size or batch size limit."""


class ModelMismatchError(LatentDBError, code="model_mismatch", status=409):
    """Vectors or texts come from a latent space other than the collection's."""


class ModelRequiredError(ModelMismatchError, code="model_required"):
    """Vectors were written without ``model=`` to a collection that requires it
    (``require_model=True``, the default for new collections): vectors of unknown
    origin could be of another model, so they are refused rather than mixed in.

    HTTP 409 Conflict, as its parent: the collection's setting refuses the write; the
    same vectors with their model named are accepted.
    """


class EmbedderError(LatentDBError, code="embedder_error", status=400):
    """Text was given where no embedder is configured, or the embedder cannot load."""


class NotFoundError(LatentDBError, code="not_found", status=404):
    """Something named does not exist."""


class CollectionNotFoundError(NotFoundError, code="collection_not_found"):
    """No collection has that name (or it was deleted)."""


class RecordNotFoundError(NotFoundError, code="record_not_found"):
    """``update`` named ids that are not stored."""


class CollectionExistsError(LatentDBError, code="collection_exists", status=409):
    """A collection with that name already exists."""


class AuthError(LatentDBError, code="unauthorized", status=401):
    """Missing or insufficient credentials (used by the server and client)."""


class ForbiddenError(AuthError, code="forbidden", status=403):
    """The API key is valid but its scope does not allow this call (read-only, or
    limited to other collections)."""


class DatabaseClosedError(LatentDBError, code="database_closed", status=400):
    """The database was closed; open it again with ``latentdb.connect``."""


class StorageError(LatentDBError, code="storage_error", status=500):
    """The database file cannot be opened or used (locked past the timeout, an I/O
    error). The SQLite or OS error behind it is the ``__cause__``."""


class DiskFullError(StorageError, code="disk_full", status=507):
    """A write ran out of space: the disk is full, or the process's file size limit
    (``RLIMIT_FSIZE``) is reached. The write was rolled back; earlier writes are intact.

    HTTP 507 Insufficient Storage: the server cannot store what the request needs
    (RFC 4918), and the same request can succeed once space is freed.
    """


class ReadOnlyError(StorageError, code="read_only", status=409):
    """A write to a database that can only be read: a read-only file, folder or file
    system. Reads still work.

    HTTP 409 Conflict, not 403: no other API key would be allowed the write; the
    database's state refuses it (RFC 9110 15.5.10).
    """


class CorruptDatabaseError(StorageError, code="corrupt_database", status=500):
    """The database file is damaged: a malformed page, a garbled header, or a file
    truncated to nothing. Restore it from a backup.

    HTTP 500: the fault is the server's, and retrying will not help.
    """


class ForeignDatabaseError(StorageError, code="foreign_database", status=500):
    """The database file is not latentdb's: not SQLite at all, or another
    application's SQLite database. latentdb refuses it rather than write into it.

    HTTP 500: only ever raised while opening, a fault of the server's setup.
    """


class ServerError(LatentDBError, code="internal_error", status=500):
    """The server failed while answering; the reason is in its log, never in the reply."""


class TransportError(LatentDBError, code="transport_error", status=503):
    """The server could not be reached, or its reply was not a latentdb answer."""


class LatentDBWarning(UserWarning):
    """Something was wrong but latentdb recovered (e.g. a damaged index file rebuilt)."""
