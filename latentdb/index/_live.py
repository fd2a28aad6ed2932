"""Queries users send, recorded to measure the index on them (live recall, issue 20).

Tuning measures recall on rows held out of the data, which assumes queries look like
stored rows. They often do not (passages stored, short questions asked; at 1M mixed
rows the tuned index ran at recall 0.82 against a 0.95 target). So a share of the
queries is recorded (:class:`QuerySampler`) and the index later measures its recall on
them against an exact scan, in the background, never on a query's path; when that
recall misses the target, the search knobs are tuned again on those queries.

Only vectors are kept, never texts, bounded in number and saved beside the index
segments (``recorded-queries.npz``) with the last measurement, so both survive a
restart.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["RECORDED_FILE", "UNKNOWN", "QuerySampler"]

FloatMatrix = npt.NDArray[np.float32]
KeyArray = npt.NDArray[np.int64]

RECORDED_FILE = "recorded-queries.npz"
_MINUTE = 60.0
UNKNOWN = -2  # a truth row not computed yet (-1 pads a top-k shorter than k)


class QuerySampler:
    """A bounded record of sampled query vectors.

    :meth:`offer` is on every query's path: one counter decrement unless the query is
    picked (gaps between picks are geometric with mean ``1 / rate``, so no query
    pattern aliases with the sampling), then at most ``per_minute`` a minute.
    """

    def __init__(
        self,
        dimension: int,
        *,
        rate: float,
        per_minute: int,
        capacity: int,
        folder: Path | None,
    ) -> None:
        self.dimension = dimension
        self.rate = float(rate)
        self.per_minute = per_minute
        self.capacity = capacity
        self.path = None if folder is None else folder / RECORDED_FILE
        self._lock = threading.Lock()
        self._random = random.Random(0x11FE)
        # A ring: the newest query at _head - 1, the oldest at _head once full.
        self._ring = np.empty((0, dimension), dtype=np.float32)  # grown to capacity
        self._size = 0
        self._head = 0
        self._minute_started = -math.inf
        self._minute_count = 0
        self.fresh = 0  # recorded since the index last measured them
        self.total = 0  # recorded since opened
        # The index's last measurement on them: (recall, standard error, queries).
        self.measured: tuple[float, float, int] | None = None
        # Each query's exact top-k keys as of write sequence ``truth_applied`` (a row of
        # UNKNOWN where not computed yet), so a measurement scans only new queries
        # while the rows stay the same.
        self._truth: KeyArray | None = None  # a ring like _ring
        self.truth_applied = -1
        self._countdown = self._gap()
        self._load()

    def __len__(self) -> int:
        return self._size

    def offer(self, queries: FloatMatrix) -> bool:
        """Maybe record one of ``queries`` (nq, d); True when one was recorded."""
        self._countdown -= queries.shape[0]
        if self._countdown > 0:
            return False
        return self._record(queries)

    def _gap(self) -> float:
        if self.rate <= 0:
            return math.inf
        if self.rate >= 1:
            return 1
        # Geometric: the number of queries until the next pick, each picked at ``rate``.
        return 1 + math.floor(math.log(1.0 - self._random.random()) / math.log1p(-self.rate))

    def _record(self, queries: FloatMatrix) -> bool:
        with self._lock:
            self._countdown = self._gap()
            now = time.monotonic()
            if now - self._minute_started >= _MINUTE:
                self._minute_started, self._minute_count = now, 0
            if self._minute_count >= self.per_minute:
                return False
            self._minute_count += 1
            if self._head >= self._ring.shape[0]:  # not full, and no room left
                self._grow()
            at = self._head
            self._ring[at] = queries[self._random.randrange(queries.shape[0])]
            if self._truth is not None:
                self._truth[at] = UNKNOWN
            self._head = (at + 1) % self.capacity
            self._size = min(self._size + 1, self.capacity)
            self.fresh += 1
            self.total += 1
        return True

    def _grow(self) -> None:
        """Room for more queries (doubling, up to the capacity; while not yet full the
        ring holds them in order from position 0)."""
        rows = min(self.capacity, max(64, 2 * self._ring.shape[0]))
        ring = np.empty((rows, self.dimension), dtype=np.float32)
        ring[: self._size] = self._ring[: self._size]
        self._ring = ring
        if self._truth is not None:
            truth = np.full((rows, self._truth.shape[1]), UNKNOWN, dtype=np.int64)
            truth[: self._size] = self._truth[: self._size]
            self._truth = truth

    def _order(self) -> npt.NDArray[np.intp]:
        """Ring positions of the recorded queries, oldest first."""
        start = (self._head - self._size) % max(self._ring.shape[0], 1)
        return (start + np.arange(self._size)) % max(self._ring.shape[0], 1)

    def queries(self) -> FloatMatrix:
        """The recorded queries, oldest first (a copy)."""
        with self._lock:
            return self._ring[self._order()]

    def snapshot(self) -> tuple[FloatMatrix, KeyArray | None, int]:
        """(the recorded queries, their known exact top-k as :meth:`keep_truth` left it
        or None, a stamp for :meth:`keep_truth`), copies taken together."""
        with self._lock:
            order = self._order()
            truth = None if self._truth is None else self._truth[order]
            return self._ring[order], truth, self.total

    def keep_truth(self, truth: KeyArray, applied: int, stamp: int) -> None:
        """Remember the exact top-k of the queries :meth:`snapshot` gave at ``stamp``,
        as of write sequence ``applied``; queries recorded since get UNKNOWN rows."""
        with self._lock:
            new = self.total - stamp
            kept = self._size - new  # of the snapshot's, the newest
            if kept < 0 or truth.shape[0] < kept:
                return
            unknown = np.full((new, truth.shape[1]), UNKNOWN, dtype=np.int64)
            ring = np.full((self._ring.shape[0], truth.shape[1]), UNKNOWN, dtype=np.int64)
            ring[self._order()] = np.concatenate((truth[truth.shape[0] - kept :], unknown))
            self._truth, self.truth_applied = ring, applied

    def taken(self) -> None:
        """Mark the queries recorded so far as measured."""
        with self._lock:
            self.fresh = 0

    def clear(self) -> None:
        """Forget every recorded query, on disk too."""
        with self._lock:
            self._size = self._head = 0
            self._truth, self.truth_applied = None, -1
            self.fresh = 0
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def save(self) -> None:
        """Write the recorded queries beside the segments (atomically). A folder that
        cannot be written (a read-only database, a full disk) keeps them in memory
        only: they are a sample, not data."""
        if self.path is None:
            return
        vectors = self.queries()
        temporary = self.path.with_name(f".{RECORDED_FILE}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # no segment saved yet
            measured = np.array(self.measured or (), dtype=np.float64)
            with open(temporary, "wb") as file:
                np.savez(file, queries=vectors, measured=measured)
            os.replace(temporary, self.path)
        except OSError:
            temporary.unlink(missing_ok=True)

    def _load(self) -> None:
        """Take back saved queries; a file that does not read as this space's queries
        is ignored (they are a sample, not data)."""
        if self.path is None or not self.path.exists():
            return
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                vectors, measured = saved["queries"], saved["measured"]
        except (OSError, ValueError, EOFError, KeyError, TypeError):
            return
        if vectors.ndim == 2 and vectors.shape[1] == self.dimension:
            finite = np.isfinite(vectors).all(axis=1)
            kept = np.ascontiguousarray(vectors[finite][-self.capacity :], np.float32)
            self._ring, self._size = kept.copy(), kept.shape[0]
            self._head = self._size % self.capacity
            self.fresh = len(self)
            if measured.shape == (3,) and np.isfinite(measured).all():
                self.measured = (float(measured[0]), float(measured[1]), int(measured[2]))
