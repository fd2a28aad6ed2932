"""A sealed segment: a faiss ANN index over a fixed set of rows, with a tombstone mask.

Rows are numbered 0..n-1 inside faiss; ``keys[row]`` maps back (ascending as built;
rows added later by :meth:`SealedSegment.extend` may come in any key order).
Deleted (or replaced) rows stay in the graph or lists and are skipped at search time
with an ``IDSelectorBitmap`` of the live rows, so a deleted key is never returned.
Quantized kinds (hnsw-sq8, ivf-pq) fetch ``rerank`` times more candidates and re-score
them exactly with the float32 vectors, which are kept beside the index.

A *reduced* segment (a collection created with ``reduce=r``) learns a PCA of its rows
(faiss ``PCAMatrix``) and indexes their projections on the top ``r`` components; queries
are projected the same way. Its original vectors are kept beside the index, like a
quantized kind's, and every candidate is re-scored with them: distances are always the
exact ones of the collection's space, and only which rows are found depends on the
reduction. The projection is not centred: the differences of two rows, on which L2 (and
cosine, on unit rows) depend, do not see the mean, and an inner product with the mean
left out changes by the same amount for every row. The reduced index ranks by L2 for
cosine and l2 spaces (projected unit vectors are no longer unit length) and by inner
product for ip.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import faiss as _faiss
import numpy as np
import numpy.typing as npt

from latentdb.index._buffers import owned_copy, storage_view
from latentdb.index._distance import faiss_distances, faiss_distances_of_one, squared_norms
from latentdb.index._flat import exact_search, rescore
from latentdb.index._kinds import FILTERED_EF_MAX, filtered_ef, index_kind
from latentdb.index._memory import populate
from latentdb.index._segment_files import (
    VECTORS_FILE,
    Checksums,
    PackFile,
    read_segment,
    write_segment,
)
from latentdb.index._spec import IndexSpec
from latentdb.space import Metric

__all__ = [
    "FILTERED_EF_MAX",
    "BuildCancelled",
    "OneQuery",
    "SealedSegment",
    "filtered_ef",
    "merge_hits",
    "min_build_rows",
]

# faiss's SWIG type stubs lack most classes used here (SearchParametersHNSW, downcasts).
faiss: Any = _faiss
# The C function behind faiss.swig_ptr (a Python wrapper that only calls it): one frame
# less, three times a query.
_swig_ptr: Any = getattr(getattr(faiss, "swigfaiss", None), "_swigfaiss", faiss).swig_ptr
_FLOAT32, _INT64 = np.dtype(np.float32), np.dtype(np.int64)

FloatMatrix = npt.NDArray[np.float32]
KeyArray = npt.NDArray[np.int64]
Hits = tuple[FloatMatrix, KeyArray]


class OneQuery(Protocol):
    """:meth:`SealedSegment.one_query`'s search of one query (1, d): its top ``k``,
    the distances None unless wanted; None where the general path must answer."""

    def __call__(self, query: FloatMatrix, k: int, distances: bool = True) -> Hits | None: ...


# Rows copied out and added to faiss at a time by build(): 15 MB of 384-d float32.
_ADD_CHUNK = 10_000


class BuildCancelled(Exception):
    """A build stopped between chunks because its result is no longer wanted."""


# Candidates per result a reduced segment re-scores when no tuned value exists yet.
REDUCED_RERANK = 4


def _faiss_metric(metric: Metric, *, reduced: bool = False) -> int:
    """faiss's metric for an index of this space's vectors (or of their projections)."""
    by_l2 = metric == "l2" or (reduced and metric == "cosine")
    return int(faiss.METRIC_L2 if by_l2 else faiss.METRIC_INNER_PRODUCT)


def learn_projection(training: FloatMatrix, dimension: int) -> FloatMatrix:
    """The top ``dimension`` principal axes of ``training`` (rows), as a float32
    (dimension, d) matrix with orthonormal rows (faiss's PCA: covariance, eigenvectors)."""
    pca = faiss.PCAMatrix(training.shape[1], dimension)
    pca.train(np.ascontiguousarray(training, dtype=np.float32))
    axes = faiss.vector_to_array(pca.A).reshape(-1, training.shape[1])[:dimension]
    return np.ascontiguousarray(axes, dtype=np.float32)


def min_build_rows(kind: str, reduce: int | None) -> int:
    """The fewest rows a segment of ``kind`` can be built from
    (:meth:`IndexKindDescriptor.min_build_rows`)."""
    return index_kind(kind).min_build_rows(reduce)


class SealedSegment:
    """An immutable ANN index over some rows, plus which of them are still alive.

    ``sequences[row]`` is the write sequence of the version of the row that was indexed:
    the row is live only while the store holds its key at that very sequence
    (:meth:`reconcile`), so no order of seals, deletes, updates and crashes can bring a
    deleted or replaced version back.
    """

    def __init__(
        self,
        *,
        kind: str,
        metric: Metric,
        keys: KeyArray,
        index: Any,
        vectors: FloatMatrix,
        sequences: KeyArray,
        projection: FloatMatrix | None = None,
        mapped: bool = False,
        pack: PackFile | None = None,
        storage: Any = None,
    ) -> None:
        self.kind = kind
        self.descriptor = index_kind(kind)
        self.metric = metric
        self.keys = keys
        self.sequences = sequences
        self._sorted_keys, self._key_order = _key_lookup(keys)
        self.index = index
        self.vectors = vectors
        # Reduced segments: the PCA axes (r, d), and their transpose for projecting.
        self.projection = projection
        self._axes = None if projection is None else np.ascontiguousarray(projection.T)
        # Candidates are re-scored with the kept float32 vectors (quantized or reduced).
        self.reranks = self.descriptor.quantized or projection is not None
        # Only an unreduced kind that stores vectors holds the exact ones itself.
        self._in_storage = self.descriptor.stores_vectors and projection is None
        self.alive = np.ones(keys.shape[0], dtype=bool)
        self.dead = 0
        self._selector: Any = None
        self._norms: FloatMatrix | None = None
        # Keyed by (params, id(selector)); holds the selector alive with the parameters.
        self._parameters: dict[tuple[Any, int], Any] = {}
        # The last settings mapping searched with and its parameters: the same dict
        # object comes back query after query (see SegmentedIndex), so no key is built.
        self._last: tuple[Mapping[str, int], Any, Any] | None = None
        # Whether a frozen copy (a reader's snapshot) shares ``alive`` and the index.
        self._shared = False
        # Whether the index's codes are its file's pages (loaded: read_mapped), which
        # faiss cannot grow: extend() takes an owned copy first.
        self.mapped = mapped
        # The file the graph's rows were saved to apart from it (None: not saved so),
        # and the faiss storage read from it, held here: the graph does not own it.
        self.pack = pack
        self._storage = storage

    # -- building, saving, loading -----------------------------------------------

    @classmethod
    def build(
        cls,
        *,
        kind: str,
        spec: IndexSpec,
        metric: Metric,
        keys: KeyArray,
        vectors: FloatMatrix,
        sequences: KeyArray,
        rows: npt.NDArray[np.intp] | None = None,
        spare: int = 0,
        consumed: Callable[[npt.NDArray[np.intp]], None] | None = None,
        reduce: int | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> SealedSegment:
        """Build a segment over ``vectors`` (float32 (n, d)) with unique ``keys``.

        Args:
            keys, sequences: int64 (m,): each built row's key and the write sequence of
                its version, one per row of ``rows``.
            reduce: Index the rows' PCA projections to this many dimensions (learned
                from a sample of the rows), re-scoring candidates with the originals.
            rows: Only these rows of ``vectors`` (one per key): they are copied out a
                chunk at a time, so a build never holds a second copy of the matrix.
            spare: Rows an :meth:`extend` is expected to add soon (hnsw kinds make room
                for them now rather than reallocate, and copy, the storage then).
            consumed: Called with each chunk of ``rows`` once the index holds it (the
                caller may drop them from memory).
            cancelled: Asked before each chunk; True stops the build there.

        Raises:
            BuildCancelled: ``cancelled`` said so.
        """
        if rows is None:
            rows = np.arange(vectors.shape[0])
        selected = rows

        def parts() -> Iterator[tuple[KeyArray, FloatMatrix, KeyArray]]:
            for start in range(0, selected.shape[0], _ADD_CHUNK):
                if cancelled is not None and cancelled():
                    raise BuildCancelled(f"stopped after {start:,} rows")
                chunk = selected[start : start + _ADD_CHUNK]
                stop = start + chunk.shape[0]
                yield keys[start:stop], np.ascontiguousarray(vectors[chunk]), sequences[start:stop]
                if consumed is not None:  # runs once the index holds the chunk
                    consumed(chunk)

        trains = index_kind(kind).trains_with(reduce)
        training = _training_sample(vectors, rows) if trains else None
        return cls.build_from_parts(
            kind=kind, spec=spec, metric=metric, parts=parts(), count=rows.shape[0],
            dimension=vectors.shape[1], spare=spare, training=training, reduce=reduce,
        )  # fmt: skip

    @classmethod
    def build_from_parts(
        cls,
        *,
        kind: str,
        spec: IndexSpec,
        metric: Metric,
        parts: Iterable[tuple[KeyArray, FloatMatrix, KeyArray]],
        count: int,
        dimension: int,
        spare: int = 0,
        training: FloatMatrix | None = None,
        reduce: int | None = None,
    ) -> SealedSegment:
        """Build a segment from ``count`` rows arriving as (keys, vectors, sequences)
        parts, in ascending key order: the rows never need to be in memory all at once.

        Args:
            training: A sample for the kinds that train (all but hnsw) and for reduced
                segments (the PCA).
            reduce: See :meth:`build`.
        """
        descriptor = index_kind(kind)
        projection = axes = None
        indexed = dimension
        if reduce is not None:
            if training is None:
                raise ValueError("a reduced segment needs a training sample for its PCA")
            projection = learn_projection(training, reduce)
            axes = np.ascontiguousarray(projection.T)
            training = np.ascontiguousarray(training @ axes) if descriptor.trains else None
            indexed = reduce
        index = descriptor.new_index(
            spec, rows=count, dimension=indexed, capacity=count + spare,
            metric=_faiss_metric(metric, reduced=projection is not None),
        )  # fmt: skip
        if not index.is_trained:
            if training is None:
                raise ValueError(f"a {kind} segment needs a training sample")
            index.train(training)
        # hnsw's flat storage holds the exact vectors; other kinds keep a float copy.
        in_storage = descriptor.stores_vectors and projection is None
        kept = None if in_storage else np.empty((count, dimension), dtype=np.float32)
        key_parts, sequence_parts, filled = [], [], 0
        for part_keys, part, part_sequences in parts:
            index.add(part if axes is None else np.ascontiguousarray(part @ axes))
            if kept is not None:
                kept[filled : filled + part.shape[0]] = part
            key_parts.append(part_keys)
            sequence_parts.append(part_sequences)
            filled += part.shape[0]
        if filled != count:
            raise ValueError(f"expected {count} rows to build from, got {filled}")
        keys = _concatenated(key_parts)
        sequences = _concatenated(sequence_parts)
        vectors = storage_view(index, (count, dimension)) if kept is None else kept
        return cls(
            kind=kind, metric=metric, keys=keys, index=index, vectors=vectors,
            sequences=sequences, projection=projection,
        )  # fmt: skip

    def save(self, folder: Path, *, pack: Path | None = None) -> Checksums:
        """Write the segment's files into a new ``folder`` (renamed into place by callers).

        Args:
            pack: Where to write a graph's float rows apart from it (see
                :class:`PackFile`); they are then in :attr:`pack`.

        Returns:
            Each file's size and xxh3 hash, for the manifest: :meth:`load` refuses a file
            that does not match.
        """
        checksums, written = write_segment(
            folder,
            index=self.index,
            keys=self.keys,
            sequences=self.sequences,
            vectors=None if self._in_storage else np.asarray(self.vectors),
            projection=self.projection,
            meta={"kind": self.kind, "metric": self.metric},
            pack=pack if self._in_storage else None,
        )
        if written is not None:
            self.pack = written
        if not self._in_storage:
            # From now on read from the file, as a loaded segment does: re-ranking
            # touches only the candidates' pages, and they are the page cache's to
            # drop, not this process's memory. (The mapping survives the rename of
            # the folder into place, and its removal once replaced.)
            self.vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
        return checksums

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        metric: Metric,
        dimension: int,
        checksums: Checksums,
        reduce: int | None = None,
        packs: Path | None = None,
    ) -> SealedSegment:
        """Read a saved segment whose files match ``checksums`` (from :meth:`save`), its
        rows from its pack in the ``packs`` folder where it was saved with one.

        Every row starts alive: :meth:`reconcile` with the store decides which are.

        Raises:
            ValueError, OSError, RuntimeError: a file is missing, damaged, foreign (its
                checksum differs) or the segment was built for another space (or
                another ``reduce``).
        """
        segment = cls(
            **read_segment(
                folder,
                metric=metric,
                dimension=dimension,
                checksums=checksums,
                reduce=reduce,
                packs=packs,
            )
        )
        if segment.mapped or isinstance(segment.vectors, np.memmap):
            threading.Thread(target=segment.prefault, daemon=True, name="latentdb-prefault").start()
        return segment

    def prefault(self) -> bool:
        """Map in the pages of the vectors read from the segment's file (a background
        thread's work, started by :meth:`load`): the first exact scan of a 10% filter
        at 1M rows took ~0.5 s, most of it faulting in the 1.5 GB of vectors a page at
        a time. Holds the segment (and so its mapping) while it runs."""
        vectors = self.vectors
        start = int(vectors.ctypes.data)
        return populate(start, start + int(vectors.nbytes))

    # -- snapshots --------------------------------------------------------------

    def frozen(self) -> SealedSegment:
        """A copy that no later :meth:`remove` or :meth:`extend` of this segment changes,
        sharing its arrays and faiss index (cheap): a later remove copies ``alive``
        first, and the caller of an extend works on :meth:`detached` instead."""
        view = copy.copy(self)
        view._parameters = dict(self._parameters)
        self._shared = True
        return view

    @property
    def shared(self) -> bool:
        """Whether a frozen copy may still search this segment's faiss index."""
        return self._shared

    def detached(self) -> SealedSegment:
        """A copy with its own faiss index and arrays (to extend while readers search
        this one)."""
        index = owned_copy(self.index) if self.mapped else faiss.clone_index(self.index)
        if self._in_storage:
            vectors = storage_view(index, (self.keys.shape[0], self.vectors.shape[1]))
        else:
            vectors = np.array(self.vectors, dtype=np.float32)
        twin = SealedSegment(
            kind=self.kind, metric=self.metric, keys=self.keys.copy(), index=index,
            vectors=vectors, sequences=self.sequences.copy(), projection=self.projection,
        )  # fmt: skip
        twin._set_alive(self.alive.copy())
        return twin

    # -- rows -------------------------------------------------------------------

    @property
    def live(self) -> int:
        """Rows not deleted."""
        return int(self.keys.shape[0]) - self.dead

    def rows_of(self, keys: KeyArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Row numbers of ``keys`` and which of them this segment holds alive."""
        rows, held = self._rows_held(keys)
        held[held] = self.alive[rows[held]]
        return rows, held

    def _rows_held(self, keys: KeyArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Row numbers of ``keys`` and which of them are rows here, alive or dead."""
        sorted_keys = self._sorted_keys
        positions = np.searchsorted(sorted_keys, keys)
        held = positions < sorted_keys.shape[0]
        held[held] = sorted_keys[positions[held]] == keys[held]
        if self._key_order is None:
            return positions, held
        return self._key_order[np.minimum(positions, sorted_keys.shape[0] - 1)], held

    def holds(self, keys: KeyArray) -> npt.NDArray[np.bool_]:
        """Which of ``keys`` are rows of this segment, alive or dead."""
        return self._rows_held(keys)[1]

    def reconcile(self, stored_keys: KeyArray, stored_sequences: KeyArray) -> None:
        """Keep alive only the rows whose version the store still holds.

        Args:
            stored_keys: int64 (n,), ascending: every key the store holds.
            stored_sequences: int64 (n,): the write sequence of each key's version.
        """
        positions = np.searchsorted(stored_keys, self.keys)
        inside = positions < stored_keys.shape[0]
        current = np.zeros(self.keys.shape[0], dtype=bool)
        rows = positions[inside]
        current[inside] = (stored_keys[rows] == self.keys[inside]) & (
            stored_sequences[rows] == self.sequences[inside]
        )
        self._set_alive(self.alive & current)

    def _set_alive(self, alive: npt.NDArray[np.bool_]) -> None:
        self.alive = alive
        self.dead = int(alive.shape[0] - np.count_nonzero(alive))
        self._selector, self._last = None, None
        self._parameters.clear()

    def remove(self, keys: KeyArray) -> None:
        """Mark rows dead (deleted, or replaced by a newer version elsewhere)."""
        rows, held = self.rows_of(keys)
        rows = np.unique(rows[held])
        if rows.size:
            if self._shared:  # a snapshot reads the old mask
                self.alive, self._shared = self.alive.copy(), False
            self.alive[rows] = False
            self.dead += int(rows.size)
            self._selector, self._last = None, None
            self._parameters.clear()

    def extend(self, keys: KeyArray, vectors: FloatMatrix, *, sequences: KeyArray) -> None:
        """Add rows whose keys are not rows here yet (in place), each the version written
        at its ``sequences`` entry."""
        if self._shared:
            raise RuntimeError("extend() of a segment a snapshot searches: extend detached()")
        start = self.keys.shape[0]
        if self.mapped:  # its codes are the file's pages: grow an owned copy
            self.index, self.mapped = owned_copy(self.index), False
            self._storage = None  # the copy owns its own
        self.pack = None  # its rows outgrow the saved pack
        self.index.add(self.indexed(np.ascontiguousarray(vectors, dtype=np.float32)))
        self.keys = np.concatenate([self.keys, keys])
        self.sequences = np.concatenate([self.sequences, np.asarray(sequences, dtype=np.int64)])
        self._sorted_keys, self._key_order = _key_lookup(self.keys)
        self.alive = np.concatenate([self.alive, np.ones(keys.shape[0], dtype=bool)])
        if self._in_storage:  # the storage may have moved when it grew
            self.vectors = storage_view(self.index, (self.keys.shape[0], vectors.shape[1]))
        else:
            self.vectors = np.concatenate([np.asarray(self.vectors[:start]), vectors])
        self._selector, self._norms, self._last = None, None, None
        self._parameters.clear()

    def live_rows(self) -> tuple[KeyArray, FloatMatrix]:
        """Keys and float32 vectors of the live rows (copies)."""
        rows = np.flatnonzero(self.alive)
        return self.keys[rows], np.asarray(self.vectors[rows], dtype=np.float32)

    def memory_bytes(self) -> int:
        """Bytes the faiss index takes when serialized (graph or lists, codes)."""
        return int(faiss.serialize_index(self.index).nbytes)

    # -- search -----------------------------------------------------------------

    def indexed(self, vectors: FloatMatrix) -> FloatMatrix:
        """``vectors`` as the faiss index sees them: projected when the segment is
        reduced, else as they are."""
        if self._axes is None:
            return vectors
        return vectors @ self._axes  # a new C-ordered float32 array

    def _search_parameters(self, params: Mapping[str, int], selector: Any) -> Any:
        """faiss search parameters, cached: making one costs ~16 us, a tenth of a search.

        The same settings dict object comes back query after query (SegmentedIndex
        keeps one per set of knobs): then not even a key is built.
        """
        last = self._last
        if last is not None and last[0] is params and last[1] is selector:
            return last[2]
        cache_key = (tuple(sorted(params.items())), id(selector))
        cached = self._parameters.get(cache_key)
        if cached is None:
            if len(self._parameters) > 64:
                self._parameters.clear()
            cached = self._parameters[cache_key] = self._new_parameters(params, selector)
        self._last = (params, selector, cached)
        return cached

    def _new_parameters(self, params: Mapping[str, int], selector: Any) -> Any:
        live_fraction = None
        if selector is not None and selector is self._selector:  # deleted rows masked
            live_fraction = self.live / max(self.keys.shape[0], 1)
        parameters = self.descriptor.search_parameters(params, live_fraction=live_fraction)
        if selector is not None:
            parameters.sel = selector
            parameters.selector_ref = selector  # faiss holds a bare pointer to it
        return parameters

    def selector_for(self, allowed: npt.NDArray[np.bool_]) -> tuple[Any, int]:
        """A faiss selector of the live rows among ``allowed`` (a mask over the rows),
        and how many rows it selects."""
        allowed = allowed & self.alive
        bits = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(allowed.shape[0], faiss.swig_ptr(bits))
        selector.bits_ref = bits  # faiss keeps only a pointer
        return selector, int(np.count_nonzero(allowed))

    def _live_selector(self) -> Any:
        if self.dead == 0:
            return None
        if self._selector is None:
            bits = np.packbits(self.alive, bitorder="little")
            # faiss keeps a pointer to the bits: the selector object must own a reference.
            selector = faiss.IDSelectorBitmap(self.alive.shape[0], faiss.swig_ptr(bits))
            selector.bits_ref = bits
            self._selector = selector
        return self._selector

    def search(
        self,
        queries: FloatMatrix,
        k: int,
        params: Mapping[str, int],
        *,
        selected: tuple[Any, int] | None = None,
    ) -> tuple[FloatMatrix, KeyArray]:
        """Approximate top-k among live rows (or, with ``selected`` from
        :meth:`selector_for`, among the rows a filter allows): distances (nq, k), keys
        (-1 where missing)."""
        if selected is None:
            live = self.live
            selector = self._live_selector()
        else:
            selector, live = selected
        parameters = self._search_parameters(params, selector)
        if live == 0:
            nq = queries.shape[0]
            return np.full((nq, 0), np.inf, dtype=np.float32), np.full((nq, 0), -1, np.int64)
        rerank = int(params.get("rerank", self.default_rerank))
        # Re-rank depths are tuned at k=10: a k=1 query re-scoring 4 candidates found
        # its nearest row 72% of the time (hnsw-sq8 + reduce=, tests/test_lifecycle.py).
        fetch = min(max(k, 10) * max(rerank, 1), live)
        raw, rows = self.index.search(self.indexed(queries), fetch, params=parameters)
        if self.reranks:
            return self._rerank(queries, rows, k)
        distances = faiss_distances(queries, raw, self.metric)
        distances[rows < 0] = np.inf
        return distances, np.where(rows >= 0, self.keys[rows], -1)

    def search_one(
        self,
        query: FloatMatrix,
        k: int,
        params: Mapping[str, int],
        selected: tuple[Any, int] | None = None,
    ) -> tuple[FloatMatrix, KeyArray]:
        """:meth:`search` for one query (1, d): (1, k') each, nearest first, only hits.

        The float kinds call faiss's C++ search directly into preallocated arrays. Every
        numpy call here costs microseconds: the graph walk before it has pushed Python's
        working set out of the CPU caches (bench/ann.py's one-query-at-a-time loop).
        """
        if selected is None:
            live, selector = self.keys.shape[0] - self.dead, None
        else:
            selector, live = selected
        if self.reranks or live == 0:
            distances, keys = self.search(query, k, params, selected=selected)
            found = keys[0] >= 0
            return distances[:, found], keys[:, found]
        parameters = self._search_parameters(
            params, self._live_selector() if selected is None else selector
        )
        fetch = k if k <= live else live
        raw = np.empty((1, fetch), dtype=np.float32)
        rows = np.empty((1, fetch), dtype=np.int64)
        swig_ptr = _swig_ptr
        self.index.search_c(1, swig_ptr(query), fetch, swig_ptr(raw), swig_ptr(rows), parameters)
        if rows[0, -1] < 0:  # fewer than fetch live rows reached
            hit = rows[0] >= 0
            raw, rows = raw[:, hit], rows[:, hit]
            if not rows.size:
                return raw, rows
        faiss_distances_of_one(raw, self.metric)
        return raw, self.keys[rows]

    def one_query(self, params: Mapping[str, int]) -> OneQuery:
        """:meth:`search_one` of a frozen segment (a snapshot's only one, see
        :class:`~latentdb.index.SearchView`) with ``params``, with everything it looks
        up bound once: the path of most user queries, ~5 us of Python shorter. Its third
        argument False leaves the distances out (None): a query that does not return
        them skips their conversion.

        The search answers None when it does not apply (a re-ranking kind, more hits
        asked than rows live, fewer found): the caller takes the general path.
        """
        live = self.keys.shape[0] - self.dead
        if self.reranks or live == 0:

            def none(query: FloatMatrix, k: int, distances: bool = True) -> Hits | None:
                return None

            return none
        parameters = self._search_parameters(params, self._live_selector())
        search_c, keys, metric = self.index.search_c, self.keys, self.metric
        swig_ptr, empty, f32, i64 = _swig_ptr, np.empty, _FLOAT32, _INT64

        def search(query: FloatMatrix, k: int, distances: bool = True) -> Hits | None:
            if k > live:
                return None
            raw, rows = empty((1, k), f32), empty((1, k), i64)
            search_c(1, swig_ptr(query), k, swig_ptr(raw), swig_ptr(rows), parameters)
            if rows.item(-1) < 0:
                return None
            if distances:
                faiss_distances_of_one(raw, metric)
                return raw, keys[rows]
            return None, keys[rows]  # type: ignore[return-value]

        return search

    @property
    def default_rerank(self) -> int:
        """Candidates per result re-scored when the settings name no ``rerank``."""
        default = self.descriptor.search_defaults.get("rerank", 1)
        return max(default, REDUCED_RERANK) if self.projection is not None else default

    def _rerank(
        self, queries: FloatMatrix, rows: npt.NDArray[np.int64], k: int
    ) -> tuple[FloatMatrix, KeyArray]:
        """Exact distances of the candidates (the bits an exact scan gives), best k."""
        missing = rows < 0
        distances, best = rescore(
            queries, self.vectors, np.maximum(rows, 0), self.metric, missing=missing
        )
        distances, best = distances[:, :k], best[:, :k]
        return distances, np.where(np.isfinite(distances), self.keys[best], -1)

    def exact(self, queries: FloatMatrix, k: int) -> tuple[FloatMatrix, KeyArray]:
        """Exact top-k among live rows (the reference for recall)."""
        if self.metric == "l2" and self._norms is None:
            self._norms = squared_norms(np.asarray(self.vectors, dtype=np.float32))
        alive = self.alive if self.dead else None
        distances, rows = exact_search(
            queries, np.asarray(self.vectors), k, self.metric, alive=alive, norms=self._norms
        )
        return distances, self.keys[rows]


def merge_hits(
    parts: list[tuple[FloatMatrix, KeyArray]], k: int, nq: int
) -> tuple[FloatMatrix, KeyArray]:
    """Merge per-segment top-k lists into one, nearest first (missing hits, key -1 at
    distance inf, sort last)."""
    parts = [p for p in parts if p[0].shape[1]]
    if not parts:
        return np.empty((nq, 0), dtype=np.float32), np.empty((nq, 0), dtype=np.int64)
    if len(parts) == 1:
        distances, keys = parts[0]
    elif nq == 1:  # 1-d: a third of the time of the general case below
        flat_distances = np.concatenate([p[0][0] for p in parts])
        order = np.argsort(flat_distances, kind="stable")[:k]
        distances = flat_distances[order][None, :]
        keys = np.concatenate([p[1][0] for p in parts])[order][None, :]
    else:
        distances = np.concatenate([p[0] for p in parts], axis=1)
        keys = np.concatenate([p[1] for p in parts], axis=1)
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        distances = np.take_along_axis(distances, order, axis=1)
        keys = np.take_along_axis(keys, order, axis=1)
    return distances[:, :k], keys[:, :k]


def merge_to_width(
    parts: list[tuple[FloatMatrix, KeyArray]], k: int, nq: int, wanted: int
) -> tuple[FloatMatrix, KeyArray, npt.NDArray[np.bool_]]:
    """:func:`merge_hits`, then exactly ``wanted`` columns (padded with key -1 at
    distance inf), and which queries came up short of ``wanted`` real hits."""
    distances, keys = merge_hits(parts, k, nq)
    if keys.shape[1] < wanted:
        pad = wanted - keys.shape[1]
        distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
        keys = np.pad(keys, ((0, 0), (0, pad)), constant_values=-1)
    distances, keys = distances[:, :wanted], keys[:, :wanted]
    short: npt.NDArray[np.bool_] = (keys < 0).any(axis=1)  # type: ignore[assignment]  # np.any: +10 us
    return distances, keys, short


def fill_rows(
    distances: FloatMatrix,
    keys: KeyArray,
    rows: npt.NDArray[np.bool_],
    hits: tuple[FloatMatrix, KeyArray],
) -> None:
    """Write ``hits`` of the queries ``rows`` picks into ``distances`` and ``keys`` in
    place, narrower ones padded with key -1 at distance inf. A snapshot and a filter's
    selection made after a write can disagree on which rows exist (the lifecycle machine
    caught an exact fallback over the selection's keys finding fewer than it counted);
    a caller that meets key -1 answers again under the store's lock."""
    found_distances, found_keys = hits
    width = min(found_keys.shape[1], keys.shape[1])
    count = found_keys.shape[0]
    filled_distances = np.full((count, keys.shape[1]), np.inf, dtype=distances.dtype)
    filled_keys = np.full((count, keys.shape[1]), -1, dtype=keys.dtype)
    filled_distances[:, :width] = found_distances[:, :width]
    filled_keys[:, :width] = found_keys[:, :width]
    distances[rows], keys[rows] = filled_distances, filled_keys


def _concatenated(parts: list[KeyArray]) -> KeyArray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _training_sample(vectors: FloatMatrix, rows: npt.NDArray[np.intp]) -> FloatMatrix:
    """At most 100k of ``rows``, a fixed-seed sample: k-means on more buys little (faiss
    docs)."""
    if rows.shape[0] > 100_000:
        rows = np.sort(np.random.default_rng(0).choice(rows, 100_000, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _key_lookup(keys: KeyArray) -> tuple[KeyArray, npt.NDArray[np.intp] | None]:
    """Sorted keys and the rows in that order (None when the rows are in key order)."""
    if keys.size < 2 or bool(np.all(keys[1:] > keys[:-1])):
        return keys, None
    order = np.argsort(keys, kind="stable")
    return keys[order], order
