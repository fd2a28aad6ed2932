"""Searching a collection's segments: the growing (exact) one and the sealed (ANN) ones,
merged top-k by distance; the search settings (tuned knobs over the kind's defaults);
and the index's status.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from latentdb.errors import InvalidArgumentError
from latentdb.index._flat import FlatIndex, exact_search
from latentdb.index._kinds import EXACT_KIND, filtered_ef, index_kind
from latentdb.index._lock import BuildLock
from latentdb.index._manifest import SegmentFiles
from latentdb.index._sealed import OneQuery, SealedSegment, fill_rows, merge_hits, merge_to_width
from latentdb.index._sealing import SealingPolicy
from latentdb.index._spec import IndexSpec
from latentdb.space import Metric

__all__ = ["Hits", "IndexStatus", "SegmentSearch", "Selection"]

FloatMatrix = npt.NDArray[np.float32]
KeyArray = npt.NDArray[np.int64]
Hits = tuple[FloatMatrix, KeyArray]


class Selection(Protocol):
    """The rows a filter allows, in the forms the index needs."""

    count: int  # allowed live rows

    def keys(self) -> KeyArray:
        """Every allowed key, ascending."""
        ...

    def contains(self, keys: KeyArray) -> npt.NDArray[np.bool_]:
        """Which of ``keys`` are allowed."""
        ...

    def rows_of(self, segment: SealedSegment) -> npt.NDArray[np.bool_]:
        """A mask over ``segment``'s rows: those allowed."""
        ...

    def selected_in(self, segment: SealedSegment) -> tuple[Any, int]:
        """``segment.selector_for(rows_of(segment))``, kept while the segment is
        unchanged."""
        ...


@dataclass(frozen=True)
class IndexStatus:
    """Where a collection's index stands.

    Attributes:
        kind: The kind of the sealed segments ("flat" while everything is exact).
        spec: The collection's index kind as configured ("auto", "hnsw", ...).
        indexed: Live rows in sealed (ANN) segments.
        pending: Rows in the growing (exact) segment, not yet in an ANN index.
        deleted: Dead rows still taking space in sealed segments (until compaction).
        segments: Number of sealed segments.
        building: Whether a segment is being built in the background now.
        params: Search parameters queries use by default (tuned).
        recall_target: The recall@10 the parameters were tuned for.
        tuned_recall: The recall measured when they were tuned (None before).
        live_recall: Recall@10 at these parameters on the queries users sent, as
            recorded (``IndexSpec.sample_rate``) and measured in the background against
            an exact scan; None until measured.
        live_queries: The recorded queries it was measured on.
    """

    kind: str
    spec: str
    indexed: int
    pending: int
    deleted: int
    segments: int
    building: bool
    params: dict[str, int]
    recall_target: float
    tuned_recall: float | None
    live_recall: float | None = None
    live_queries: int = 0


class SegmentSearch:
    """The segments of one collection and the searches over them (the state that
    :class:`~latentdb.index.SegmentedIndex` sets up, and its read side)."""

    dimension: int
    reduce: int | None
    metric: Metric
    spec: IndexSpec
    folder: Path | None
    lock: threading.RLock
    build_lock: BuildLock
    recall_target: float
    growing: FlatIndex
    sealed: list[tuple[str, SealedSegment]]
    params: dict[str, int]
    tuned_rows: int
    tuned_recall: float | None
    applied: int
    damaged: bool
    files: SegmentFiles
    sealing: SealingPolicy
    _settings: dict[str, int] | None
    _settings_kind: str
    _overrides: dict[tuple[Any, ...], dict[str, int]]
    _builder: threading.Thread | None
    _merger: threading.Thread | None
    _touched: set[int] | None
    _merge_touched: set[int] | None
    _generation: int
    _closed: bool
    # A snapshot's search of one query at its own settings, when it has one segment
    # (SealedSegment.one_query); None on the index itself, whose segments change.
    one: OneQuery | None = None
    # Recall measured on recorded user queries (SegmentedIndex.measure_live).
    live_recall: float | None = None
    live_error: float = 0.0
    live_queries: int = 0

    @property
    def live(self) -> int:
        """Live rows in all segments."""
        return len(self.growing) + sum(segment.live for _, segment in self.sealed)

    def kind(self) -> str:
        """The kind of ANN segment in use, or "flat"."""
        return self.sealed[0][1].kind if self.sealed else EXACT_KIND

    def check_params(self, params: Mapping[str, Any]) -> dict[str, int]:
        """Validate query-time knobs against the index kind in use."""
        allowed = index_kind(self.kind()).search_knobs
        if self.reduce is not None and self.sealed:
            allowed = allowed | {"rerank"}
        out = {}
        for name, value in params.items():
            if name not in allowed:
                raise InvalidArgumentError(
                    f"search parameter {name!r} does not apply to a {self.kind()} index; "
                    f"it takes {sorted(allowed) or 'none'}"
                )
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"search parameter {name!r} must be an int >= 1")
            out[name] = value
        return out

    def search(
        self,
        queries: FloatMatrix,
        k: int,
        *,
        params: Mapping[str, int] | None = None,
        keys: KeyArray | None = None,
        exact: bool = False,
        with_distances: bool = True,
    ) -> Hits:
        """Top-k of each query over all live rows (or only ``keys``), nearest first.

        Args:
            with_distances: False lets the search leave the distances out (None)
                where that saves work: a query that does not return them.

        Returns:
            (distances float32 (nq, k'), keys int64 (nq, k')), k' = min(k, eligible rows).
        """
        nq = queries.shape[0]
        one = self.one
        if one is not None and nq == 1 and params is None and keys is None and not exact:
            hits = one(queries, k, with_distances)
            if hits is not None:
                return hits
        if keys is not None:
            return self._search_subset(queries, k, keys)
        settings = self._settings_for(params)
        if nq == 1 and not exact and self.sealed:
            hits = self._search_one(queries, k, settings)
            if hits is not None:
                return hits
        parts = [self.growing.search(queries, k)]
        for _, segment in self.sealed:
            if exact:
                parts.append(segment.exact(queries, k))
            else:
                parts.append(segment.search(queries, k, settings))
        distances, found, short = merge_to_width(parts, k, nq, min(k, self.live))
        if short.any() and not exact:
            # The graph found fewer than k live rows (many tombstones): scan those queries.
            distances[short], found[short] = self.search(queries[short], k, exact=True)
        return distances, found

    def search_selected(
        self,
        queries: FloatMatrix,
        k: int,
        selection: Selection,
        *,
        params: Mapping[str, int] | None = None,
    ) -> tuple[Hits, dict[str, int]]:
        """Top-k of each query among the rows a filter allows, by graph (or list) search
        with the disallowed rows masked out; queries that find fewer than k allowed
        rows (when k exist) are answered by an exact scan of the allowed rows instead.

        Returns:
            (hits, the search settings used, with "exact_fallbacks": queries re-scanned).
        """
        nq = queries.shape[0]
        settings = dict(self._settings_for(params))
        if "ef" in settings and not (params and "ef" in params):
            settings["ef"] = filtered_ef(settings["ef"], selection.count / max(self.live, 1))
        if nq == 1 and len(self.sealed) == 1 and not len(self.growing):
            segment = self.sealed[0][1]
            distances, found = segment.search_one(
                queries, k, settings, segment_selection := selection.selected_in(segment)
            )
            if found.shape[1] >= min(k, segment_selection[1]):
                settings["exact_fallbacks"] = 0
                return (distances, found), settings
        parts = []
        if len(self.growing):
            parts.append(self.growing.search_allowed(queries, k, selection.contains))
        for _, segment in self.sealed:
            parts.append(
                segment.search(queries, k, settings, selected=selection.selected_in(segment))
            )
        distances, found, short = merge_to_width(parts, k, nq, min(k, selection.count))
        settings["exact_fallbacks"] = int(short.sum())
        if short.any():
            fill_rows(
                distances, found, short, self._search_subset(queries[short], k, selection.keys())
            )
        return (distances, found), settings

    def search_settings(self, params: Mapping[str, int] | None = None) -> dict[str, int]:
        """The settings a search with ``params`` uses (checked; tuned values underneath)."""
        return self._settings_for(params)

    def _set_params(self, params: dict[str, int]) -> None:
        """Install tuned parameters (the settings are derived again on next use)."""
        self.params, self._settings = params, None

    def _settings_for(self, params: Mapping[str, Any] | None) -> dict[str, int]:
        """The settings of a search with ``params`` (checked) over the defaults: the same
        dict object for the same knobs, so segments reuse their faiss parameters."""
        kind = self.kind()
        settings = self._settings
        if settings is None or kind != self._settings_kind:
            defaults = dict(index_kind(kind).search_defaults)
            if self.sealed and self.sealed[0][1].projection is not None:
                defaults["rerank"] = self.sealed[0][1].default_rerank
            settings = self._settings = {**defaults, **self.params}
            self._settings_kind = kind
            self._overrides = {}  # a new dict: snapshots keep the one of their settings
        if not params:
            return settings
        key = tuple(params.items())
        merged = self._overrides.get(key)
        if merged is None:
            if len(self._overrides) >= 64:
                self._overrides.clear()
            merged = self._overrides[key] = {**settings, **self.check_params(params)}
        return merged

    def _search_one(self, query: FloatMatrix, k: int, settings: dict[str, int]) -> Hits | None:
        """One query (1, d): the path of most user queries, kept to few numpy calls.

        The growing segment's rows are merged in only where they beat the sealed
        segments' k-th distance. None when fewer than k live rows were found (the
        caller falls back to the general path, which scans such queries).
        """
        if len(self.sealed) == 1:
            distances, keys = self.sealed[0][1].search_one(query, k, settings)
            if not len(self.growing):  # after optimize(): the graph's answer as it is
                if distances.shape[1] < k and distances.shape[1] < self.live:
                    return None
                return distances, keys
            flat_distances, flat_keys, ordered = distances[0], keys[0], True
        else:
            parts = [segment.search_one(query, k, settings) for _, segment in self.sealed]
            flat_distances = np.concatenate([part[0][0] for part in parts])
            flat_keys = np.concatenate([part[1][0] for part in parts])
            ordered = False
        if len(self.growing):
            bound = np.inf
            if flat_distances.size >= k:
                kth = (
                    flat_distances[k - 1] if ordered else np.partition(flat_distances, k - 1)[k - 1]
                )
                bound = float(kth)
            near, near_keys = self.growing.nearer_than(query[0], bound, k)
            if near.size:
                flat_distances = np.concatenate((flat_distances, near))
                flat_keys = np.concatenate((flat_keys, near_keys))
                ordered = False
        if flat_distances.size < k and flat_distances.size < self.live:
            return None
        if not ordered:
            order = np.argsort(flat_distances, kind="stable")[:k]
            flat_distances, flat_keys = flat_distances[order], flat_keys[order]
        return flat_distances[None, :], flat_keys[None, :]

    def _search_subset(self, queries: FloatMatrix, k: int, keys: KeyArray) -> Hits:
        """Exact search over the given keys (a pre-filtered candidate set)."""
        keys = np.unique(np.asarray(keys, dtype=np.int64))
        parts = [self.growing.search(queries, k, keys=keys)]
        for _, segment in self.sealed:
            rows, held = segment.rows_of(keys)
            rows = rows[held]
            if rows.size:
                matrix = np.ascontiguousarray(segment.vectors[rows], dtype=np.float32)
                distances, positions = exact_search(queries, matrix, k, self.metric)
                parts.append((distances, segment.keys[rows][positions]))
        return merge_hits(parts, k, queries.shape[0])

    def vectors_of(self, keys: KeyArray) -> FloatMatrix:
        """Stored vectors of live ``keys`` (all must be live)."""
        out = np.empty((keys.shape[0], self.dimension), dtype=np.float32)
        in_growing = self.growing.holds(keys)
        if in_growing.any():
            out[in_growing] = self.growing.vectors_of(keys[in_growing])
        for _, segment in self.sealed:
            rows, held = segment.rows_of(keys)
            if held.any():
                out[held] = segment.vectors[rows[held]]
        return out

    def _sequences_of(self, keys: KeyArray) -> KeyArray:
        """The write sequences of live ``keys`` (all must be live)."""
        out = np.zeros(keys.shape[0], dtype=np.int64)
        in_growing = self.growing.holds(keys)
        if in_growing.any():
            out[in_growing] = self.growing.sequences_of(keys[in_growing])
        for _, segment in self.sealed:
            rows, held = segment.rows_of(keys)
            if held.any():
                out[held] = segment.sequences[rows[held]]
        return out

    def live_rows(self, *, vectors: bool = True) -> tuple[KeyArray, FloatMatrix]:
        """Keys of every live row, ascending, and with ``vectors`` their float32 vectors
        (n, d) in the same order; without, an empty (n, 0) array and no copy of them."""
        if not vectors:
            growing_keys = self.growing.live_rows(copy=False)[0]
            sealed = [segment.keys[np.flatnonzero(segment.alive)] for _, segment in self.sealed]
            keys = np.sort(np.concatenate([growing_keys, *sealed]), kind="stable")
            return keys, np.empty((keys.size, 0), dtype=np.float32)
        keys, rows = self._live_rows()
        order = np.argsort(keys, kind="stable")
        return keys[order], rows[order]

    def _live_rows(self, *, copy: bool = True) -> tuple[KeyArray, FloatMatrix]:
        """Keys and float32 vectors of every live row, segment by segment.

        Args:
            copy: False may return the growing segment's own arrays (see
                :meth:`FlatIndex.live_rows`).
        """
        growing_keys, growing_vectors = self.growing.live_rows(copy=copy)
        if not self.sealed:
            return growing_keys, growing_vectors
        parts = [(s.keys, s.vectors, np.flatnonzero(s.alive)) for _, s in self.sealed]
        total = sum(rows.shape[0] for _, _, rows in parts) + growing_keys.shape[0]
        keys = np.empty(total, dtype=np.int64)
        vectors = np.empty((total, self.dimension), dtype=np.float32)
        start = 0
        for segment_keys, segment_vectors, rows in parts:  # one copy, no temporaries
            stop = start + rows.shape[0]
            keys[start:stop] = segment_keys[rows]
            np.take(segment_vectors, rows, axis=0, out=vectors[start:stop])
            start = stop
        keys[start:], vectors[start:] = growing_keys, growing_vectors
        return keys, vectors

    def status(self) -> IndexStatus:
        """Counts and settings for :meth:`Collection.index_status`."""
        kind = self.kind()
        return IndexStatus(
            kind=kind,
            spec=self.spec.kind,
            indexed=sum(segment.live for _, segment in self.sealed),
            pending=len(self.growing),
            deleted=sum(segment.dead for _, segment in self.sealed),
            segments=len(self.sealed),
            building=self._builder is not None or self._merger is not None,
            params=dict(self._settings_for(None)),
            recall_target=self.recall_target,
            tuned_recall=self.tuned_recall,
            live_recall=self.live_recall,
            live_queries=self.live_queries,
        )
