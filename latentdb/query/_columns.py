"""Metadata held as numpy columns, so that a query's filter costs microseconds, not a
pass over every row's JSON in SQLite.

Each record gets a slot (in the order records arrive; a slot is never reused). Each
metadata key gets a column: numbers as float64 (NaN where the value is not a number),
strings as int32 codes into a vocabulary (-1 where not a string), booleans as int8 (-1
where not a bool), a "present" mask, and list values as an inverted index from item to
slots. A filter evaluates to a boolean mask over the slots; the planner turns it into
keys for an exact scan or into a per-segment bitmap for a filtered graph search.

Two cases stay in SQL, which is exact (``Unsupported``): integers beyond 2**53 (a float
column cannot tell them apart), as stored values or as operands.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.query._where import All, Any_, Condition, Field, Not

__all__ = ["MetadataColumns", "Unsupported"]

BoolArray = npt.NDArray[np.bool_]
KeyArray = npt.NDArray[np.int64]

_EXACT_INT = 2**53  # float64 holds every integer below this exactly


class Unsupported(Exception):
    """The filter (or the data it reads) needs SQL's exact evaluation."""


def _grow(array: npt.NDArray[Any], size: int, fill: Any) -> npt.NDArray[Any]:
    if array.shape[0] >= size:
        return array
    grown = np.full(max(size, 2 * array.shape[0], 1024), fill, dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


@dataclass
class _Column:
    """One metadata key's values, by slot."""

    present: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    number: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    text: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    flag: npt.NDArray[np.int8] = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    vocabulary: dict[str, int] = field(default_factory=dict)
    # list items -> slots holding them; slot -> its list (to take it out again)
    items: dict[tuple[str, Any], set[int]] = field(default_factory=dict)
    lists: dict[int, list[Any]] = field(default_factory=dict)
    inexact: bool = False  # an integer past 2**53 is stored

    def reserve(self, size: int) -> None:
        self.present = _grow(self.present, size, False)
        self.number = _grow(self.number, size, np.nan)
        self.text = _grow(self.text, size, -1)
        self.flag = _grow(self.flag, size, -1)

    def clear(self, slot: int) -> None:
        if slot >= self.present.shape[0] or not self.present[slot]:
            return
        self.present[slot] = False
        self.number[slot] = np.nan
        self.text[slot] = -1
        self.flag[slot] = -1
        old = self.lists.pop(slot, None)
        for item in old or ():
            self.items.get(_item_key(item), set()).discard(slot)

    def set(self, slot: int, value: Any) -> None:
        self.present[slot] = True
        if isinstance(value, bool):
            self.flag[slot] = int(value)
        elif isinstance(value, str):
            self.text[slot] = self.vocabulary.setdefault(value, len(self.vocabulary))
        elif isinstance(value, int | float):
            if isinstance(value, int) and abs(value) >= _EXACT_INT:
                self.inexact = True
            self.number[slot] = float(value)
        elif isinstance(value, list):
            self.lists[slot] = value
            for item in value:
                if isinstance(item, int) and not isinstance(item, bool) and abs(item) >= _EXACT_INT:
                    self.inexact = True
                self.items.setdefault(_item_key(item), set()).add(slot)


def _item_key(value: Any) -> tuple[str, Any]:
    """A list item's identity: its kind and value (1, 1.0 and True differ in kind only
    where the where language says they do: numbers are one kind)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, str):
        return ("str", value)
    return ("number", float(value))


class MetadataColumns:
    """The metadata of one collection's live records, as columns over slots."""

    def __init__(self) -> None:
        self.slot_of: dict[int, int] = {}  # record key -> slot
        self.keys = np.zeros(0, dtype=np.int64)  # slot -> record key
        self.alive = np.zeros(0, dtype=bool)
        self.size = 0  # slots handed out
        self.live = 0
        self.columns: dict[str, _Column] = {}
        self.applied = 0  # the store's write sequence these columns reflect
        self.version = 0  # bumped on every change (a cache key)
        self._segment_slots: weakref.WeakKeyDictionary[Any, npt.NDArray[np.int64]] = (
            weakref.WeakKeyDictionary()
        )

    def __len__(self) -> int:
        return self.live

    def upsert(self, rows: Iterable[tuple[int, Mapping[str, Any] | None]]) -> None:
        """Store (key, metadata) pairs: new keys get slots, known ones are replaced."""
        for key, metadata in rows:
            slot = self.slot_of.get(key)
            if slot is None:
                slot = self._new_slot(key)
            else:
                for old in self.columns.values():
                    old.clear(slot)
            for name, value in (metadata or {}).items():
                column = self.columns.get(name)
                if column is None:
                    column = self.columns[name] = _Column()
                column.reserve(self.keys.shape[0])
                column.set(slot, value)
        self.version += 1

    def _new_slot(self, key: int) -> int:
        slot = self.size
        self.size += 1
        self.keys = _grow(self.keys, self.size, -1)
        self.alive = _grow(self.alive, self.size, False)
        for column in self.columns.values():
            column.reserve(self.keys.shape[0])
        self.keys[slot] = key
        self.alive[slot] = True
        self.slot_of[key] = slot
        self.live += 1
        return slot

    def delete(self, keys: Iterable[int]) -> None:
        """Forget records (their slots stay, dead)."""
        for key in keys:
            slot = self.slot_of.pop(int(key), None)
            if slot is None:
                continue
            self.alive[slot] = False
            self.live -= 1
            for column in self.columns.values():
                column.clear(slot)
        self.version += 1

    def slots_of(self, keys: KeyArray) -> npt.NDArray[np.int64]:
        """Slot of each key (-1 for keys without one)."""
        get = self.slot_of.get
        return np.fromiter((get(int(k), -1) for k in keys), dtype=np.int64, count=len(keys))

    def segment_slots(self, segment: Any) -> npt.NDArray[np.int64]:
        """The slot of each row of an index segment (``segment.keys``), cached while the
        segment keeps its rows (slots never move)."""
        rows = segment.keys.shape[0]
        cached = self._segment_slots.get(segment)
        if cached is None or cached.shape[0] != rows:
            cached = self._segment_slots[segment] = self.slots_of(segment.keys)
        return cached

    # -- evaluation --------------------------------------------------------------------

    def mask(self, condition: Condition, window: slice | None = None) -> BoolArray:
        """Slots of live records that match, as a boolean mask over ``[0, size)`` (or
        over ``window`` of it).

        Raises:
            Unsupported: the filter needs SQL (see the module docstring).
        """
        window = window or slice(0, self.size)
        return self._eval(condition, window) & self.alive[window]

    def estimate(self, condition: Condition, sample: int = 1024) -> int:
        """Matching records estimated from about ``sample`` evenly spread slots (what a
        planner would guess without evaluating the filter over everything)."""
        if self.size <= sample:
            return int(self.mask(condition).sum())
        # A prime stride: metadata that repeats with a period (row % 1000) is not
        # sampled at one phase only.
        step = _next_prime(self.size // sample)
        window = slice(0, self.size, step)
        seen = self.alive[window]
        hits = self.mask(condition, window)
        return round(int(hits.sum()) * self.live / max(int(seen.sum()), 1))

    def _eval(self, condition: Condition, window: slice) -> BoolArray:
        if isinstance(condition, Not):
            return ~self._eval(condition.item, window)
        if isinstance(condition, All | Any_):
            parts = (self._eval(item, window) for item in condition.items)
            out = next(parts).copy()
            for part in parts:
                if isinstance(condition, All):
                    out &= part
                else:
                    out |= part
            return out
        return self._field(condition, window)

    def _field(self, condition: Field, window: slice) -> BoolArray:
        length = len(range(*window.indices(self.size)))
        column = self.columns.get(condition.key)
        if column is None:  # no record has the key
            absent = condition.op == "$exists" and condition.operand is False
            return np.full(length, absent, dtype=bool)
        column.reserve(self.keys.shape[0])
        op, operand = condition.op, condition.operand
        if op == "$exists":
            present = column.present[window]
            return present.copy() if operand else ~present
        if column.inexact:
            raise Unsupported(f"{condition.key!r} holds integers beyond 2**53")
        if op == "$eq":
            return self._equals(column, operand, window)
        if op == "$in":
            return self._one_of(column, operand, window, length)
        if op == "$contains":
            _check_exact(operand)
            out = np.zeros(self.size, dtype=bool)
            slots = column.items.get(_item_key(operand))
            if slots:
                out[np.fromiter(slots, dtype=np.int64, count=len(slots))] = True
            return out[window]
        _check_exact(operand)
        values = column.number[window]
        with np.errstate(invalid="ignore"):  # NaN (not a number) compares False
            if op == "$gt":
                out = values > operand
            elif op == "$gte":
                out = values >= operand
            elif op == "$lt":
                out = values < operand
            else:
                out = values <= operand
        return np.asarray(out, dtype=bool)

    def _one_of(
        self, column: _Column, values: tuple[Any, ...], window: slice, length: int
    ) -> BoolArray:
        """Slots holding any of ``values``: one np.isin per kind, so that 100,000
        values cost one pass over the column, not one each."""
        if len(values) <= 4:
            out = np.zeros(length, dtype=bool)
            for item in values:
                out |= self._equals(column, item, window)
            return out
        codes = [
            column.vocabulary[v] for v in values if isinstance(v, str) and v in column.vocabulary
        ]
        numbers = [v for v in values if not isinstance(v, bool | str)]
        flags = [int(v) for v in values if isinstance(v, bool)]
        for number in numbers:
            _check_exact(number)
        out = np.zeros(length, dtype=bool)
        if codes:
            out |= np.isin(column.text[window], codes)
        if numbers:
            out |= np.isin(column.number[window], np.array(numbers, dtype=np.float64))
        if flags:
            out |= np.isin(column.flag[window], flags)
        return out

    def _equals(self, column: _Column, value: Any, window: slice) -> BoolArray:
        if isinstance(value, bool):
            out = column.flag[window] == int(value)
        elif isinstance(value, str):
            code = column.vocabulary.get(value)
            if code is None:
                return np.zeros(len(range(*window.indices(self.size))), dtype=bool)
            out = column.text[window] == code
        else:
            _check_exact(value)
            out = column.number[window] == float(value)
        return np.asarray(out, dtype=bool)


def _next_prime(n: int) -> int:
    """The smallest prime >= n (n >= 2)."""
    n = max(n, 2)
    while any(n % d == 0 for d in range(2, int(n**0.5) + 1)):
        n += 1
    return n


def _check_exact(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _EXACT_INT:
        raise Unsupported(f"the operand {value} is an integer beyond 2**53")
