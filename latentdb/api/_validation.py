"""Checks on ids, documents, metadata and options, shared by every write and read.

Every public method of Database and Collection (embedded, HTTP and sharded alike)
checks its arguments here before it touches anything, so that bad input raises an
:class:`~latentdb.errors.InvalidArgumentError` (or a narrower class) and writes nothing:
wrong types (a bool is not an int, an int is not a bool), numbers out of range (SQLite
holds 64-bit integers), NaN, and strings that are not valid Unicode (a lone surrogate
such as ``"\\ud800"`` cannot be encoded as UTF-8, so SQLite and JSON cannot store it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from latentdb.errors import (
    DuplicateIdError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidMetadataError,
    ModelRequiredError,
)

if TYPE_CHECKING:
    from latentdb.space import LatentSpace


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The largest integer SQLite stores (limit, offset, batch bind as 64-bit integers).
MAX_INT = 2**63 - 1
# Neighbours per query: a page of results, not an export (get and scroll read every
# record). Pinecone stops at 10,000 and Milvus at 16,384; beyond this faiss allocates
# (queries x k) result arrays and search heaps for nothing (evaluate(k=10**30) failed
# inside numpy, issue 15).
MAX_K = 10_000
# evaluate()'s queries that are the ones the index recorded (live recall).
RECORDED_QUERIES = "recorded"
# Vector width: Qdrant's limit; a float32 vector of 65,536 is 256 KiB, and the widest
# embedding models make 4,096 to 8,192.
MAX_DIMENSION = 65_536
# query(params=...) knobs (ef, nprobe, rerank): 2**16 is past any useful beam (ann-
# benchmarks' widest ef is ~800) and past the largest nlist an IndexSpec allows, so
# nprobe can still scan every list; faiss keeps a heap of this size per query.
MAX_SEARCH_PARAM = 65_536

_E = TypeVar("_E", bound=InvalidArgumentError)


def is_text(value: object) -> bool:
    """A str that can be stored: encodable as UTF-8 (no lone surrogates)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(
    value: object,
    name: str,
    *,
    optional: bool = False,
    empty: bool = False,
    error: type[InvalidArgumentError] = InvalidArgumentError,
) -> str | None:
    """A str that is valid Unicode (non-empty unless ``empty``); None too when
    ``optional``.

    Raises:
        ``error`` (InvalidArgumentError by default): anything else.
    """
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise error(f"{name} must be a string; got {type(value).__name__} {_show(value)}")
    if not value and not empty:
        raise error(f"{name} must not be empty")
    if not is_text(value):
        raise error(f"{name} is not valid Unicode (a lone surrogate?): {value!r}")
    return value


def check_name(value: object, what: str = "name") -> str:
    """The name of an existing collection or alias to look up: a valid Unicode str (a
    str that names nothing is for the lookup to report).

    Raises:
        InvalidArgumentError: not a str, or not valid Unicode.
    """
    name = check_text(value, what, empty=True)
    assert name is not None  # not optional
    return name


def check_texts(texts: object, name: str = "texts") -> list[str]:
    """One str or a non-empty list of valid Unicode strings."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or isinstance(texts, bytes):
        raise InvalidArgumentError(
            f"{name} must be a string or a list of strings; got {type(texts).__name__}"
        )
    out = list(texts)
    if not out:
        raise InvalidArgumentError(f"{name} must not be empty")
    for position, text in enumerate(out):
        check_text(text, f"{name}[{position}]", empty=True)
    return out


def check_flag(value: object, name: str) -> bool:
    """A bool (numpy's too); 1, "yes" and None are refused, not read as true or false."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise InvalidArgumentError(f"{name} must be True or False; got {_show(value)}")


def check_write_model(
    space: LatentSpace, model: object, *, vectors: bool, required: bool, collection: str
) -> None:
    """The ``model=`` of a write: the collection's model when given; and given at all when
    the write brings its own vectors (``vectors``: not texts or images the collection
    embeds) and the collection requires it (``require_model``), so that vectors of
    unknown origin cannot mix another latent space into the stored data.

    Raises:
        InvalidArgumentError: ``model`` is not a str.
        ModelMismatchError: ``model`` names another model than the collection's.
        ModelRequiredError: ``model`` is None for vectors, and ``required``.
    """
    space.check_model(model)  # type: ignore[arg-type]  # it refuses a non-str itself
    if vectors and model is None and required:
        raise ModelRequiredError(
            f"vectors= without model= cannot enter collection {collection!r}: it holds "
            f"vectors of model {space.model!r} and requires every write of vectors to "
            f"name their model. Pass model={space.model!r} if they come from it; a "
            "collection created with require_model=False accepts vectors without a "
            "model name"
        )


def check_callable(value: object, name: str) -> None:
    """None or a callable (a progress callback)."""
    if value is not None and not callable(value):
        raise InvalidArgumentError(f"{name} must be a function or None; got {type(value).__name__}")


def check_search_params(params: object) -> dict[str, int] | None:
    """``query(params=...)``: None or a dict of knob names to ints in 1..MAX_SEARCH_PARAM
    (which knobs apply is the index's to say)."""
    if params is None:
        return None
    if not isinstance(params, Mapping):
        raise InvalidArgumentError(
            f"params must be a dict such as {{'ef': 128}}; got {type(params).__name__}"
        )
    out = {}
    for knob, value in params.items():
        check_text(knob, "a search parameter's name")
        out[knob] = check_non_negative(
            value, f"search parameter {knob!r}", minimum=1, maximum=MAX_SEARCH_PARAM
        )
    return out


def _show(value: object) -> str:
    """A short repr for messages."""
    text = repr(value)
    return text if len(text) <= 100 else text[:100] + "..."


def check_collection_name(name: object) -> str:
    """A collection name: 1-128 of letters, digits, ``.``, ``_``, ``-``; starts alphanumeric."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            "collection names are 1-128 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit; got {_show(name)}"
        )
    return name


def check_ids(ids: object, *, allow_empty: bool = False, distinct: bool = True) -> list[str]:
    """A list of non-empty string ids (one str is a list of one).

    With ``distinct`` a repeated id is an error (writes); without, repeats are dropped
    (reads and deletes), keeping the first occurrence's place.

    Raises:
        InvalidIdError: not strings, or an empty string, or no ids where some are needed.
        DuplicateIdError: an id appears twice.
    """
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, Sequence):
        raise InvalidIdError(f"ids must be a list of strings; got {type(ids).__name__}")
    out = list(ids)
    if not out and not allow_empty:
        raise InvalidIdError("ids must not be empty: give at least one id")
    for position, value in enumerate(out):
        if not isinstance(value, str):
            raise InvalidIdError(
                f"ids must be strings; got {type(value).__name__} {value!r} at position {position}"
            )
        if not value:
            raise InvalidIdError(f"ids must be non-empty strings; got '' at position {position}")
    _check_unicode(out, "id", InvalidIdError)
    if len(set(out)) != len(out):
        if not distinct:
            return list(dict.fromkeys(out))
        seen: set[str] = set()
        for value in out:
            if value in seen:
                raise DuplicateIdError(f"id {value!r} appears more than once in this call")
            seen.add(value)
    return out


def _check_unicode(values: list[Any], what: str, error: type[_E]) -> None:
    """Refuse strings of ``values`` that are not valid Unicode (one encode of them all:
    100k ids cost ~5 ms; the failing one is then looked for)."""
    strings = [v for v in values if isinstance(v, str)]
    try:
        "".join(strings).encode("utf-8")
    except UnicodeEncodeError:
        position = next(i for i, v in enumerate(values) if isinstance(v, str) and not is_text(v))
        raise error(
            f"{what} at position {position} is not valid Unicode (a lone surrogate?): "
            f"{values[position]!r}"
        ) from None


def _check_length(values: object, name: str, expected: int) -> list[Any]:
    if isinstance(values, str | bytes | dict) or not isinstance(values, Sequence):
        raise InvalidArgumentError(f"{name} must be a list; got {type(values).__name__}")
    out = list(values)
    if len(out) != expected:
        raise InvalidArgumentError(f"expected {expected} {name}, one per id; got {len(out)}")
    return out


def check_documents(documents: object, expected: int) -> list[str | None] | None:
    """One str (or None) per id, or None for no documents."""
    if documents is None:
        return None
    out = _check_length(documents, "documents", expected)
    for position, value in enumerate(out):
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(
                f"documents must be strings or None; got {type(value).__name__} at position "
                f"{position}"
            )
    _check_unicode(out, "document", InvalidArgumentError)
    return out


def check_metadatas(metadatas: object, expected: int) -> list[str | None] | None:
    """Validate one metadata dict (or None) per id; return each as JSON text.

    Raises:
        InvalidMetadataError: not a flat dict of str keys to str/int/float/bool values
            (or non-empty lists of them).
    """
    if metadatas is None:
        return None
    out = _check_length(metadatas, "metadatas", expected)
    return [_metadata_json(value, position) for position, value in enumerate(out)]


def _metadata_json(metadata: object, position: int) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidMetadataError(
            f"metadata at position {position} must be a dict; got {type(metadata).__name__}"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise InvalidMetadataError(
                f"metadata keys must be non-empty strings not starting with '$'; got {key!r} "
                f"at position {position}"
            )
        if is_metadata_value(value):
            continue
        raise InvalidMetadataError(
            f"metadata value for {key!r} at position {position} must be a str, a 64-bit int, "
            "a finite float, a bool, or a non-empty list of those; got "
            f"{type(value).__name__} {value!r}"
        )
    text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    if not is_text(text):
        raise InvalidMetadataError(
            f"metadata at position {position} holds a string that is not valid Unicode (a "
            f"lone surrogate?): {metadata!r}"
        )
    return text


def is_metadata_value(value: object) -> bool:
    """Whether ``value`` can be stored as one metadata value: a scalar (str, bool,
    64-bit int, finite float) or a non-empty list of scalars."""
    if _is_scalar(value):
        return True
    return isinstance(value, list) and bool(value) and all(_is_scalar(item) for item in value)


def _is_scalar(value: object) -> bool:
    """A metadata value: str, bool, 64-bit int or finite float."""
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


_INCLUDE_CACHE: dict[tuple[object, ...], frozenset[str]] = {}


def check_include(include: object, allowed: Iterable[str]) -> frozenset[str]:
    """The fields to return; each must be one of ``allowed`` (answers cached: every
    query asks)."""
    allowed = tuple(allowed)
    if isinstance(include, list | tuple):
        key = (allowed, *include)
        try:
            return _INCLUDE_CACHE[key]
        except (KeyError, TypeError):  # TypeError: an unhashable item, refused below
            pass
        fields = _check_include(include, allowed)
        if len(_INCLUDE_CACHE) < 256:
            _INCLUDE_CACHE[key] = fields
        return fields
    return _check_include(include, allowed)


def _check_include(include: object, allowed: tuple[str, ...]) -> frozenset[str]:
    if isinstance(include, str):
        include = (include,)
    if not isinstance(include, Sequence | set | frozenset):
        raise InvalidArgumentError(f"include must be a list of field names; got {_show(include)}")
    for field in include:
        if not isinstance(field, str):
            raise InvalidArgumentError(
                f"include must be a list of field names (strings); got {_show(field)} in it"
            )
    fields = frozenset(include)
    unknown = sorted(str(f) for f in fields if f not in allowed)
    if unknown:
        raise InvalidArgumentError(
            f"include names unknown fields {unknown}; expected any of {list(allowed)}"
        )
    return fields


def check_non_negative(
    value: object, name: str, *, minimum: int = 0, maximum: int = MAX_INT
) -> int:
    """An int from ``minimum`` to ``maximum`` (bools refused; numpy ints accepted)."""
    if isinstance(value, np.integer):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise InvalidArgumentError(
            f"{name} must be an integer from {minimum} to {maximum:,}; got {_show(value)}"
        )
    return value
