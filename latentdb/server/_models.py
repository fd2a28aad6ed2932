"""What the request bodies of the HTTP API share: their base, the wire types of their
fields, and :func:`argument`, the field that takes its default from the interface.
Each body is defined beside its route (``_routes/``), so a new method is one route.

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

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "IMAGES",
    "VECTORS",
    "WHERE",
    "WHERE_DOCUMENT",
    "BinaryArray",
    "Body",
    "GetField",
    "Ids",
    "QueryField",
    "Vectors",
    "Where",
    "argument",
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


def argument(method: Callable[..., Any], parameter: str, description: str | None = None) -> Any:
    """A field that feeds ``parameter`` of ``method``, with the interface's default."""
    return Field(interface_default(method, parameter), description=description)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
