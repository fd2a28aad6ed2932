"""The documents and metadata of rows that queries returned lately, kept in memory.

A query that asks for documents and metadatas (the default ``include``) reads its hits'
rows from SQLite: about 100-180 us for ten random rows of a 100k collection, most of a
graph search's own time. Hits repeat across queries, so a bounded cache of hot rows
answers most of them from memory. Rows are dropped from it when written or deleted, here
or in another process (the catch-up passes their keys), and a row read from SQLite while
a write dropped rows is not kept: it may be older than that write.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ROW_CACHE_BYTES", "RowCache"]

# The cache's budget (one per database): documents and metadata JSON, counted in
# characters, plus a fixed cost per row for the Python objects around them.
ROW_CACHE_BYTES = 64 << 20
_ROW_OVERHEAD = 240

Row = tuple[str | None, dict[str, Any] | None]


class RowCache:
    """Documents and metadata by row key, oldest dropped first past ``budget`` bytes.

    Lookups take no lock (dict reads are atomic); fills and drops take a small one.
    """

    def __init__(self, budget: int = ROW_CACHE_BYTES) -> None:
        self.budget = budget
        self._rows: dict[int, tuple[str | None, dict[str, Any] | None, int]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        # Bumped by every drop: a fill read before it may be stale and is not kept.
        self.epoch = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, keys: Iterable[int]) -> tuple[dict[int, Row], list[int]]:
        """The cached rows of ``keys`` (metadata copied: callers may change theirs), and
        the keys not cached."""
        rows = self._rows
        found: dict[int, Row] = {}
        missing: list[int] = []
        for key in keys:
            row = rows.get(key)
            if row is None:
                missing.append(key)
            else:
                metadata = row[1]
                found[key] = (row[0], None if metadata is None else dict(metadata))
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def fill(self, rows: Mapping[int, tuple[str | None, str | None]], epoch: int) -> dict[int, Row]:
        """Keep ``rows`` (key -> document, metadata JSON as stored) read when ``epoch``
        was current, unless a drop came since; return them decoded."""
        decoded: dict[int, Row] = {}
        entries = []
        for key, (document, metadata_json) in rows.items():
            metadata = None if metadata_json is None else json.loads(metadata_json)
            decoded[key] = (document, metadata)
            size = _ROW_OVERHEAD + len(document or "") + len(metadata_json or "")
            entries.append((key, document, metadata, size))
        with self._lock:
            if epoch != self.epoch or self.budget <= 0:
                return decoded
            cached = self._rows
            for key, document, metadata, size in entries:
                old = cached.pop(key, None)
                if old is not None:
                    self._bytes -= old[2]
                # The caller gets its own copy of the metadata: this one stays ours.
                cached[key] = (document, None if metadata is None else dict(metadata), size)
                self._bytes += size
            if self._bytes > self.budget:
                self._evict()
        return decoded

    def _evict(self) -> None:
        """Drop the oldest rows down to three quarters of the budget (under the lock)."""
        cached, goal = self._rows, self.budget * 3 // 4
        while self._bytes > goal and cached:
            key = next(iter(cached))
            self._bytes -= cached.pop(key)[2]

    def drop(self, keys: Iterable[int]) -> None:
        """Forget the rows of ``keys`` (written or deleted)."""
        with self._lock:
            self.epoch += 1
            cached = self._rows
            for key in keys:
                old = cached.pop(key, None)
                if old is not None:
                    self._bytes -= old[2]

    def clear(self) -> None:
        """Forget every row."""
        with self._lock:
            self.epoch += 1
            self._rows.clear()
            self._bytes = 0
