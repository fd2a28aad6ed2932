"""The HTTP client: a :class:`~latentdb.Database` whose calls a latentdb server answers.

Use ``latentdb.connect("http://host:8750", api_key=...)``; see :class:`RemoteDatabase`.
Needs httpx (the ``client`` extra).

The wire format the client and the server speak (arrays in their ``json`` or
``binary`` form, results and errors as JSON) is exported too: the server translates
with the same functions, so the two sides cannot drift apart.
"""

from latentdb.client._client import API_KEY_ENV, RemoteCollection, RemoteDatabase
from latentdb.client._migration import RemoteMigration
from latentdb.client._wire import (
    VECTOR_HEADER,
    VectorFormat,
    decode_array,
    encode_array,
    error_to_wire,
    get_result_to_wire,
    query_result_to_wire,
    rows_of,
    texts_count,
)

__all__ = [
    "API_KEY_ENV",
    "VECTOR_HEADER",
    "RemoteCollection",
    "RemoteDatabase",
    "RemoteMigration",
    "VectorFormat",
    "decode_array",
    "encode_array",
    "error_to_wire",
    "get_result_to_wire",
    "query_result_to_wire",
    "rows_of",
    "texts_count",
]
