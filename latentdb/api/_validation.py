"""Checks on ids, documents, metadata and options, shared by every write and read."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from latentdb.errors import (
    DuplicateIdError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidMetadataError,
)

__all__ = [
    "check_collection_name",
    "check_documents",
    "check_ids",
    "check_include",
    "check_metadatas",
    "check_non_negative",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_collection_name(name: object) -> str:
    """A collection name: 1-128 of letters, digits, ``.``, ``_``, ``-``; starts alphanumeric."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            "collection names are 1-128 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit; got {name!r}"
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
    if len(set(out)) != len(out):
        if not distinct:
            return list(dict.fromkeys(out))
        seen: set[str] = set()
        for value in out:
            if value in seen:
                raise DuplicateIdError(f"id {value!r} appears more than once in this call")
            seen.add(value)
    return out


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
        if _is_scalar(value):
            continue
        if isinstance(value, list) and value and all(_is_scalar(item) for item in value):
            continue
        raise InvalidMetadataError(
            f"metadata value for {key!r} at position {position} must be a str, a 64-bit int, "
            "a finite float, a bool, or a non-empty list of those; got "
            f"{type(value).__name__} {value!r}"
        )
    return json.dumps(metadata, ensure_ascii=False, allow_nan=False)


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
        raise InvalidArgumentError(f"include must be a list of field names; got {include!r}")
    fields = frozenset(include)
    unknown = sorted(str(f) for f in fields if f not in allowed)
    if unknown:
        raise InvalidArgumentError(
            f"include names unknown fields {unknown}; expected any of {list(allowed)}"
        )
    return fields


def check_non_negative(value: object, name: str, *, minimum: int = 0) -> int:
    """An int >= ``minimum`` (bools refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value
