"""Collection: the promise every transport keeps, written once.

Each public method here checks its arguments (through :mod:`latentdb.api._requests`)
and hands a checked request to the implementation's hook (``_write``, ``_query``, ...):
the embedded engine (:mod:`latentdb.engine`), the HTTP client
(:mod:`latentdb.client`) and the sharded collection (:mod:`latentdb.distributed`).
Their signatures, defaults and docstrings exist only here.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.analysis import (
    REPORT_STEPS,
    ComparedSpace,
    IndexMeasurement,
    SpaceComparison,
    SpaceMap,
    SpaceReport,
    build_report,
    check_method,
    compare_spaces,
    shared_positions,
    steps_bar,
)
from latentdb.api._database import check_recall_target
from latentdb.api._requests import (
    FloatMatrix,
    GetRequest,
    Progress,
    QueryRequest,
    Where,
    WriteRequest,
    get_request,
    query_request,
    scroll_request,
    sql_filters,
    write_request,
)
from latentdb.api._results import GetResult, QueryResult, RecallReport
from latentdb.api._validation import MAX_K, RECORDED_QUERIES, check_ids, check_non_negative
from latentdb.embed import ImageInput
from latentdb.errors import InvalidArgumentError
from latentdb.index import EXACT_KIND, IndexStatus
from latentdb.space import LatentSpace
from latentdb.store import SqlFilter

__all__ = ["Collection"]


class Collection(abc.ABC):
    """Records (id, vector, document, metadata) bound to one :class:`LatentSpace`.

    Get one from :meth:`Database.create_collection` or :meth:`Database.get_collection`.
    Every write is one transaction: when it returns the records are on disk, when it
    raises nothing of it was written.
    """

    def __repr__(self) -> str:
        space = self.space
        via = "" if self.alias is None else f", alias={self.alias!r}"
        return (
            f"Collection({self.name!r}{via}, model={space.model!r}, "
            f"dimension={space.dimension}, metric={space.metric!r})"
        )

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The collection's own name (not the alias it was got through)."""

    @property
    @abc.abstractmethod
    def alias(self) -> str | None:
        """The alias this collection was got through and follows, if any."""

    @property
    @abc.abstractmethod
    def space(self) -> LatentSpace:
        """The latent space every vector of this collection belongs to."""

    @property
    @abc.abstractmethod
    def embedder(self) -> str | None:
        """The registered embedder's name, or None when vectors come from outside."""

    @property
    @abc.abstractmethod
    def recall_target(self) -> float:
        """The recall@10 approximate search is tuned to reach."""

    @property
    @abc.abstractmethod
    def require_model(self) -> bool:
        """Whether every write of vectors must name their model (``model=``, the
        space's): True for collections created with ``require_model=True`` (the
        default), False for those created with ``require_model=False`` and for those
        of databases made before the setting existed."""

    def set_recall_target(self, target: float) -> None:
        """Change the recall target (stored) and re-tune the index for it now.

        Raises:
            InvalidArgumentError: not a number in (0, 1].
        """
        target = check_recall_target(target)
        self._for_call()._set_recall_target(target)

    def clear_recorded_queries(self) -> int:
        """Forget the queries the index recorded to measure its live recall (and its
        last measurement on them), on disk too; recording goes on at the index's
        ``sample_rate``.

        Returns:
            How many were forgotten (on a sharded collection, the most any shard held).
        """
        return self._for_call()._clear_recorded_queries()

    def optimize(self) -> None:
        """Seal all rows into one ANN index, drop deleted rows, tune and save, now.

        For bulk loads and benchmarks: returns when done. A collection under the
        ``auto`` threshold (or with ``index="flat"``) stays exact.
        """
        self._for_call()._optimize()

    def index_status(self) -> IndexStatus:
        """Rows indexed, pending in the growing segment and deleted; search settings."""
        return self._for_call()._index_status()

    def evaluate(self, queries: object = None, *, k: int = 10, sample: int = 500) -> RecallReport:
        """Measure recall@k and speed of approximate search against exact search.

        Args:
            queries: Query vectors (nq, d); ``"recorded"``, the queries users sent as
                the index recorded them (``IndexSpec.sample_rate``; on a sharded
                collection, the worst shard's report); or None to use ``sample``
                stored rows (each row's own id is not counted as a hit): rows not in
                the ANN index yet when there are enough, else indexed rows, whose
                recall reads high (``RecallReport.source`` says which).
            k: Neighbours per query.
            sample: Rows sampled when ``queries`` is None.

        Returns:
            A :class:`RecallReport`.
        """
        check_non_negative(k, "k", minimum=1, maximum=MAX_K)
        check_non_negative(sample, "sample", minimum=1)
        target = self._for_call()
        if isinstance(queries, str):
            if queries != RECORDED_QUERIES:
                raise InvalidArgumentError(
                    f"queries must be vectors, {RECORDED_QUERIES!r} or None; got {queries!r}"
                )
            return target._evaluate(queries, None, k=k, sample=sample)
        matrix = None if queries is None else target.space.prepare(queries)
        return target._evaluate(queries, matrix, k=k, sample=sample)

    def count(self) -> int:
        """Number of records."""
        return self._for_call()._count()

    def add(
        self,
        ids: Sequence[str] | str,
        *,
        vectors: object = None,
        documents: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        model: str | None = None,
        progress: Progress | None = None,
        images: Sequence[ImageInput] | None = None,
    ) -> None:
        """Add new records; documents are embedded when no vectors or images are given.

        Args:
            ids: Unique string ids, none of them stored yet.
            vectors: Array-like (n, d) (or (d,) for one id) in this collection's space.
            documents: One text (or None) per id; with ``images``, stored as captions.
            metadatas: One flat dict of str/int/float/bool (or None) per id.
            model: The model the vectors came from; refused if not the collection's.
                Required with ``vectors=`` when the collection's
                :attr:`require_model` is set (the default for new collections);
                texts and images the collection embeds need none.
            progress: Called with the number of documents (or images) embedded so far.
            images: One image per id (file path, encoded bytes or PIL image), embedded
                with the collection's model when it takes images (``"clip:..."``).

        Raises:
            DuplicateIdError: an id repeats, or is already stored.
            ModelRequiredError: ``vectors=`` without ``model=`` where the collection
                requires it; nothing written.
            DimensionMismatchError, InvalidVectorError, InvalidMetadataError,
            InvalidIdError, ModelMismatchError, EmbedderError: bad input; nothing written.
        """
        target = self._for_call()
        request = write_request(
            target, "add", ids, vectors, documents, metadatas, model, progress, images
        )
        target._write(request)

    def upsert(
        self,
        ids: Sequence[str] | str,
        *,
        vectors: object = None,
        documents: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        model: str | None = None,
        progress: Progress | None = None,
        images: Sequence[ImageInput] | None = None,
    ) -> None:
        """Add records, replacing every field of those whose id is already stored.

        Same arguments and errors as :meth:`add`, except that stored ids are allowed.
        """
        target = self._for_call()
        request = write_request(
            target, "upsert", ids, vectors, documents, metadatas, model, progress, images
        )
        target._write(request)

    def update(
        self,
        ids: Sequence[str] | str,
        *,
        vectors: object = None,
        documents: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        model: str | None = None,
        progress: Progress | None = None,
        images: Sequence[ImageInput] | None = None,
    ) -> None:
        """Change fields of stored records; fields left as None keep their value.

        New documents without vectors or images are re-embedded when the collection
        has an embedder. A metadata dict replaces the stored one whole.

        Raises:
            RecordNotFoundError: an id is not stored (nothing is written).
            and the errors of :meth:`add`.
        """
        target = self._for_call()
        request = write_request(
            target, "update", ids, vectors, documents, metadatas, model, progress, images
        )
        target._write(request)

    def delete(
        self,
        ids: Sequence[str] | str | None = None,
        *,
        where: Where | None = None,
        where_document: Where | None = None,
    ) -> int:
        """Delete records by id, by filter, or by both (ids that also pass the filters).

        Ids that are not stored are ignored.

        Returns:
            The number of records deleted.

        Raises:
            InvalidArgumentError: neither ids nor a filter was given.
            FilterError: malformed where or where_document.
        """
        if ids is None and where is None and where_document is None:
            raise InvalidArgumentError(
                "delete needs ids=, where= or where_document=; to remove everything use "
                "Database.delete_collection"
            )
        id_list = None if ids is None else check_ids(ids, allow_empty=True, distinct=False)
        request = GetRequest(
            frozenset(), id_list, None, 0, where, where_document, sql_filters(where, where_document)
        )
        return self._for_call()._delete(request)

    def get(
        self,
        ids: Sequence[str] | str | None = None,
        *,
        where: Where | None = None,
        limit: int | None = None,
        offset: int = 0,
        include: Sequence[str] = ("documents", "metadatas"),
        where_document: Where | None = None,
    ) -> GetResult:
        """Read records by id and/or filter.

        Args:
            ids: Ids to read (missing ones are left out); None for all.
            where: Metadata filter.
            where_document: Document filter (``$contains``, ``$not_contains``,
                full-text ``$match``).
            limit, offset: A page of the matches (in the order of ``ids``, else in
                insertion order).
            include: Any of "vectors", "documents", "metadatas".

        Returns:
            A :class:`GetResult`; fields not included are None.
        """
        request = get_request(
            ids,
            where=where,
            limit=limit,
            offset=offset,
            include=include,
            where_document=where_document,
        )
        return self._for_call()._get(request)

    def scroll(
        self,
        *,
        batch: int = 1000,
        where: Where | None = None,
        where_document: Where | None = None,
        include: Sequence[str] = ("documents", "metadatas"),
    ) -> Iterator[GetResult]:
        """Every matching record, ``batch`` at a time, in insertion order.

        Each page starts after the last record of the one before, so the order is
        stable while others write: nothing is returned twice or skipped (a record
        added meanwhile comes in a later page; one deleted meanwhile may be missing).

        Raises:
            InvalidArgumentError, FilterError: bad batch, include or filters.
        """
        request = scroll_request(batch, where, where_document, include)
        return self._for_call()._scroll(request)

    def query(
        self,
        *,
        vectors: object = None,
        texts: Sequence[str] | str | None = None,
        k: int = 10,
        where: Where | None = None,
        include: Sequence[str] = ("distances", "documents", "metadatas"),
        exact: bool = False,
        model: str | None = None,
        params: Mapping[str, int] | None = None,
        images: Sequence[ImageInput] | None = None,
        explain: bool = False,
        where_document: Where | None = None,
        hybrid: bool = False,
        hybrid_weights: tuple[float, float] = (1.0, 1.0),
    ) -> QueryResult:
        """The ``k`` records nearest each query, nearest first.

        Args:
            vectors: Query vectors (nq, d), or one (d,).
            texts: Query texts (or one str), embedded with the collection's model.
            images: Query images (file paths, encoded bytes or PIL images), embedded
                with the collection's model when it takes images.
            hybrid: With ``texts``, fuse the vector ranking with the full-text (BM25)
                ranking of the same text by reciprocal rank fusion; ``scores`` in the
                result holds the fused score (larger is better), ``distances`` each
                hit's vector distance. Filters apply to both rankings.
            hybrid_weights: (vector, text) weights of the fusion.
            explain: Also return the :class:`~latentdb.query.QueryPlan`: how the query
                was answered (index, scan, filtered), the rows the filter allowed
                (estimated and counted), the search settings and the time per step.
            k: Neighbours per query (fewer come back when fewer records match).
            where: Metadata filter; only matching records are candidates.
            where_document: Document filter (``$contains``, ``$not_contains``,
                full-text ``$match``); only matching records are candidates.
            include: Any of "distances", "documents", "metadatas", "vectors".
            exact: Scan every candidate instead of using the ANN index.
            model: The model the query vectors came from; refused if not the
                collection's.
            params: Search knobs for this call only, overriding the tuned ones:
                ``{"ef": 128}`` (hnsw kinds), ``{"nprobe": 64}`` (ivf kinds),
                ``{"rerank": 4}`` (quantized kinds and collections made with
                ``reduce=``: candidates re-scored exactly, as a multiple of k).

        Returns:
            A :class:`QueryResult`, distances smaller-is-closer in the space's metric.

        Raises:
            InvalidArgumentError: not exactly one of vectors/texts/images, bad k or include.
            DimensionMismatchError, InvalidVectorError, ModelMismatchError,
            EmbedderError, FilterError: bad input.
        """
        if (
            texts is None
            and where is None
            and params is None
            and model is None
            and exact is False
            and images is None
            and explain is False
            and where_document is None
            and hybrid is False
        ):  # the common query: vectors, k and include
            answer = self._query_vectors(vectors, k, include)
            if answer is not None:
                return answer
        target = self._for_call()
        request = query_request(
            target.space,
            vectors,
            texts,
            images,
            k,
            where,
            include,
            exact,
            model,
            params,
            explain,
            where_document,
            hybrid,
            hybrid_weights,
        )  # positional: matching 10 keywords costs every query a microsecond
        return target._query(request)

    def analyze(self, *, sample: int = 2000, k: int = 10) -> SpaceReport:
        """Measure the collection's latent space and advise on metric, index and size.

        ``sample`` rows (fixed seed) are queries against every row, exactly: norms,
        distance concentration next to Gaussian vectors of the same shape, intrinsic
        dimension, hubness, near-duplicates, recall after PCA to fewer dimensions, and
        the index's recall now (:meth:`evaluate`). A bar on stderr shows the steps
        when it is a terminal.

        Args:
            sample: Rows used as queries (all of them when the collection is smaller).
            k: Neighbours per query.

        Returns:
            A :class:`~latentdb.analysis.SpaceReport`.

        Raises:
            InvalidArgumentError: sample under 3, k under 1, or fewer than k + 2 records.
        """
        check_non_negative(sample, "sample", minimum=3)
        check_non_negative(k, "k", minimum=1, maximum=MAX_K)
        return self._for_call()._analyze(sample=sample, k=k)

    def map(
        self, *, method: str = "pca", sample: int = 5000, where: Where | None = None
    ) -> SpaceMap:
        """Place records on a plane, with their ids, documents and metadata.

        Args:
            method: "pca" (linear; global distances), "umap" or "tsne" (neighbourhoods;
                clusters), the last two from the ``maps`` extra.
            sample: Records to place; more matching records are sampled with a fixed
                seed, so the same collection gives the same map.
            where: Metadata filter: only matching records are placed.

        Returns:
            A :class:`~latentdb.analysis.SpaceMap`; draw it with
            :func:`latentdb.analysis.write_map` (HTML or PNG).

        Raises:
            InvalidArgumentError: unknown method, sample under 3, fewer than 3 records.
            FilterError: malformed ``where``.
        """
        method = check_method(method)
        check_non_negative(sample, "sample", minimum=3)
        filters = sql_filters(where, None)
        return self._for_call()._map(method=method, sample=sample, where=where, filters=filters)

    def project(
        self, *, method: str = "pca", sample: int = 5000, where: Where | None = None
    ) -> npt.NDArray[np.float32]:
        """2-D coordinates of a fixed-seed sample of the records: :meth:`map`'s
        ``coordinates`` (its ``ids`` say which records they are).

        Returns:
            float32 (n, 2), n = min(sample, matching records).
        """
        return self.map(method=method, sample=sample, where=where).coordinates

    # -- what each implementation provides -------------------------------------------

    def _for_call(self) -> Collection:
        """The collection one call works on: through an alias, its target now, held
        for the whole call, so that a switch during a call cannot mix two collections
        (say, embed with one model and write into a collection of another)."""
        return self

    @abc.abstractmethod
    def _set_recall_target(self, target: float) -> None: ...

    @abc.abstractmethod
    def _clear_recorded_queries(self) -> int: ...

    @abc.abstractmethod
    def _optimize(self) -> None: ...

    @abc.abstractmethod
    def _index_status(self) -> IndexStatus: ...

    @abc.abstractmethod
    def _evaluate(
        self, queries: object, matrix: FloatMatrix | None, *, k: int, sample: int
    ) -> RecallReport:
        """``queries`` as given, ``matrix`` as the space compares them (None: sample)."""

    @abc.abstractmethod
    def _count(self) -> int: ...

    @abc.abstractmethod
    def _write(self, request: WriteRequest) -> None: ...

    @abc.abstractmethod
    def _delete(self, request: GetRequest) -> int: ...

    @abc.abstractmethod
    def _get(self, request: GetRequest) -> GetResult: ...

    @abc.abstractmethod
    def _scroll(self, request: GetRequest) -> Iterator[GetResult]:
        """Pages of ``request.limit`` records."""

    @abc.abstractmethod
    def _query(self, request: QueryRequest) -> QueryResult: ...

    def _query_vectors(self, vectors: object, k: object, include: object) -> QueryResult | None:
        """The query of ``vectors`` with ``k`` and ``include`` and nothing else, on a
        shorter path where the transport has one; None: take :meth:`_query`."""
        return None

    def _analyze(self, *, sample: int, k: int) -> SpaceReport:
        """The space report, measured in this process over :meth:`_every_vector`; the
        index figures come from :meth:`evaluate`."""
        space = self.space
        with steps_bar(f"analyzing {self.name}", REPORT_STEPS) as steps:
            steps.advance("reading vectors")
            rows, ids_of = self._every_vector()
            return build_report(
                rows,
                ids_of,
                collection=self.name,
                model=space.model,
                metric=space.metric,
                sample=sample,
                k=k,
                measure_index=self._measure_index,
                steps=steps,
            )

    def _every_vector(self) -> tuple[FloatMatrix, Callable[[npt.NDArray[np.int64]], list[str]]]:
        """Every live row's vector (n, d), and the ids of rows at given positions; for
        an implementation that measures the space here rather than remotely."""
        raise NotImplementedError(f"{type(self).__name__} measures its space elsewhere")

    def _compare_with(self, other: Collection, *, sample: int, k: int) -> SpaceComparison:
        """:meth:`Database.compare` of this collection (A) with ``other`` (B), measured
        in this process over both collections' :meth:`_every_vector`."""
        first, second = self._for_call(), other._for_call()
        with steps_bar(f"comparing {first.name} with {second.name}", 6) as steps:
            steps.advance("reading vectors")
            rows_a, ids_of_a = first._every_vector()
            rows_b, ids_of_b = second._every_vector()
            ids, positions_a, positions_b = shared_positions(
                ids_of_a(np.arange(rows_a.shape[0], dtype=np.int64)),
                ids_of_b(np.arange(rows_b.shape[0], dtype=np.int64)),
            )

            def documents_of(wanted: list[str]) -> list[str | None]:
                found: dict[str, str | None] = {}
                for collection in (first, second):
                    missing = [i for i in wanted if found.get(i) is None]
                    if missing:
                        got = collection.get(missing, include=("documents",))
                        found.update(zip(got.ids, got.documents or [], strict=True))
                return [found.get(i) for i in wanted]

            return compare_spaces(
                _side(first, rows_a, positions_a),
                _side(second, rows_b, positions_b),
                ids=ids,
                sample=sample,
                k=k,
                documents_of=documents_of,
                steps=steps,
            )

    def _measure_index(self) -> IndexMeasurement:
        """The index line of the space report: status and measured recall."""
        status = self.index_status()
        # ANN: 300 queries give recall to about +-0.01. Exact: recall is 1 by
        # definition and 50 queries time the scan (300 took 9 s at 100k rows).
        report = self.evaluate(sample=50 if status.kind == EXACT_KIND else 300)
        return IndexMeasurement(
            kind=report.kind,
            spec=status.spec,
            params=report.params,
            recall=report.recall,
            recall_target=report.recall_target,
            qps=report.qps,
            exact_qps=report.exact_qps,
            source=report.source,
            pending=status.pending if status.kind != EXACT_KIND else 0,
            tuned_recall=status.tuned_recall if status.kind != EXACT_KIND else None,
            live_recall=status.live_recall if status.kind != EXACT_KIND else None,
            live_queries=status.live_queries,
        )

    @abc.abstractmethod
    def _map(
        self, *, method: str, sample: int, where: Where | None, filters: SqlFilter | None
    ) -> SpaceMap: ...


def _side(
    collection: Collection, rows: FloatMatrix, positions: npt.NDArray[np.int64]
) -> ComparedSpace:
    """One side of a comparison: the collection's rows at the shared positions."""
    space = collection.space
    return ComparedSpace(
        collection=collection.name,
        model=space.model,
        metric=space.metric,
        count=rows.shape[0],
        rows=rows[positions],
    )
