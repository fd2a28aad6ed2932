"""Snapshots of a collection's index, for queries that take no lock.

A :class:`SearchView` is what :class:`~latentdb.index.SegmentedIndex` looks like at one
write sequence: frozen copies of its growing and sealed segments and its search
settings. The index publishes a new one at the end of every change (under the store's
lock); a query takes the latest with one attribute read and searches it while writes,
builds and optimize() go on. No write changes what a published view sees: the growing
segment only appends past a view's rows and copies an array before changing it in place,
a sealed segment copies its tombstone mask before a delete, and a segment that readers
may search is extended as a copy (:meth:`SealedSegment.detached`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latentdb.index._search import SegmentSearch

if TYPE_CHECKING:
    from latentdb.index._compaction import Compaction

__all__ = ["SearchView"]


class SearchView(SegmentSearch):
    """The read side of an index at one moment (see the module): ``search``,
    ``search_selected``, ``vectors_of``, ``live_rows``, ``status``... as on the index."""

    def __init__(self, index: Compaction) -> None:
        """Freeze ``index`` as it is now (call under its lock)."""
        settings = index.search_settings()  # built now, so the view shares the dict
        self.dimension = index.dimension
        self.reduce = index.reduce
        self.metric = index.metric
        self.spec = index.spec
        self.folder = index.folder
        self.recall_target = index.recall_target
        self.growing = index.growing.frozen()
        self.sealed = [(name, segment.frozen()) for name, segment in index.sealed]
        self.params = dict(index.params)
        self.tuned_rows = index.tuned_rows
        self.tuned_recall = index.tuned_recall
        self.applied = index.applied
        self.damaged = index.damaged
        self._settings = settings
        self._settings_kind = index.kind()
        self._overrides = index._overrides
        self._builder = index._builder
        self._merger = index._merger
        self._touched = None
        self._generation = index._generation
        self._closed = False
        if len(self.sealed) == 1 and not len(self.growing):  # after optimize(), mostly
            self.one = self.sealed[0][1].one_query(settings)
