"""Which index a collection uses, and the numbers that decide it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from latentdb.errors import InvalidArgumentError

__all__ = ["AUTO_MIN_ROWS", "INDEX_KINDS", "SEARCH_PARAMS", "IndexKind", "IndexSpec"]

IndexKind = Literal["auto", "flat", "hnsw", "hnsw-sq8", "ivf", "ivf-pq"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)

# Below this many rows "auto" stays exact. On 100k x 384 (2 cores, one query at a time)
# an exact scan ran 390 QPS at 5k rows, 240 at 10k, 150 at 20k and 90 at 50k, while
# building HNSW (M=32, efC=200) cost 2 s at 5k, 5 s at 10k and 12 s at 20k rows: under
# 20k rows the scan is fast enough that the build does not pay (bench numbers in the
# closing note of the ANN issue). The growing segment seals at the same size.
AUTO_MIN_ROWS = 20_000

# The knobs query(params=...) accepts, by index kind.
SEARCH_PARAMS: dict[str, frozenset[str]] = {
    "flat": frozenset(),
    "hnsw": frozenset({"ef"}),
    "hnsw-sq8": frozenset({"ef", "rerank"}),
    "ivf": frozenset({"nprobe"}),
    "ivf-pq": frozenset({"nprobe", "rerank"}),
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
    """

    kind: IndexKind = "auto"
    m: int = 32
    ef_construction: int = 200
    nlist: int | None = None
    pq_bytes: int | None = None
    seal_rows: int = AUTO_MIN_ROWS

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise InvalidArgumentError(
                f"index kind must be one of {', '.join(INDEX_KINDS)}; got {self.kind!r}"
            )
        for name in ("m", "ef_construction", "seal_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise InvalidArgumentError(f"index {name} must be an integer >= 2; got {value!r}")
        for name in ("nlist", "pq_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidArgumentError(
                    f"index {name} must be a positive integer; got {value!r}"
                )

    @classmethod
    def parse(cls, value: str | IndexSpec | Mapping[str, Any]) -> IndexSpec:
        """An IndexSpec from a kind name, a dict of fields, or an IndexSpec."""
        if isinstance(value, IndexSpec):
            return value
        if isinstance(value, str):
            return cls(kind=value)  # type: ignore[arg-type]  # checked in __post_init__
        if isinstance(value, Mapping):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise InvalidArgumentError(f"unknown index settings {sorted(unknown)}")
            return cls(**value)
        raise InvalidArgumentError(f"index must be a kind name or an IndexSpec; got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    def built_kind(self, rows: int) -> str:
        """The kind of ANN index to build over ``rows`` rows ("flat": none)."""
        if self.kind == "auto":
            return "hnsw" if rows >= AUTO_MIN_ROWS else "flat"
        return self.kind
