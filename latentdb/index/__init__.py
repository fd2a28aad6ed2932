"""Indexes over vectors keyed by int64 row keys: exact (flat) and ANN segments (faiss)."""

from latentdb.index._flat import FlatIndex, SearchHits, exact_search
from latentdb.index._lock import BuildLock
from latentdb.index._segments import IndexStatus, SegmentedIndex
from latentdb.index._spec import AUTO_MIN_ROWS, INDEX_KINDS, IndexSpec

__all__ = [
    "AUTO_MIN_ROWS",
    "INDEX_KINDS",
    "BuildLock",
    "FlatIndex",
    "IndexSpec",
    "IndexStatus",
    "SearchHits",
    "SegmentedIndex",
    "exact_search",
]
