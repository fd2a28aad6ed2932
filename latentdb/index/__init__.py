"""Indexes over vectors keyed by int64 row keys: exact (flat) and ANN segments (faiss)."""

from latentdb.index._distance import (
    aligned_distances,
    distance_matrix,
    pair_distances,
    scores_to_distances,
    squared_norms,
)
from latentdb.index._flat import (
    SCORED_IN_PLACE,
    FlatIndex,
    SearchHits,
    exact_search,
    rescore,
    rows_addressable,
    scores_of_rows,
)
from latentdb.index._kinds import (
    ANN_KINDS,
    EXACT_KIND,
    INDEX_KIND_REGISTRY,
    IndexKindDescriptor,
    index_kind,
)
from latentdb.index._lock import BuildLock
from latentdb.index._manifest import PackOwner
from latentdb.index._sealed import SealedSegment, fill_rows, merge_hits, merge_to_width
from latentdb.index._search import SegmentSearch
from latentdb.index._segment_files import PackFile
from latentdb.index._segments import (
    WRITE_BACKLOG_ROWS,
    WRITE_STALL_SECONDS,
    IndexStatus,
    SegmentedIndex,
)
from latentdb.index._spec import AUTO_MIN_ROWS, INDEX_KINDS, IndexSpec, ann_kind_names

__all__ = [
    "ANN_KINDS",
    "AUTO_MIN_ROWS",
    "EXACT_KIND",
    "INDEX_KINDS",
    "INDEX_KIND_REGISTRY",
    "SCORED_IN_PLACE",
    "WRITE_BACKLOG_ROWS",
    "WRITE_STALL_SECONDS",
    "BuildLock",
    "FlatIndex",
    "IndexKindDescriptor",
    "IndexSpec",
    "IndexStatus",
    "PackFile",
    "PackOwner",
    "SealedSegment",
    "SearchHits",
    "SegmentSearch",
    "SegmentedIndex",
    "aligned_distances",
    "ann_kind_names",
    "distance_matrix",
    "exact_search",
    "fill_rows",
    "index_kind",
    "merge_hits",
    "merge_to_width",
    "pair_distances",
    "rescore",
    "rows_addressable",
    "scores_of_rows",
    "scores_to_distances",
    "squared_norms",
]
