"""Indexes over vectors keyed by int64 row keys (exact now; ANN over faiss to come)."""

from latentdb.index._flat import FlatIndex, SearchHits

__all__ = ["FlatIndex", "SearchHits"]
