"""The wire format the server and the client speak: arrays, results and errors as JSON.

Arrays travel in one of two forms, chosen per request by the client:

- ``json``: nested lists of numbers, as anyone would write by hand with curl.
- ``binary``: ``{"dtype": "float32", "shape": [n, d], "data": BASE64}``, the array's
  little-endian float32 bytes in base64. A tenth of the parsing cost of a list of
  floats, and the exact bits (no decimal round trip).

A request body may hold either form wherever it holds vectors; the response uses the
form named by the ``X-LatentDB-Vectors`` header (``json`` when absent). Only numpy is
imported here, so the client needs neither FastAPI nor pydantic.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from latentdb import errors
from latentdb.api import (
    GetResult,
    IndexStatus,
    MigrationStatus,
    QueryPlan,
    QueryResult,
    RecallReport,
    SpaceComparison,
)
from latentdb.errors import InvalidVectorError, LatentDBError
from latentdb.space import LatentSpace

__all__ = [
    "VECTOR_HEADER",
    "VectorFormat",
    "decode_array",
    "encode_array",
    "error_class",
    "error_class_named",
    "error_to_wire",
    "get_result_from_wire",
    "get_result_to_wire",
    "index_status_from_wire",
    "is_binary",
    "matrix_from_wire",
    "migration_status_from_wire",
    "query_result_from_wire",
    "query_result_to_wire",
    "recall_report_from_wire",
    "rows_of",
    "space_from_wire",
    "texts_count",
]

VectorFormat = Literal["json", "binary"]
# The request header that picks the form of arrays in the response.
VECTOR_HEADER = "X-LatentDB-Vectors"
FloatMatrix = npt.NDArray[np.float32]
_LITTLE_FLOAT32 = np.dtype("<f4")


def encode_array(array: npt.NDArray[Any], form: VectorFormat) -> object:
    """An array in the wire form ``form`` (binary: always little-endian float32)."""
    if form == "json":
        return array.tolist()
    data = np.ascontiguousarray(array, dtype=_LITTLE_FLOAT32)
    return {
        "dtype": "float32",
        "shape": list(data.shape),
        "data": base64.b64encode(data.tobytes()).decode("ascii"),
    }


def is_binary(value: object) -> bool:
    """Whether ``value`` is an array in the binary form."""
    return isinstance(value, Mapping) and "data" in value and "shape" in value


def decode_array(value: object) -> object:
    """An array from either wire form: binary becomes a float32 ndarray of its shape;
    lists come back as they are, for the engine to check (and name what is wrong).

    Raises:
        InvalidVectorError: a malformed binary form.
    """
    if not isinstance(value, Mapping):
        return value
    dtype, shape, data = value.get("dtype", "float32"), value.get("shape"), value.get("data")
    if dtype != "float32":
        raise InvalidVectorError(f"binary vectors must have dtype 'float32'; got {dtype!r}")
    if (
        not isinstance(shape, list)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
        or not isinstance(data, str)
    ):
        raise InvalidVectorError(
            "binary vectors are {'dtype': 'float32', 'shape': [n, d], 'data': base64 of the "
            f"little-endian bytes}}; got shape {shape!r} and data of type {type(data).__name__}"
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError as error:
        raise InvalidVectorError(f"binary vectors: data is not base64 ({error})") from None
    expected = math.prod(shape) * 4  # np.prod on a short list costs ~8 us a request
    if len(raw) != expected:
        raise InvalidVectorError(
            f"binary vectors of shape {shape} need {expected} bytes; got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=_LITTLE_FLOAT32).astype(np.float32).reshape(shape)


def rows_of(value: object) -> int:
    """How many rows a wire array holds (0 when it cannot tell: the engine will say)."""
    if is_binary(value):
        shape = value.get("shape") if isinstance(value, Mapping) else None
        if isinstance(shape, list) and len(shape) == 2:
            rows = shape[0]
            return rows if isinstance(rows, int) and not isinstance(rows, bool) else 0
        return 1
    if isinstance(value, list) and value and isinstance(value[0], list):
        return len(value)
    return 1 if isinstance(value, list) else 0


def matrix_from_wire(value: object, columns: int) -> FloatMatrix:
    """A float32 (n, columns) matrix from either form (an empty list is (0, columns))."""
    decoded = decode_array(value)
    matrix = np.asarray(decoded, dtype=np.float32)
    return matrix.reshape(-1, columns) if matrix.size or columns else matrix


# -- results ---------------------------------------------------------------------------


def get_result_to_wire(result: GetResult, form: VectorFormat) -> dict[str, Any]:
    """A :class:`GetResult` as JSON-ready values."""
    return {
        "ids": result.ids,
        "vectors": None if result.vectors is None else encode_array(result.vectors, form),
        "documents": result.documents,
        "metadatas": result.metadatas,
    }


def get_result_from_wire(data: Mapping[str, Any], dimension: int) -> GetResult:
    """The :class:`GetResult` :func:`get_result_to_wire` sent."""
    vectors = data.get("vectors")
    return GetResult(
        ids=list(data["ids"]),
        vectors=None if vectors is None else matrix_from_wire(vectors, dimension),
        documents=data.get("documents"),
        metadatas=data.get("metadatas"),
    )


def query_result_to_wire(result: QueryResult, form: VectorFormat) -> dict[str, Any]:
    """A :class:`QueryResult` as JSON-ready values."""
    return {
        "ids": result.ids,
        "distances": None if result.distances is None else encode_array(result.distances, form),
        "documents": result.documents,
        "metadatas": result.metadatas,
        "vectors": (
            None if result.vectors is None else [encode_array(v, form) for v in result.vectors]
        ),
        "plan": None if result.plan is None else dataclasses.asdict(result.plan),
        "scores": None if result.scores is None else encode_array(result.scores, form),
    }


def query_result_from_wire(data: Mapping[str, Any], dimension: int) -> QueryResult:
    """The :class:`QueryResult` :func:`query_result_to_wire` sent."""
    ids: list[list[str]] = data["ids"]
    width = min((len(row) for row in ids), default=0)
    distances, scores, vectors = data.get("distances"), data.get("scores"), data.get("vectors")
    plan = data.get("plan")
    return QueryResult(
        ids=ids,
        distances=None if distances is None else _per_query(distances, len(ids), width),
        documents=data.get("documents"),
        metadatas=data.get("metadatas"),
        vectors=None if vectors is None else [matrix_from_wire(v, dimension) for v in vectors],
        plan=None if plan is None else QueryPlan(**plan),
        scores=None if scores is None else _per_query(scores, len(ids), width),
    )


def _per_query(value: object, queries: int, width: int) -> FloatMatrix:
    matrix = np.asarray(decode_array(value), dtype=np.float32)
    return matrix.reshape(queries, width)


def space_from_wire(data: Mapping[str, Any]) -> LatentSpace:
    """A :class:`LatentSpace` from its ``to_dict()``."""
    return LatentSpace.from_dict(data)


def index_status_from_wire(data: Mapping[str, Any]) -> IndexStatus:
    """An :class:`IndexStatus` from ``dataclasses.asdict`` of one."""
    return IndexStatus(**data)


def recall_report_from_wire(data: Mapping[str, Any]) -> RecallReport:
    """A :class:`RecallReport` from ``dataclasses.asdict`` of one."""
    return RecallReport(**data)


def migration_status_from_wire(data: Mapping[str, Any]) -> MigrationStatus:
    """A :class:`MigrationStatus` from ``dataclasses.asdict`` of one."""
    preview = data.get("preview")
    return MigrationStatus(
        **{
            **data,
            "preview": None if preview is None else SpaceComparison.from_dict(preview),
        }
    )


# -- errors ----------------------------------------------------------------------------


def _error_classes() -> dict[str, type[LatentDBError]]:
    found: dict[str, type[LatentDBError]] = {}
    pending: list[type[LatentDBError]] = [LatentDBError]
    while pending:
        cls = pending.pop()
        found[cls.code] = cls
        pending.extend(cls.__subclasses__())
    return found


_BY_CODE = _error_classes()
_BY_NAME = {cls.__name__: cls for cls in _BY_CODE.values() if hasattr(errors, cls.__name__)}


def error_class(code: object) -> type[LatentDBError]:
    """The error class whose stable ``code`` this is (LatentDBError for one not known)."""
    return _BY_CODE.get(code, LatentDBError) if isinstance(code, str) else LatentDBError


def error_class_named(name: str) -> type[LatentDBError] | None:
    """The latentdb error class called ``name``, if there is one."""
    return _BY_NAME.get(name)


def error_to_wire(error: LatentDBError) -> dict[str, Any]:
    """The JSON body of an error reply: stable code, HTTP status, message."""
    return {"code": error.code, "status": error.status, "message": str(error)}


def texts_count(texts: Sequence[str] | str | None) -> int:
    """How many texts a query or write carries."""
    if texts is None:
        return 0
    return 1 if isinstance(texts, str) else len(texts)
