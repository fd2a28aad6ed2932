"""Index kinds as a registry of descriptors: one frozen :class:`IndexKindDescriptor` per
kind of segment index, saying everything the rest of the package asks of a kind.

A new kind is one descriptor in :data:`INDEX_KIND_REGISTRY` plus its tests: the spec
accepts its name, sealed segments build it with its factory and search it with its
knobs, tuning climbs its ladder, and quantized kinds re-rank exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import faiss as _faiss

from latentdb.index._buffers import reserve_codes

if TYPE_CHECKING:
    from latentdb.index._spec import IndexSpec

__all__ = [
    "ANN_KINDS",
    "EXACT_KIND",
    "FILTERED_EF_MAX",
    "INDEX_KIND_REGISTRY",
    "REDUCED_RERANKS",
    "IndexKindDescriptor",
    "filtered_ef",
    "index_kind",
]

# faiss's SWIG type stubs lack most classes used here (SearchParametersHNSW, downcasts).
faiss: Any = _faiss

# A masked graph search keeps only allowed rows as results but walks the whole graph:
# with a fraction f of the rows allowed it needs a wider beam to find k of them. The
# widest beam filtered_ef gives.
FILTERED_EF_MAX = 1024

# Search-knob ladders, cheapest first. Tuning climbs them to the first rung that meets
# the target, then bisects down to the rung below (any integer in between), so the
# rungs only need to bracket the knob, not to be fine (issue 18: ef 48 picked where 36
# met the target cost ~30% of qps1).
_EF_LADDER = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
_NPROBE_LADDER = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
# Re-rank depths (candidates per result) tried for reduced segments: how many the target
# needs depends on how much of the space the kept dimensions hold.
REDUCED_RERANKS = (2, 4, 8, 16)


def filtered_ef(ef: int, fraction: float) -> int:
    """The beam width of a graph search where ``fraction`` of the rows are live, from the
    one tuned unfiltered: ``ef / fraction ** 0.4``, for the deleted rows a segment still
    masks: with 70% of a segment deleted, recall@10 fell to 0.76 at the tuned beam
    (tests/test_lifecycle.py, issue 15).

    A rule fitted to one data set, so filters do not rely on it: the planner measures the
    beam each filter needs on the queries asked (latentdb/query/_tuning.py). On the PyPI
    MiniLM graph (100k, M=32) recall 0.95 took about 1x the unfiltered beam with half the
    rows allowed and 2x with a tenth, as the rule gives, but 6x with a tenth chosen along
    one direction of the space, where the rule gives 2.5x (issue 18). It still sets the
    beam of a masked search whose caller gives other knobs but no ``ef``."""
    return int(min(FILTERED_EF_MAX, max(ef, math.ceil(ef / max(fraction, 1e-3) ** 0.4))))


# -- factories: the faiss index_factory string of each kind -----------------------------


def _nlist(spec: IndexSpec, rows: int) -> int:
    # faiss wants >= 39 training points per list; 4 * sqrt(n) lists is its own advice.
    # A set nlist is capped the same way: k-means cannot make more lists than a small
    # segment (a first seal) has points, and faiss raised on every seal (issue 15).
    most = max(1, rows // 39)
    nlist = min(spec.nlist, most) if spec.nlist else min(int(4 * math.sqrt(rows)), most)
    return max(1, nlist)


def _hnsw_factory(spec: IndexSpec, rows: int, dimension: int) -> str:
    return f"HNSW{spec.m},Flat"


def _hnsw_sq8_factory(spec: IndexSpec, rows: int, dimension: int) -> str:
    return f"HNSW{spec.m},SQ8"


def _ivf_factory(spec: IndexSpec, rows: int, dimension: int) -> str:
    return f"IVF{_nlist(spec, rows)},Flat"


def _ivf_pq_factory(spec: IndexSpec, rows: int, dimension: int) -> str:
    pq_bytes = spec.pq_bytes or max(1, dimension // 8)
    while dimension % pq_bytes:  # sub-vectors must split the dimension evenly
        pq_bytes -= 1
    # "np": no polysemous training, which index_factory turns on by default and which
    # took 176 of 178 s of training on 3,000 rows (it only helps Hamming pre-filtering).
    return f"IVF{_nlist(spec, rows)},PQ{pq_bytes}np"


# -- what a new index needs after the factory, and its search parameters ----------------


def _configure_graph(index: Any, spec: IndexSpec, capacity: int) -> None:
    """The build beam, and room for ``capacity`` codes before any is added."""
    faiss.downcast_index(index).hnsw.efConstruction = spec.ef_construction
    reserve_codes(index, capacity)


def _configure_nothing(index: Any, spec: IndexSpec, capacity: int) -> None:
    """Lists need nothing beyond the factory string."""


def _graph_parameters(
    descriptor: IndexKindDescriptor, params: Mapping[str, int], live_fraction: float | None
) -> Any:
    parameters = faiss.SearchParametersHNSW()
    ef = int(params.get("ef", descriptor.search_defaults["ef"]))
    if live_fraction is not None:  # deleted rows masked: a wider beam finds k live ones
        ef = filtered_ef(ef, live_fraction)
    parameters.efSearch = ef
    return parameters


def _list_parameters(
    descriptor: IndexKindDescriptor, params: Mapping[str, int], live_fraction: float | None
) -> Any:
    parameters = faiss.SearchParametersIVF()
    parameters.nprobe = int(params.get("nprobe", descriptor.search_defaults["nprobe"]))
    return parameters


def _no_parameters(
    descriptor: IndexKindDescriptor, params: Mapping[str, int], live_fraction: float | None
) -> Any:
    raise ValueError(f"a {descriptor.name} index is scanned exactly, not searched by faiss")


@dataclass(frozen=True)
class IndexKindDescriptor:
    """One kind of index: how to build it, its knobs, how to tune it.

    Attributes:
        name: The kind's name in :class:`IndexSpec` (``"hnsw"``, ...).
        factory: The faiss ``index_factory`` string for (spec, rows, dimension); None
            for the exact kind, which builds no faiss index.
        configure: Called on a new faiss index with (index, spec, capacity in rows).
        parameters: Makes faiss search parameters from (descriptor, settings, the
            fraction of live rows when deleted rows are masked, else None).
        build_knobs: The :class:`IndexSpec` fields the build reads.
        search_defaults: Search knobs ``query(params=...)`` takes, and the values used
            before any is tuned.
        knob: The knob tuning climbs (``"ef"``, ``"nprobe"``; None: nothing to tune).
        knob_ladder: Its values, cheapest first: the rungs tuning climbs before it
            bisects between the first that meets the target and the one below.
        rerank_depths: Re-rank depths tuning tries (one ladder each); empty: none.
        graph: A graph (HNSW): masked rows need a wider beam (:func:`filtered_ef`).
        trains: The build needs a training sample (k-means, quantizer).
        quantized: Its codes are lossy: candidates are re-scored exactly with the float32
            vectors kept beside the index.
        min_rows: The fewest rows it can be built from (ivf-pq trains 256 centroids per
            sub-quantizer, 8-bit codes, and faiss refuses fewer points).
    """

    name: str
    factory: Callable[[IndexSpec, int, int], str] | None
    configure: Callable[[Any, IndexSpec, int], None] = _configure_nothing
    parameters: Callable[[IndexKindDescriptor, Mapping[str, int], float | None], Any] = (
        _no_parameters
    )
    build_knobs: tuple[str, ...] = ()
    search_defaults: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    knob: str | None = None
    knob_ladder: tuple[int, ...] = ()
    rerank_depths: tuple[int, ...] = ()
    graph: bool = False
    trains: bool = False
    quantized: bool = False
    min_rows: int = 1

    @property
    def exact(self) -> bool:
        """Whether this kind is the exact scan (no faiss index)."""
        return self.factory is None

    @property
    def search_knobs(self) -> frozenset[str]:
        """The knobs ``query(params=...)`` accepts for this kind."""
        return frozenset(self.search_defaults)

    @property
    def stores_vectors(self) -> bool:
        """Whether the faiss index holds the exact float32 vectors itself (then no copy
        is kept beside it, unless the segment is reduced)."""
        return not self.exact and not self.trains and not self.quantized

    def trains_with(self, reduce: int | None) -> bool:
        """Whether a build needs a training sample (a reduced build learns a PCA)."""
        return self.trains or reduce is not None

    def min_build_rows(self, reduce: int | None) -> int:
        """The fewest rows a segment can be built from: a PCA to ``reduce`` dimensions
        needs that many rows, every kind needs one (an SQ8 with none to train on
        raised). Below it, optimize() and seals leave the rows exact."""
        return self.min_rows if reduce is None else max(self.min_rows, reduce)

    def new_index(
        self, spec: IndexSpec, *, rows: int, dimension: int, metric: int, capacity: int
    ) -> Any:
        """An empty faiss index (configured, not trained) for ``rows`` rows of
        ``dimension``, with room for ``capacity`` codes where the kind reserves them.

        Args:
            metric: faiss's metric (``faiss.METRIC_L2`` or ``METRIC_INNER_PRODUCT``).

        Raises:
            ValueError: The kind is exact (it builds no faiss index).
        """
        if self.factory is None:
            raise ValueError(f"a {self.name} index is scanned exactly: nothing to build")
        index = faiss.index_factory(dimension, self.factory(spec, rows, dimension), metric)
        self.configure(index, spec, capacity)
        return index

    def search_parameters(
        self, params: Mapping[str, int], *, live_fraction: float | None = None
    ) -> Any:
        """faiss search parameters for ``params`` (defaults where they name none)."""
        return self.parameters(self, params, live_fraction)

    def ladders(self, *, reduced: bool = False) -> list[list[dict[str, int]]]:
        """Search settings to try: one ladder per re-rank depth, each cheapest first.

        Reduced segments re-rank whatever the kind, so they try :data:`REDUCED_RERANKS`.
        """
        if self.knob is None:
            return []
        depths = REDUCED_RERANKS if reduced else self.rerank_depths
        if not depths:
            return [[{self.knob: value} for value in self.knob_ladder]]
        return [[{self.knob: value, "rerank": r} for value in self.knob_ladder] for r in depths]


def _defaults(**values: int) -> Mapping[str, int]:
    return MappingProxyType(values)


_DESCRIPTORS = (
    IndexKindDescriptor(name="flat", factory=None),
    IndexKindDescriptor(
        name="hnsw",
        factory=_hnsw_factory,
        configure=_configure_graph,
        parameters=_graph_parameters,
        build_knobs=("m", "ef_construction"),
        search_defaults=_defaults(ef=64),
        knob="ef",
        knob_ladder=_EF_LADDER,
        graph=True,
    ),
    IndexKindDescriptor(
        name="hnsw-sq8",
        factory=_hnsw_sq8_factory,
        configure=_configure_graph,
        parameters=_graph_parameters,
        build_knobs=("m", "ef_construction"),
        search_defaults=_defaults(ef=64, rerank=4),
        knob="ef",
        knob_ladder=_EF_LADDER,
        rerank_depths=(1, 2, 4),
        graph=True,
        trains=True,  # the 8-bit quantizer learns each dimension's range
        quantized=True,
    ),
    IndexKindDescriptor(
        name="ivf",
        factory=_ivf_factory,
        parameters=_list_parameters,
        build_knobs=("nlist",),
        search_defaults=_defaults(nprobe=32),
        knob="nprobe",
        knob_ladder=_NPROBE_LADDER,
        trains=True,
    ),
    IndexKindDescriptor(
        name="ivf-pq",
        factory=_ivf_pq_factory,
        parameters=_list_parameters,
        build_knobs=("nlist", "pq_bytes"),
        search_defaults=_defaults(nprobe=32, rerank=8),
        knob="nprobe",
        knob_ladder=_NPROBE_LADDER,
        rerank_depths=(4, 8, 16),
        trains=True,
        quantized=True,
        min_rows=256,
    ),
)

INDEX_KIND_REGISTRY: Mapping[str, IndexKindDescriptor] = MappingProxyType(
    {descriptor.name: descriptor for descriptor in _DESCRIPTORS}
)
# The kinds that build a faiss index (all but the exact scan), in registry order.
ANN_KINDS: tuple[str, ...] = tuple(d.name for d in _DESCRIPTORS if not d.exact)
# The exact scan's name: what a collection whose rows are all growing reports.
EXACT_KIND: str = next(d.name for d in _DESCRIPTORS if d.exact)


def index_kind(name: str) -> IndexKindDescriptor:
    """The descriptor of the kind called ``name``.

    Raises:
        KeyError: No kind has that name (``"auto"`` is a policy, not a kind: see
            :meth:`IndexSpec.built_kind`).
    """
    return INDEX_KIND_REGISTRY[name]
