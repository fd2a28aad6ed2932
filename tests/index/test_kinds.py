"""The registry of index kinds: each descriptor builds, searches and tunes its kind."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import pytest

from latentdb.index import (
    ANN_KINDS,
    EXACT_KIND,
    INDEX_KIND_REGISTRY,
    INDEX_KINDS,
    IndexKindDescriptor,
    IndexSpec,
    ann_kind_names,
    index_kind,
)
from latentdb.index._sealed import SealedSegment
from tests._segments import clustered


def test_the_registry_names_every_kind_a_spec_accepts() -> None:
    assert ("auto", *INDEX_KIND_REGISTRY) == INDEX_KINDS
    assert set(INDEX_KIND_REGISTRY) == {"flat", "hnsw", "hnsw-sq8", "ivf", "ivf-pq"}
    assert EXACT_KIND == "flat" and index_kind("flat").exact
    assert ANN_KINDS == ("hnsw", "hnsw-sq8", "ivf", "ivf-pq")
    assert ann_kind_names() == "auto, hnsw, hnsw-sq8, ivf or ivf-pq"
    for name, descriptor in INDEX_KIND_REGISTRY.items():
        assert isinstance(descriptor, IndexKindDescriptor) and descriptor.name == name
        IndexSpec(kind=name)  # accepted
    with pytest.raises(KeyError):
        index_kind("auto")  # a policy, not a kind


def test_descriptors_say_what_each_kind_is() -> None:
    facts = {
        name: (d.graph, d.trains, d.quantized, d.stores_vectors, d.search_knobs, d.min_rows)
        for name, d in INDEX_KIND_REGISTRY.items()
    }
    assert facts == {
        "flat": (False, False, False, False, frozenset(), 1),
        "hnsw": (True, False, False, True, frozenset({"ef"}), 1),
        "hnsw-sq8": (True, True, True, False, frozenset({"ef", "rerank"}), 1),
        "ivf": (False, True, False, False, frozenset({"nprobe"}), 1),
        "ivf-pq": (False, True, True, False, frozenset({"nprobe", "rerank"}), 256),
    }
    assert index_kind("hnsw").trains_with(None) is False
    assert index_kind("hnsw").trains_with(8) is True  # a reduced build learns a PCA
    assert index_kind("ivf-pq").min_build_rows(None) == 256
    assert index_kind("hnsw").min_build_rows(32) == 32


def test_ladders_are_cheapest_first_one_per_rerank_depth() -> None:
    (hnsw,) = index_kind("hnsw").ladders()
    assert hnsw[0] == {"ef": 10} and hnsw[-1] == {"ef": 1024}
    assert [ladder[0]["rerank"] for ladder in index_kind("hnsw-sq8").ladders()] == [1, 2, 4]
    assert [ladder[0]["rerank"] for ladder in index_kind("ivf-pq").ladders()] == [4, 8, 16]
    reduced = index_kind("ivf").ladders(reduced=True)
    assert [ladder[0] for ladder in reduced] == [{"nprobe": 1, "rerank": r} for r in (2, 4, 8, 16)]
    assert index_kind("flat").ladders() == []
    for descriptor in INDEX_KIND_REGISTRY.values():
        for ladder in descriptor.ladders():
            values = [step[descriptor.knob or ""] for step in ladder]
            assert values == sorted(values)


@pytest.mark.parametrize(
    ("kind", "spec", "expected"),
    [
        ("hnsw", IndexSpec(kind="hnsw", m=16), "IndexHNSWFlat"),
        ("hnsw-sq8", IndexSpec(kind="hnsw-sq8"), "IndexHNSWSQ"),
        ("ivf", IndexSpec(kind="ivf", nlist=4), "IndexIVFFlat"),
        ("ivf-pq", IndexSpec(kind="ivf-pq", pq_bytes=5), "IndexIVFPQ"),
    ],
)
def test_factories_build_the_faiss_index_of_their_kind(
    kind: str, spec: IndexSpec, expected: str
) -> None:
    descriptor = index_kind(kind)
    index: Any = faiss.downcast_index(
        descriptor.new_index(spec, rows=1000, dimension=16, metric=faiss.METRIC_L2, capacity=1000)
    )
    assert type(index).__name__ == expected
    if descriptor.graph:
        assert index.hnsw.efConstruction == spec.ef_construction
    if kind == "ivf":
        assert index.nlist == 4
    if kind == "ivf-pq":
        assert index.pq.M == 4  # 5 bytes do not split 16 dimensions: lowered to 4
    assert "ef" in descriptor.search_knobs or "nprobe" in descriptor.search_knobs


def test_search_parameters_widen_a_masked_graph_search_only() -> None:
    plain = index_kind("hnsw").search_parameters({"ef": 32})
    masked = index_kind("hnsw").search_parameters({"ef": 32}, live_fraction=0.1)
    assert plain.efSearch == 32 and masked.efSearch > 32
    assert index_kind("ivf").search_parameters({}, live_fraction=0.1).nprobe == 32
    with pytest.raises(ValueError, match="exactly"):
        index_kind("flat").search_parameters({})
    with pytest.raises(ValueError, match="exactly"):
        index_kind("flat").new_index(IndexSpec(), rows=1, dimension=4, metric=1, capacity=1)


@pytest.mark.parametrize("kind", ANN_KINDS)
def test_every_kind_builds_a_segment_that_finds_its_rows(kind: str) -> None:
    vectors = clustered(600)
    keys = np.arange(600, dtype=np.int64)
    segment = SealedSegment.build(
        kind=kind, spec=IndexSpec(kind=kind), metric="cosine", keys=keys,
        vectors=vectors, sequences=keys + 1,
    )  # fmt: skip
    assert segment.descriptor is index_kind(kind)
    assert segment.reranks == index_kind(kind).quantized
    distances, found = segment.search(vectors[:20], 1, {"ef": 256, "nprobe": 64, "rerank": 8})
    assert (found[:, 0] == keys[:20]).mean() >= 0.9
    assert np.all(distances[:, 0] < 0.05)
