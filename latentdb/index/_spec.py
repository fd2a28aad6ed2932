"""Which index a collection uses, and the numbers that decide it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from latentdb.errors import InvalidArgumentError
from latentdb.index._kinds import ANN_KINDS, EXACT_KIND, INDEX_KIND_REGISTRY

__all__ = [
    "AUTO_MIN_ROWS",
    "FIELD_RANGES",
    "INDEX_KINDS",
    "SEARCH_PARAMS",
    "IndexKind",
    "IndexSpec",
    "ann_kind_names",
]

# "auto" is a policy (see IndexSpec.built_kind); the rest are the registry's kinds.
IndexKind = str
INDEX_KINDS: tuple[str, ...] = ("auto", *INDEX_KIND_REGISTRY)

# Below this many rows "auto" stays exact. On 100k x 384 (2 cores, one query at a time)
# an exact scan ran 390 QPS at 5k rows, 240 at 10k, 150 at 20k and 90 at 50k, while
# building HNSW (M=32, efC=200) cost 2 s at 5k, 5 s at 10k and 12 s at 20k rows: under
# 20k rows the scan is fast enough that the build does not pay (bench numbers in the
# closing note of the ANN issue). The growing segment seals at the same size.
AUTO_MIN_ROWS = 20_000
# The kind "auto" builds from AUTO_MIN_ROWS rows.
_AUTO_ANN_KIND = "hnsw"

# What faiss can build and search, per field (issue 15: m=10**12 was accepted and every
# later optimize() failed):
# - m: HNSW keeps 2*m neighbours per node at level 0 (4 bytes each); 256 is 2 KiB per
#   vector of links, past which the graph costs more than the vectors for any
#   dimension we hold; hnswlib and faiss advise 4-64.
# - ef_construction: the build's beam; recall stops improving long before 4,096 (ann-
#   benchmarks sweeps up to 800) while build time grows in proportion.
# - nlist: IVF lists; k-means wants >= 39 training rows per list, and the default 4 *
#   sqrt(rows) reaches 65,536 only at 268M rows, past one machine.
# - pq_bytes: PQ sub-quantizers of 8 bits; a value that does not divide the dimension
#   is lowered until it does when the index is built, and 4,096 bytes would not
#   compress even a 4,096-d float32 vector much.
# - seal_rows: the growing segment is scanned exactly; past 10M rows a scan of it costs
#   seconds per query, so a bigger value could never be what anyone wants.
FIELD_RANGES: dict[str, tuple[int, int]] = {
    "m": (2, 256),
    "ef_construction": (2, 4096),
    "nlist": (1, 65_536),
    "pq_bytes": (1, 4096),
    "seal_rows": (2, 10_000_000),
    "sample_per_minute": (1, 1_000_000),
    "sample_capacity": (1, 100_000),
}
# The fields that say how the index is built (a saved index built with other values is
# rebuilt); the rest (query sampling) can change without a rebuild.
_SAMPLING_FIELDS = ("sample_rate", "sample_per_minute", "sample_capacity")

# The knobs query(params=...) accepts, by index kind.
SEARCH_PARAMS: dict[str, frozenset[str]] = {
    name: descriptor.search_knobs for name, descriptor in INDEX_KIND_REGISTRY.items()
}


@dataclass(frozen=True)
class IndexSpec:
    """How a collection indexes its vectors.

    Attributes:
        kind: ``"auto"`` (exact while small, then HNSW), ``"flat"`` (always exact),
            ``"hnsw"``, ``"hnsw-sq8"`` (8-bit graph, exact re-rank), ``"ivf"`` or
            ``"ivf-pq"`` (product-quantized lists, exact re-rank).
        m: HNSW neighbours per node (faiss ``M``).
        ef_construction: HNSW build-time beam width.
        nlist: IVF lists; None picks about 4 * sqrt(rows) when the index is built.
        pq_bytes: Bytes per vector for ivf-pq; None picks dimension / 8 (must divide
            the dimension).
        seal_rows: Rows the growing (exact) segment collects before it is sealed into
            an ANN index.
        sample_rate: The share of queries recorded to measure the index's recall on
            what users ask (live recall, :class:`~latentdb.index.QuerySampler`); 0
            records none.
        sample_per_minute: At most this many queries recorded a minute.
        sample_capacity: Recorded queries kept (the oldest go first).
    """

    kind: IndexKind = "auto"
    m: int = 32
    ef_construction: int = 200
    nlist: int | None = None
    pq_bytes: int | None = None
    seal_rows: int = AUTO_MIN_ROWS
    sample_rate: float = 0.01
    sample_per_minute: int = 60
    sample_capacity: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in INDEX_KINDS:
            raise InvalidArgumentError(
                f"index kind must be one of {', '.join(INDEX_KINDS)}; got {self.kind!r}"
            )
        for name, (low, high) in FIELD_RANGES.items():
            value = getattr(self, name)
            if value is None and name in ("nlist", "pq_bytes"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise InvalidArgumentError(
                    f"index {name} must be an integer from {low:,} to {high:,}"
                    f"{' (or None: chosen from the rows)' if name in ('nlist', 'pq_bytes') else ''}"
                    f"; got {value!r}"
                )
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise InvalidArgumentError(f"index sample_rate must be from 0 to 1; got {rate!r}")

    @classmethod
    def parse(cls, value: str | IndexSpec | Mapping[str, Any]) -> IndexSpec:
        """An IndexSpec from a kind name, a dict of fields, or an IndexSpec."""
        if isinstance(value, IndexSpec):
            return value
        if isinstance(value, str):
            return cls(kind=value)
        if isinstance(value, Mapping):
            unknown = [key for key in value if key not in cls.__dataclass_fields__]
            if unknown:
                raise InvalidArgumentError(
                    f"unknown index settings {', '.join(sorted(map(repr, unknown)))}; "
                    f"expected any of {', '.join(sorted(cls.__dataclass_fields__))}"
                )
            return cls(**value)
        raise InvalidArgumentError(f"index must be a kind name or an IndexSpec; got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    def build_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` less the fields a built index does not depend on (what a
        saved index is checked against)."""
        fields = self.to_dict()
        for name in _SAMPLING_FIELDS:
            del fields[name]
        return fields

    @property
    def exact(self) -> bool:
        """Whether this spec never builds an ANN index (its kind is the exact scan)."""
        return self.kind != "auto" and INDEX_KIND_REGISTRY[self.kind].exact

    def built_kind(self, rows: int) -> str:
        """The kind of ANN index to build over ``rows`` rows ("flat": none)."""
        if self.kind == "auto":
            return _AUTO_ANN_KIND if rows >= AUTO_MIN_ROWS else EXACT_KIND
        return self.kind


def ann_kind_names() -> str:
    """The kinds that give an ANN index, for messages: "auto, hnsw, ... or ivf-pq"."""
    names = ["auto", *ANN_KINDS]
    return f"{', '.join(names[:-1])} or {names[-1]}"
