"""Collection: records of one latent space, and the methods that read and write them."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from latentdb.analysis import (
    IndexMeasurement,
    SpaceMap,
    SpaceReport,
    build_report,
    check_method,
    project,
    sample_positions,
    steps_bar,
)
from latentdb.api._database import check_recall_target, collection_requires_model
from latentdb.api._progress import progress_bar
from latentdb.api._results import GetResult, QueryResult, RecallReport
from latentdb.api._validation import (
    MAX_K,
    check_callable,
    check_documents,
    check_flag,
    check_ids,
    check_include,
    check_metadatas,
    check_non_negative,
    check_search_params,
    check_texts,
    check_write_model,
)
from latentdb.embed import Embedder, ImageInput, get_embedder
from latentdb.errors import (
    DuplicateIdError,
    EmbedderError,
    InvalidArgumentError,
    ModelMismatchError,
    ReadOnlyError,
    RecordNotFoundError,
)
from latentdb.index import IndexStatus
from latentdb.query import (
    QueryPlan,
    and_filters,
    candidates,
    compile_where,
    compile_where_document,
    filtered_search,
    fts_query,
    fuse,
    parse_where,
)
from latentdb.space import LatentSpace
from latentdb.store import Changes, SqlFilter

if TYPE_CHECKING:
    from latentdb.api._database import CollectionState, Database
    from latentdb.index import SegmentedIndex

__all__ = ["Collection"]

FloatMatrix = npt.NDArray[np.float32]
Where = Mapping[str, Any]
Progress = Callable[[int], None]

GET_FIELDS = ("vectors", "documents", "metadatas")
QUERY_FIELDS = ("distances", "documents", "metadatas", "vectors")


class Collection:
    """Records (id, vector, document, metadata) bound to one :class:`LatentSpace`.

    Get one from :meth:`Database.create_collection` or :meth:`Database.get_collection`.
    Every write is one transaction: when it returns the records are on disk, when it
    raises nothing of it was written.
    """

    def __init__(
        self, database: Database, state: CollectionState, *, alias: str | None = None
    ) -> None:
        self._database = database
        self._bound = state
        self._alias = alias

    @property
    def _state(self) -> CollectionState:
        """The collection's state; through an alias, that of its current target."""
        if self._alias is None:
            return self._bound
        self._bound = self._database.follow_alias(self._alias, self._bound)
        return self._bound

    def _pinned(self) -> Collection:
        """This collection, held to the alias's current target for one whole call."""
        return Collection(self._database, self._state)

    def __repr__(self) -> str:
        space = self.space
        via = "" if self._alias is None else f", alias={self._alias!r}"
        return (
            f"Collection({self.name!r}{via}, model={space.model!r}, "
            f"dimension={space.dimension}, metric={space.metric!r})"
        )

    @property
    def name(self) -> str:
        """The collection's own name (not the alias it was got through)."""
        return self._state.row.name

    @property
    def alias(self) -> str | None:
        """The alias this collection was got through and follows, if any."""
        return self._alias

    @property
    def space(self) -> LatentSpace:
        """The latent space every vector of this collection belongs to."""
        return self._state.space

    @property
    def embedder(self) -> str | None:
        """The registered embedder's name, or None when vectors come from outside."""
        return self._state.row.embedder

    @property
    def recall_target(self) -> float:
        """The recall@10 approximate search is tuned to reach."""
        return self._state.recall_target

    @property
    def require_model(self) -> bool:
        """Whether every write of vectors must name their model (``model=``, the
        space's): True for collections created with ``require_model=True`` (the
        default), False for those created with ``require_model=False`` and for those
        of databases made before the setting existed."""
        return collection_requires_model(self._state.row.config)

    def set_recall_target(self, target: float) -> None:
        """Change the recall target (stored) and re-tune the index for it now.

        Raises:
            InvalidArgumentError: not a number in (0, 1].
        """
        target = check_recall_target(target)
        database, state = self._database, self._state
        store = database.store
        with store.write():
            database.sync(state)
            config = {**state.row.config, "recall_target": target}
            store.update_collection_config(state.row.id, config)
        state.row = replace(state.row, config=config)
        state.recall_target = target
        if state.index is not None:
            state.index.set_recall_target(target)

    def optimize(self) -> None:
        """Seal all rows into one ANN index, drop deleted rows, tune and save, now.

        For bulk loads and benchmarks: returns when done. A collection under the
        ``auto`` threshold (or with ``index="flat"``) stays exact.
        """
        database, state = self._database, self._state
        if database.store.read_only:
            raise ReadOnlyError(
                f"collection {state.row.name!r} is in a read-only database: optimize() "
                "writes index files, only reads are possible"
            )
        # One build at a time per collection, across processes: a second caller waits,
        # then starts from what the first one saved.
        with database._build_lock(state):
            with database.store.lock:
                if database.build_index(state):  # a bulk load: built from the store
                    return
                index = database.index(state)
                if index.saved_elsewhere():
                    state.drop_index()
                    index = database.index(state)
            try:
                index.optimize()
            except BaseException:
                with database.store.lock:
                    if index.damaged and state.index is index:
                        state.drop_index()
                raise

    def index_status(self) -> IndexStatus:
        """Rows indexed, pending in the growing segment and deleted; search settings."""
        database, state = self._database, self._state
        with database.store.lock:
            return database.index(state).status()

    def evaluate(self, queries: object = None, *, k: int = 10, sample: int = 500) -> RecallReport:
        """Measure recall@k and speed of approximate search against exact search.

        Args:
            queries: Query vectors (nq, d), or None to use ``sample`` stored rows
                (each row's own id is not counted as a hit): rows not in the ANN
                index yet when there are enough, else indexed rows, whose recall reads
                high (``RecallReport.source`` says which).
            k: Neighbours per query.
            sample: Rows sampled when ``queries`` is None.

        Returns:
            A :class:`RecallReport`.
        """
        check_non_negative(k, "k", minimum=1, maximum=MAX_K)
        check_non_negative(sample, "sample", minimum=1)
        matrix = None if queries is None else self.space.prepare(queries)
        database, state = self._database, self._state
        with database.store.lock:
            index = database.index(state)
            recall, qps, exact_qps, count, source, plain = index.evaluate(
                matrix, k=k, sample=sample
            )
            status = index.status()
        return RecallReport(
            recall=recall,
            qps=qps,
            exact_qps=exact_qps,
            k=k,
            queries=count,
            source=source,
            kind=status.kind,
            params=status.params,
            recall_target=state.recall_target,
            reduce=state.space.reduce if index.sealed else None,
            recall_without_rerank=plain,
        )

    def count(self) -> int:
        """Number of records."""
        store = self._database.store
        with store.lock:
            self._database.sync(self._state)
            return store.count(self._state.row.id)

    # -- embedding -----------------------------------------------------------------

    def _embedder(self) -> Embedder:
        """The collection's own model, refusing a drifted one."""
        name = self._state.row.embedder
        if name is None:
            raise EmbedderError(
                f"collection {self.name!r} has no embedder (its vectors come from model "
                f"{self.space.model!r}): pass vectors= instead of text or images"
            )
        embedder = get_embedder(name)
        if embedder.fingerprint != self.space.fingerprint:
            raise ModelMismatchError(
                f"embedder {name!r} now has fingerprint {embedder.fingerprint}, but collection "
                f"{self.name!r} was built with {self.space.fingerprint}: the model changed; "
                "re-embed into a new collection (Database.migrate)"
            )
        return embedder

    def _embed(self, texts: Sequence[str | None], progress: Progress | None) -> FloatMatrix:
        """Embed texts with the collection's own model."""
        missing = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if missing:
            raise EmbedderError(
                f"no vector and no document to embed at position {missing[0]}: give a "
                "document or a vector for every id"
            )
        embedder = self._embedder()
        with progress_bar("embedding texts", len(texts), progress) as report:
            return embedder.embed_texts([t for t in texts if isinstance(t, str)], progress=report)

    def _embed_images(
        self, images: Sequence[ImageInput], count: int | None, progress: Progress | None
    ) -> FloatMatrix:
        """Embed images with the collection's own model (one per id when ``count``)."""
        if isinstance(images, str | bytes) or not isinstance(images, Sequence):
            raise InvalidArgumentError(
                "images must be a list of file paths, image bytes or PIL images; "
                f"got {type(images).__name__}"
            )
        if count is not None and len(images) != count:
            raise InvalidArgumentError(f"got {len(images)} images for {count} ids")
        if not images:
            raise InvalidArgumentError("images must not be empty")
        embedder = self._embedder()
        if "image" not in embedder.modalities:
            raise EmbedderError(
                f"the model of collection {self.name!r} ({self.space.model}) embeds "
                f"{', '.join(sorted(embedder.modalities))} only, not images"
            )
        with progress_bar("embedding images", len(images), progress) as report:
            return embedder.embed_images(list(images), progress=report)

    def _vectors_for(
        self,
        vectors: object,
        documents: Sequence[str | None] | None,
        count: int,
        model: str | None,
        progress: Progress | None,
        images: Sequence[ImageInput] | None = None,
    ) -> FloatMatrix:
        if images is not None and vectors is not None:
            raise InvalidArgumentError("give vectors= or images=, not both")
        check_write_model(
            self.space,
            model,
            vectors=vectors is not None,
            required=self.require_model,
            collection=self.name,
        )
        if images is not None:
            vectors = self._embed_images(images, count, progress)
        elif vectors is None:
            if documents is None and self.embedder is not None:
                raise InvalidArgumentError("give vectors=, images= or documents= to embed")
            vectors = self._embed(documents or [], progress)
        return self.space.prepare(vectors, rows=count)

    # -- writes --------------------------------------------------------------------

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
        self._write(ids, vectors, documents, metadatas, model, progress, images, replace=False)

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
        self._write(ids, vectors, documents, metadatas, model, progress, images, replace=True)

    def _write(
        self,
        ids: object,
        vectors: object,
        documents: object,
        metadatas: object,
        model: str | None,
        progress: Progress | None,
        images: Sequence[ImageInput] | None,
        *,
        replace: bool,
    ) -> None:
        id_list = check_ids(ids)
        count = len(id_list)
        document_list = check_documents(documents, count)
        metadata_list = check_metadatas(metadatas, count)
        check_callable(progress, "progress")
        matrix = self._vectors_for(vectors, document_list, count, model, progress, images)
        database, state = self._database, self._state
        store = database.store
        with store.lock:  # held until the commit is mirrored in the index
            with store.write():
                database.sync(state)
                if not replace:
                    stored = store.keys_for_ids(state.row.id, id_list)
                    if stored:
                        first = next(i for i in id_list if i in stored)
                        raise DuplicateIdError(
                            f"id {first!r} is already stored in {self.name!r} "
                            f"({len(stored)} of the {count} ids are): use upsert to replace"
                        )
                sequence = store.next_sequence()
                store.insert_records(
                    state.row.id,
                    ids=id_list,
                    vectors=matrix,
                    documents=document_list or [None] * count,
                    metadatas=metadata_list or [None] * count,
                    sequence=sequence,
                )
                key_of = {
                    record_id: key for key, record_id in store.keys_at(state.row.id, sequence)
                }
            keys = np.fromiter((key_of[i] for i in id_list), dtype=np.int64, count=count)
            self._apply(sequence, keys, id_list, matrix)

    def _apply(
        self,
        sequence: int,
        keys: npt.NDArray[np.int64] | None,
        ids: list[str] | None,
        vectors: FloatMatrix | None,
        deleted: npt.NDArray[np.int64] | None = None,
    ) -> None:
        """Mirror a write of ours, just committed, into the loaded index."""
        empty = np.empty(0, dtype=np.int64)
        dimension = self.space.dimension
        self._state.apply(
            Changes(
                keys=empty if keys is None else keys,
                ids=[] if ids is None else ids,
                vectors=np.empty((0, dimension), np.float32) if vectors is None else vectors,
                sequences=np.full(0 if keys is None else keys.shape[0], sequence, dtype=np.int64),
                deleted=empty if deleted is None else deleted,
                sequence=sequence,
            )
        )

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
        id_list = check_ids(ids)
        count = len(id_list)
        document_list = check_documents(documents, count)
        metadata_list = check_metadatas(metadatas, count)
        check_callable(progress, "progress")
        if vectors is None and images is None and document_list is None and metadata_list is None:
            raise InvalidArgumentError("update needs vectors=, images=, documents= or metadatas=")
        matrix = None
        if (
            vectors is not None
            or images is not None
            or (document_list is not None and self.embedder is not None)
        ):
            matrix = self._vectors_for(vectors, document_list, count, model, progress, images)
        else:
            self.space.check_model(model)
        database, state = self._database, self._state
        store = database.store
        with store.lock:  # held until the commit is mirrored in the index
            with store.write():
                database.sync(state)
                key_of = store.keys_for_ids(state.row.id, id_list)
                missing = [i for i in id_list if i not in key_of]
                if missing:
                    raise RecordNotFoundError(
                        f"cannot update ids that are not stored in {self.name!r}: "
                        f"{missing[:5]}{' ...' if len(missing) > 5 else ''}"
                    )
                keys = np.fromiter((key_of[i] for i in id_list), dtype=np.int64, count=count)
                sequence = store.next_sequence()
                store.update_records(
                    keys.tolist(),
                    vectors=matrix,
                    documents=document_list,
                    metadatas=metadata_list,
                    sequence=sequence,
                )
            if matrix is not None:
                self._apply(sequence, keys, id_list, matrix)
            else:
                self._apply(sequence, None, None, None)

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
        condition = _sql_filters(where, where_document)
        database, state = self._database, self._state
        store = database.store
        with store.lock:  # held until the commit is mirrored in the index
            with store.write():
                database.sync(state)
                rows = store.select(state.row.id, ids=id_list, where=condition)
                if not rows:
                    return 0
                keys = np.fromiter((key for key, _ in rows), dtype=np.int64, count=len(rows))
                sequence = store.next_sequence()
                store.delete_records(state.row.id, keys.tolist(), sequence=sequence)
            self._apply(sequence, None, None, None, keys)
        return len(rows)

    # -- reads ---------------------------------------------------------------------

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
        fields = check_include(include, GET_FIELDS)
        id_list = None if ids is None else check_ids(ids, allow_empty=True, distinct=False)
        if limit is not None:
            check_non_negative(limit, "limit")
        check_non_negative(offset, "offset")
        condition = _sql_filters(where, where_document)
        return self._read(id_list, condition, limit, offset, fields)[0]

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
        check_non_negative(batch, "batch", minimum=1)
        fields = check_include(include, GET_FIELDS)
        condition = _sql_filters(where, where_document)
        after = 0
        while True:
            page, last = self._read(None, condition, batch, 0, fields, after=after)
            if not page.ids:
                return
            yield page
            after = last

    def _read(
        self,
        id_list: list[str] | None,
        condition: SqlFilter | None,
        limit: int | None,
        offset: int,
        fields: frozenset[str],
        *,
        after: int | None = None,
    ) -> tuple[GetResult, int]:
        """A page of records, and the last one's key."""
        database, state = self._database, self._state
        store = database.store
        with store.read():
            database.sync(state)
            if id_list is None:
                rows = store.select(
                    state.row.id, where=condition, limit=limit, offset=offset, after=after
                )
            else:
                found = dict(
                    (i, k) for k, i in store.select(state.row.id, ids=id_list, where=condition)
                )
                ordered = [(found[i], i) for i in id_list if i in found]
                rows = ordered[offset : None if limit is None else offset + limit]
            records = store.fetch(
                [key for key, _ in rows],
                dimension=state.space.dimension,
                vectors="vectors" in fields,
                documents="documents" in fields,
                metadatas="metadatas" in fields,
            )
        listed = [records[key] for key, _ in rows]
        vectors = None
        if "vectors" in fields:
            vectors = np.empty((len(listed), state.space.dimension), dtype=np.float32)
            for position, record in enumerate(listed):
                vectors[position] = record.vector
        result = GetResult(
            ids=[record.id for record in listed],
            vectors=vectors,
            documents=[r.document for r in listed] if "documents" in fields else None,
            metadatas=[r.metadata for r in listed] if "metadatas" in fields else None,
        )
        return result, rows[-1][0] if rows else 0

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
        # Written for speed: a one-vector query should cost little beyond the graph walk.
        fields = check_include(include, QUERY_FIELDS)
        check_non_negative(k, "k", minimum=1, maximum=MAX_K)
        if (vectors is not None) + (texts is not None) + (images is not None) != 1:
            raise InvalidArgumentError("query needs exactly one of vectors=, texts= or images=")
        exact = check_flag(exact, "exact")
        explain = check_flag(explain, "explain")
        hybrid = check_flag(hybrid, "hybrid")
        params = check_search_params(params)
        text_list = None if texts is None else check_texts(texts)
        depth = k
        if hybrid:
            if texts is None:
                raise InvalidArgumentError("hybrid search needs texts= (the words to match)")
            weights = _check_weights(hybrid_weights)
            depth = candidates(k)
        database, state = self._database, self._state
        space = state.space
        space.check_model(model)
        if images is not None:
            vectors = self._embed_images(images, None, None)
        elif text_list is not None:
            vectors = self._embed(text_list, None)
        queries = space.prepare(vectors, copy=False)
        condition = parse_where(where)
        document = compile_where_document(where_document)
        filtered = condition is not None or document is not None
        store = database.store
        reads_rows = "documents" in fields or "metadatas" in fields
        plan = None
        # A snapshot transaction only when several store reads must agree; BEGIN and
        # COMMIT cost ~25 us, a tenth of an HNSW search.
        with store.read() if filtered or reads_rows else store.lock:
            index = database.index(state)
            if not filtered:
                started = time.perf_counter() if explain else 0.0
                distances, keys = index.search(queries, depth, params=params, exact=exact)
                if explain:
                    plan = QueryPlan(
                        strategy="exact" if exact or not index.sealed else "ann",
                        rows=index.live,
                        params={} if exact else dict(index.search_settings(params)),
                        timings_ms={"search": (time.perf_counter() - started) * 1e3},
                    )
            else:
                (distances, keys), plan = filtered_search(
                    store,
                    state.row.id,
                    state.applied,
                    state.filters,
                    index,
                    condition,
                    document,
                    queries,
                    depth,
                    params=params,
                    exact=exact,
                )
            scores = None
            if hybrid:
                assert text_list is not None
                sql = _sql_filters(where, where_document)
                fused = []
                for position, text in enumerate(text_list):
                    match = fts_query(text)
                    ranking = [] if match is None else store.text_ranking(
                        state.row.id, match, depth, where=sql
                    )  # fmt: skip
                    fused.append(fuse(keys[position], ranking, k, weights))
                width = min(len(row_keys) for row_keys, _ in fused)
                keys = np.array([row_keys[:width] for row_keys, _ in fused], dtype=np.int64)
                keys = keys.reshape(len(fused), width)
                scores = np.array([row[:width] for _, row in fused], dtype=np.float32)
                scores = scores.reshape(len(fused), width)
                distances = _distances(index, queries, keys, space.metric)
            fetch_started = time.perf_counter() if explain else 0.0
            ids = state.ids.lookup(keys)
            documents = metadatas = None
            if reads_rows:
                records = store.fetch(
                    np.unique(keys).tolist(),
                    dimension=self.space.dimension,
                    documents="documents" in fields,
                    metadatas="metadatas" in fields,
                )
                rows = [[records[key] for key in row] for row in keys.tolist()]
                if "documents" in fields:
                    documents = [[record.document for record in row] for row in rows]
                if "metadatas" in fields:
                    metadatas = [[record.metadata for record in row] for row in rows]
            hit_vectors = None
            if "vectors" in fields:
                found = index.vectors_of(keys.ravel())
                hit_vectors = list(found.reshape(keys.shape[0], keys.shape[1], found.shape[1]))
        if explain and plan is not None:
            timings = {**plan.timings_ms, "fetch": (time.perf_counter() - fetch_started) * 1e3}
            plan = replace(plan, timings_ms=timings)
        return QueryResult(
            ids=ids,
            distances=distances if "distances" in fields else None,
            documents=documents,
            metadatas=metadatas,
            vectors=hit_vectors,
            plan=plan if explain else None,
            scores=scores,
        )

    # -- understanding the space ---------------------------------------------------

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
        database, state = self._database, self._state
        with steps_bar(f"analyzing {self.name}", 8) as steps:
            steps.advance("reading vectors")
            with database.store.lock:
                index = database.index(state)
                keys, rows = _live_rows(index)

            def ids_of(positions: npt.NDArray[np.int64]) -> list[str]:
                return state.ids.lookup(keys[positions][None, :])[0] if positions.size else []

            def measure_index() -> IndexMeasurement:
                status = self.index_status()
                # ANN: 300 queries give recall to about +-0.01. Exact: recall is 1 by
                # definition and 50 queries time the scan (300 took 9 s at 100k rows).
                report = self.evaluate(sample=50 if status.kind == "flat" else 300)
                return IndexMeasurement(
                    kind=report.kind,
                    spec=status.spec,
                    params=report.params,
                    recall=report.recall,
                    recall_target=report.recall_target,
                    qps=report.qps,
                    exact_qps=report.exact_qps,
                    source=report.source,
                    pending=status.pending if status.kind != "flat" else 0,
                )

            return build_report(
                rows,
                ids_of,
                collection=self.name,
                model=state.space.model,
                metric=state.space.metric,
                sample=sample,
                k=k,
                measure_index=measure_index,
                steps=steps,
            )

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
        condition = _sql_filters(where, None)
        database, state = self._database, self._state
        store = database.store
        with steps_bar(f"mapping {self.name}", 3) as steps:
            steps.advance("sampling")
            with store.read():
                database.sync(state)
                index = database.index(state)
                if condition is None:
                    keys = _live_rows(index, vectors=False)[0]
                else:
                    keys = np.array(
                        [key for key, _ in store.select(state.row.id, where=condition)],
                        dtype=np.int64,
                    )
                picked = keys[sample_positions(keys.size, sample)]
                vectors = index.vectors_of(picked)
                records = store.fetch(
                    picked.tolist(),
                    dimension=state.space.dimension,
                    documents=True,
                    metadatas=True,
                )
            steps.advance(f"{method} of {picked.size:,} records")
            coordinates = project(vectors, method=method, metric=state.space.metric)
            steps.advance("done")
        listed = [records[key] for key in picked.tolist()]
        return SpaceMap(
            ids=[record.id for record in listed],
            coordinates=coordinates,
            documents=[record.document for record in listed],
            metadatas=[None if r.metadata is None else dict(r.metadata) for r in listed],
            method=method,
            total=int(keys.size),
            collection=self.name,
        )

    def project(
        self, *, method: str = "pca", sample: int = 5000, where: Where | None = None
    ) -> npt.NDArray[np.float32]:
        """2-D coordinates of a fixed-seed sample of the records: :meth:`map`'s
        ``coordinates`` (its ``ids`` say which records they are).

        Returns:
            float32 (n, 2), n = min(sample, matching records).
        """
        return self.map(method=method, sample=sample, where=where).coordinates


def _check_weights(weights: object) -> tuple[float, float]:
    """Two finite, non-negative weights, not both zero."""
    try:
        vector, text = (float(w) for w in weights)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"hybrid_weights must be two numbers (vector, text); got {weights!r}"
        ) from None
    if not (np.isfinite(vector) and np.isfinite(text)) or min(vector, text) < 0:
        raise InvalidArgumentError(f"hybrid_weights must be finite and >= 0; got {weights!r}")
    if vector == text == 0:
        raise InvalidArgumentError("hybrid_weights must not both be 0")
    return vector, text


def _distances(
    index: SegmentedIndex, queries: FloatMatrix, keys: npt.NDArray[np.int64], metric: str
) -> FloatMatrix:
    """The distance of each query to each of its hits, in the space's metric."""
    nq, width = keys.shape
    vectors = index.vectors_of(keys.ravel()).reshape(nq, width, -1)
    dots = np.einsum("qkd,qd->qk", vectors, queries)
    if metric == "cosine":
        out = np.maximum(1.0 - dots, 0.0)
    elif metric == "ip":
        out = -dots
    else:
        differences = vectors - queries[:, None, :]
        out = np.einsum("qkd,qkd->qk", differences, differences)
    return np.asarray(out, dtype=np.float32)


def _live_rows(
    index: SegmentedIndex, *, vectors: bool = True
) -> tuple[npt.NDArray[np.int64], FloatMatrix]:
    """Keys (ascending) and, with ``vectors``, float32 vectors of every live row."""
    parts = [index.growing.live_rows(copy=not vectors)]
    for _, segment in index.sealed:
        rows = np.flatnonzero(segment.alive)
        matrix = (
            np.ascontiguousarray(segment.vectors[rows], dtype=np.float32)
            if vectors
            else np.empty((rows.size, 0), dtype=np.float32)
        )
        parts.append((segment.keys[rows], matrix))
    keys = np.concatenate([part_keys for part_keys, _ in parts])
    order = np.argsort(keys, kind="stable")
    if not vectors:
        return keys[order], np.empty((keys.size, 0), dtype=np.float32)
    return keys[order], np.concatenate([matrix for _, matrix in parts])[order]


def _sql_filters(where: Where | None, where_document: Where | None) -> SqlFilter | None:
    """Both filters as one SQL condition (None for none).

    Raises:
        FilterError: either is malformed.
    """
    filters = [f for f in (compile_where(where), compile_where_document(where_document)) if f]
    return and_filters(*filters) if filters else None


def _follow_alias_per_call(cls: type[Collection]) -> None:
    """Make each public method of ``cls`` resolve the alias once, at its start: a
    switch during a call cannot mix two collections (say, embed with one model and
    write into a collection of another)."""

    def pin(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(self: Collection, *args: Any, **kwargs: Any) -> Any:
            if self._alias is not None:
                self = self._pinned()
            return method(self, *args, **kwargs)

        return call

    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, pin(member))


_follow_alias_per_call(Collection)
