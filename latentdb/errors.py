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
    ├── EmbedderError (400)                no embedder, or it cannot be loaded
    ├── NotFoundError (404)
    │   ├── CollectionNotFoundError (404)
    │   └── RecordNotFoundError (404)      ``update`` of ids that are not stored
    ├── CollectionExistsError (409)
    ├── AuthError (401)                    no API key, or one the server does not know
    │   └── ForbiddenError (403)           the key's scope does not allow the call
    ├── DatabaseClosedError (400)
    ├── StorageError (500)                 the database file cannot be opened or used
    ├── ServerError (500)                  the server failed (details are in its log)
    └── TransportError (503)               the server cannot be reached, or did not
                                           answer as a latentdb server
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "DatabaseClosedError",
    "DimensionMismatchError",
    "DuplicateIdError",
    "EmbedderError",
    "FilterError",
    "ForbiddenError",
    "InvalidArgumentError",
    "InvalidIdError",
    "InvalidMetadataError",
    "InvalidVectorError",
    "LatentDBError",
    "LatentDBWarning",
    "ModelMismatchError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RecordNotFoundError",
    "ServerError",
    "StorageError",
    "TransportError",
]


class LatentDBError(Exception):
    """Base class of every error latentdb raises on purpose."""

    code = "latentdb_error"
    status = 500


class InvalidArgumentError(LatentDBError, ValueError):
    """An argument has the wrong type, shape or value."""

    code = "invalid_argument"
    status = 400


class InvalidVectorError(InvalidArgumentError):
    """Vectors are not a finite numeric (n, d) array, or cannot be normalized."""

    code = "invalid_vector"


class DimensionMismatchError(InvalidArgumentError):
    """Vectors have a width other than the collection's dimension."""

    code = "dimension_mismatch"


class InvalidIdError(InvalidArgumentError):
    """An id is empty or not a string."""

    code = "invalid_id"


class DuplicateIdError(InvalidArgumentError):
    """Ids repeat within one call, or ``add`` names ids that are already stored."""

    code = "duplicate_id"
    status = 409


class InvalidMetadataError(InvalidArgumentError):
    """Metadata is not a flat JSON object of str, int, float or bool values."""

    code = "invalid_metadata"


class FilterError(InvalidArgumentError):
    """A ``where`` filter is malformed: unknown operator, wrong operand type."""

    code = "invalid_filter"


class PayloadTooLargeError(InvalidArgumentError):
    """A request to the server is over its body size or batch size limit."""

    code = "payload_too_large"
    status = 413


class ModelMismatchError(LatentDBError):
    """Vectors or texts come from a latent space other than the collection's."""

    code = "model_mismatch"
    status = 409


class EmbedderError(LatentDBError):
    """Text was given where no embedder is configured, or the embedder cannot load."""

    code = "embedder_error"
    status = 400


class NotFoundError(LatentDBError):
    """Something named does not exist."""

    code = "not_found"
    status = 404


class CollectionNotFoundError(NotFoundError):
    """No collection has that name (or it was deleted)."""

    code = "collection_not_found"


class RecordNotFoundError(NotFoundError):
    """``update`` named ids that are not stored."""

    code = "record_not_found"


class CollectionExistsError(LatentDBError):
    """A collection with that name already exists."""

    code = "collection_exists"
    status = 409


class AuthError(LatentDBError):
    """Missing or insufficient credentials (used by the server and client)."""

    code = "unauthorized"
    status = 401


class ForbiddenError(AuthError):
    """The API key is valid but its scope does not allow this call (read-only, or
    limited to other collections)."""

    code = "forbidden"
    status = 403


class DatabaseClosedError(LatentDBError):
    """The database was closed; open it again with ``latentdb.connect``."""

    code = "database_closed"
    status = 400


class StorageError(LatentDBError):
    """The database file cannot be opened or written (locked past the timeout, corrupt)."""

    code = "storage_error"
    status = 500


class ServerError(LatentDBError):
    """The server failed while answering; the reason is in its log, never in the reply."""

    code = "internal_error"
    status = 500


class TransportError(LatentDBError):
    """The server could not be reached, or its reply was not a latentdb answer."""

    code = "transport_error"
    status = 503


class LatentDBWarning(UserWarning):
    """Something was wrong but latentdb recovered (e.g. a damaged index file rebuilt)."""
