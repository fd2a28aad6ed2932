"""A filter's allowed rows held apart: as one matrix, scanned exactly, or as an index of
their own: product-quantized codes re-ranked on the rows, or an HNSW graph.

The matrix is the scan of a filter used again: a copy of its allowed rows is read once,
not gathered from the segments (or the whole segment scanned) for every query. The graph
answers a filter that allows too many rows to scan and too few for the collection's
graph to find them cheaply: a graph search with most rows masked out walks past them all
(on the PyPI MiniLM data a 10% filter needed about twice the beam of an unfiltered
search for the same recall, and a filter correlated with the query's neighbourhood five
times). It is built in a background thread; the planner measures its recall on the
filter's own queries before it answers any (``_tuning``). A filter of up to
:data:`SUBSET_CODES_ROWS` rows gets codes instead (:class:`SubsetCodes`): 4-bit product
quantization, scanned whole by faiss's fast scan, the best candidates re-ranked on the
float rows. They are ready in a fraction of a graph's build, and answer faster at
that size.

Both are copies of the rows of sealed segments as a filter allowed them at one moment
(``digest``); rows written since live in the growing segment and are merged in by the
planner.
"""

from __future__ import annotations

import atexit
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence

import faiss
import numpy as np
import numpy.typing as npt

from latentdb.errors import LatentDBWarning
from latentdb.index import IndexSpec, SealedSegment, exact_search, rescore, squared_norms
from latentdb.space import Metric

__all__ = [
    "SUBSET_CODES_ROWS",
    "SUBSET_SPEC",
    "SUBSET_STRATEGIES",
    "Digest",
    "SubsetCodes",
    "SubsetGraph",
    "SubsetMatrix",
    "gather",
    "subset_index",
]

FloatMatrix = npt.NDArray[np.float32]
KeyArray = npt.NDArray[np.int64]
# Per sealed segment: (its keys array's id, rows, allowed live rows, hash of which).
Digest = tuple[tuple[int, int, int, int], ...]

# Subset graphs are small and rebuilt when their filter's rows change: a lighter build
# than a collection's (M=32, efC=200). Their search beam is measured by the planner,
# which makes up for a sparser graph with a wider beam. efC 32, not 64: 10% of the PyPI
# set (10k x 384) built in 1.5 s instead of 3.3 on one core of the loaded 2-core box,
# and reached recall 0.96 at ef 81 in 0.26 ms a query against 0.962 at ef 54 in 0.30;
# on the Gaussian mixture of bench/filtered.py 1.0 s instead of 2.6, 0.984 at ef 24.
# The queries of a new filter are scanned until its graph is ready.
SUBSET_SPEC = IndexSpec(kind="hnsw", m=16, ef_construction=32)
# Filters of up to this many rows get codes (SubsetCodes) rather than a graph. A 10% filter
# of the PyPI set (10k x 384): trained and encoded in 0.07-0.16 s, against 1.0-1.5 s
# for the graph; 76-114 us a query at recall 0.995 (the best 100 re-ranked), against
# 0.26 ms for the graph at 0.96 and 0.7-1.4 ms for the scan. A 50% filter (50k rows):
# 0.38 ms at 0.998, so larger filters, whose scan of codes grows with their rows, take
# a graph.
SUBSET_CODES_ROWS = 50_000
# The plans that answer from a filter's own index.
SUBSET_STRATEGIES = ("subset-hnsw", "subset-pq")
# Codes are trained on this many of the filter's rows, with few k-means rounds: 512 rows
# and 4 rounds trained in 15 ms what 4,096 and 25 did in 1.5 s, at the same recall (10%
# of the PyPI set: 0.964-0.968 at a re-rank of 48, 0.993-0.994 at 100).
_CODES_TRAIN_ROWS = 512
_CODES_TRAIN_ROUNDS = 4
# Fewer rows than this (a filter whose rows were deleted since it was counted) are not
# coded: k-means needs 16 points per sub-quantizer, and re-ranking them all is exact.
_CODES_MIN_ROWS = 64
# A graph is rebuilt for changed rows no sooner than this many times its build took after
# it was built: at most a fifth of a core goes to rebuilding.
_REBUILD_PAUSE = 4.0
# Seconds the interpreter's exit waits for graphs still building: a build thread inside
# faiss while the process tore down aborted it ("terminate called without an active
# exception", bench/filtered.py --first after its last case).
_EXIT_WAIT_S = 10.0
_BUILDING: weakref.WeakSet[SubsetGraph] = weakref.WeakSet()


@atexit.register
def _finish_builds() -> None:
    deadline = time.monotonic() + _EXIT_WAIT_S
    for graph in list(_BUILDING):
        graph.wait(max(0.0, deadline - time.monotonic()))


def gather(
    segments: Sequence[SealedSegment], masks: Sequence[npt.NDArray[np.bool_]]
) -> tuple[KeyArray, FloatMatrix]:
    """The keys and float32 vectors (n, d), C-contiguous, of the rows ``masks`` allow
    (each a mask over its segment's live rows)."""
    keys, vectors = [], []
    for segment, mask in zip(segments, masks, strict=True):
        rows = np.flatnonzero(mask)
        keys.append(segment.keys[rows])
        vectors.append(np.asarray(segment.vectors[rows], dtype=np.float32))
    dimension = segments[0].vectors.shape[1] if segments else 0
    if not keys:
        return np.empty(0, dtype=np.int64), np.empty((0, dimension), dtype=np.float32)
    return np.concatenate(keys), np.ascontiguousarray(np.concatenate(vectors))


class SubsetMatrix:
    """The allowed rows as one matrix, scanned exactly."""

    kind = "flat"

    def __init__(self, keys: KeyArray, matrix: FloatMatrix, metric: Metric, digest: Digest):
        self.keys = keys
        self.matrix = matrix
        self.metric = metric
        self.digest = digest
        self.rows = int(keys.shape[0])
        self._norms = squared_norms(matrix) if metric == "l2" else None

    @property
    def bytes(self) -> int:
        return int(self.matrix.nbytes)

    def search(self, queries: FloatMatrix, k: int) -> tuple[FloatMatrix, KeyArray]:
        """Exact top-k of each query among the rows, nearest first."""
        distances, positions = exact_search(queries, self.matrix, k, self.metric, norms=self._norms)
        return distances, self.keys[positions]


class SubsetGraph:
    """The allowed rows as an HNSW graph of their own, built in a background thread (a
    bare segment: the planner measures its beam, so the build tunes nothing).

    ``rows`` gives the keys and a C-contiguous float32 copy of the rows, called in that
    thread too: for a 10% filter of 1M rows the copy took 0.33 s of the filter's first
    query. ``count`` is how many it will give (``rows`` until the build has them)."""

    kind = SUBSET_SPEC.kind
    strategy = "subset-hnsw"  # the plan's name, and the knob its measurement tunes
    knob = "ef"
    first = 16  # the first beam measured
    quick = False  # whether it builds in a fraction of a second (see SubsetCodes)

    def __init__(
        self,
        rows: Callable[[], tuple[KeyArray, FloatMatrix]],
        count: int,
        metric: Metric,
        digest: Digest,
    ):
        self.keys = np.empty(0, dtype=np.int64)
        self.metric = metric
        self.digest = digest
        self.rows = count
        self.segment: SealedSegment | None = None
        self.failed = False
        self._ready = threading.Event()
        self._started = time.monotonic()
        self._finished = self._took = 0.0
        self._thread = threading.Thread(
            target=self._build, args=(rows,), name="latentdb-subset", daemon=True
        )
        _BUILDING.add(self)
        self._thread.start()

    @property
    def ready(self) -> bool:
        """Built; False for good if the build failed."""
        return self._ready.is_set() and not self.failed

    @property
    def building(self) -> bool:
        return not self._ready.is_set()

    def may_rebuild(self) -> bool:
        """Whether a graph of newer rows may replace this one: not while it builds, nor
        sooner than ``_REBUILD_PAUSE`` times its build took (rows that change all the
        time would keep a core building)."""
        if self.building:
            return False
        return time.monotonic() - self._finished >= _REBUILD_PAUSE * self._took

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the build; whether it is ready."""
        self._ready.wait(timeout)
        return self.ready

    def _build(self, rows: Callable[[], tuple[KeyArray, FloatMatrix]]) -> None:
        try:
            keys, matrix = rows()
            self.keys, self.rows = keys, int(keys.shape[0])
            self._make(keys, matrix)
        except Exception as error:  # the planner goes on with the other plans
            self.failed = True
            warnings.warn(
                f"building an index for a filter failed ({error}); filtered queries use "
                "the collection's index",
                LatentDBWarning,
                stacklevel=1,
            )
        finally:
            self._finished = time.monotonic()
            self._took = self._finished - self._started
            self._ready.set()
            _BUILDING.discard(self)

    def _make(self, keys: KeyArray, matrix: FloatMatrix) -> None:
        """Build the index over the rows (the build's thread)."""
        self.segment = SealedSegment.build(
            kind=SUBSET_SPEC.kind,
            spec=SUBSET_SPEC,
            metric=self.metric,
            keys=keys,
            vectors=matrix,
            sequences=np.zeros(keys.shape[0], dtype=np.int64),
        )

    def search(
        self, queries: FloatMatrix, k: int, params: Mapping[str, int]
    ) -> tuple[FloatMatrix, KeyArray]:
        """Top-k of each query among the rows, nearest first (-1 padded)."""
        assert self.segment is not None  # callers check ready
        if queries.shape[0] == 1:
            return self.segment.search_one(queries, k, params)
        return self.segment.search(queries, k, params)


class SubsetCodes(SubsetGraph):
    """The allowed rows as 4-bit product-quantized codes (faiss's IndexPQFastScan),
    scanned whole; the ``rerank`` best by code are re-scored on the float rows, and the
    top-k of those returned. ``rerank`` is the knob the planner measures, as a graph's
    beam: codes rank only approximately, and how deep the exact re-rank must reach
    for the recall target depends on the data."""

    strategy = "subset-pq"
    knob = "rerank"
    first = 32  # the first depth measured: 3x k
    quick = True

    def _make(self, keys: KeyArray, matrix: FloatMatrix) -> None:
        self.codes, self.matrix = None, matrix
        if keys.shape[0] < _CODES_MIN_ROWS:  # rows deleted since the filter counted them:
            return  # too few to train on, and few enough to re-rank every one
        dimension = matrix.shape[1]
        parts = max(1, dimension // 4)  # 4 dimensions a code, where they divide evenly
        while dimension % parts:
            parts += 1
        metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        codes = faiss.IndexPQFastScan(dimension, parts, 4, metric)
        clustering = codes.pq.cp
        clustering.niter = _CODES_TRAIN_ROUNDS
        clustering.min_points_per_centroid = 1  # a small sample is enough: no warning
        clustering.max_points_per_centroid = _CODES_TRAIN_ROWS
        rng = np.random.default_rng(keys.shape[0])
        count = keys.shape[0]
        sample = (
            rng.choice(count, _CODES_TRAIN_ROWS, replace=False)
            if count > _CODES_TRAIN_ROWS
            else slice(None)
        )
        codes.train(np.ascontiguousarray(matrix[sample]))
        codes.add(matrix)
        self.codes = codes

    def search(
        self, queries: FloatMatrix, k: int, params: Mapping[str, int]
    ) -> tuple[FloatMatrix, KeyArray]:
        """Top-k of each query among the rows, nearest first (-1 padded)."""
        depth = min(max(k, int(params[self.knob])), self.rows)
        if self.codes is None:  # every row re-ranked: exact
            positions = np.broadcast_to(np.arange(self.rows), (queries.shape[0], self.rows))
        else:
            query_rows = np.ascontiguousarray(queries, dtype=np.float32)
            _, positions = self.codes.search(query_rows, depth)
        missing = positions < 0
        distances, positions = rescore(
            queries, self.matrix, np.where(missing, 0, positions), self.metric,
            missing=missing if missing.any() else None,
        )  # fmt: skip
        distances, positions = distances[:, :k], positions[:, :k]
        found = self.keys[positions]
        found[~np.isfinite(distances)] = -1
        if found.shape[1] < k:  # fewer rows than k
            width = k - found.shape[1]
            found = np.pad(found, ((0, 0), (0, width)), constant_values=-1)
            distances = np.pad(distances, ((0, 0), (0, width)), constant_values=np.inf)
        return distances, found


def subset_index(
    rows: Callable[[], tuple[KeyArray, FloatMatrix]], count: int, metric: Metric, digest: Digest
) -> SubsetGraph:
    """The index a filter of ``count`` rows gets of its own: codes up to
    :data:`SUBSET_CODES_ROWS`, else a graph. Built in a background thread."""
    kind = SubsetCodes if count <= SUBSET_CODES_ROWS else SubsetGraph
    return kind(rows, count, metric, digest)
