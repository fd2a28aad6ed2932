"""EmbeddedCollection: the embedded engine's collection, over the store and the index."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from latentdb.analysis import (
    SpaceMap,
    project,
    sample_positions,
    steps_bar,
)
from latentdb.api import (
    MAX_K,
    QUERY_FIELDS,
    Collection,
    FloatMatrix,
    GetRequest,
    GetResult,
    IndexStatus,
    Metadata,
    QueryRequest,
    QueryResult,
    RecallReport,
    Where,
    WriteRequest,
    check_include,
    collection_requires_model,
    query_result,
    query_vectors,
    sql_filters,
    write_vectors,
)
from latentdb.errors import (
    DuplicateIdError,
    InvalidArgumentError,
    ReadOnlyError,
    RecordNotFoundError,
)
from latentdb.index import WRITE_BACKLOG_ROWS, WRITE_STALL_SECONDS, pair_distances
from latentdb.query import Condition, QueryPlan, filtered_search, fts_query, fuse
from latentdb.space import LatentSpace
from latentdb.store import Changes, SqlFilter

if TYPE_CHECKING:
    from latentdb.engine._database import EmbeddedDatabase
    from latentdb.engine._state import CollectionState

__all__ = ["EmbeddedCollection"]


class EmbeddedCollection(Collection):
    """A collection of the embedded engine: its records in the database's store, its
    vectors in the segments of its index."""

    def __init__(
        self, database: EmbeddedDatabase, state: CollectionState, *, alias: str | None = None
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

    def _for_call(self) -> EmbeddedCollection:
        if self._alias is None:
            return self
        return EmbeddedCollection(self._database, self._state)

    @property
    def name(self) -> str:
        return self._state.row.name

    @property
    def alias(self) -> str | None:
        return self._alias

    @property
    def space(self) -> LatentSpace:
        return self._state.space

    @property
    def embedder(self) -> str | None:
        return self._state.row.embedder

    @property
    def recall_target(self) -> float:
        return self._state.recall_target

    @property
    def require_model(self) -> bool:
        return collection_requires_model(self._state.row.config)

    def _set_recall_target(self, target: float) -> None:
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

    def _clear_recorded_queries(self) -> int:
        database, state = self._database, self._state
        with database.store.lock:
            return database.index(state).clear_recorded()

    def _optimize(self) -> None:
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
                built = database.build_index(state)  # a bulk load: built from the store
                if not built:
                    index = database.index(state)
                    if index.saved_elsewhere():
                        state.drop_index()
                        index = database.index(state)
            if built:  # the metadata columns too, for the processes that open it later
                state.filters.save_all(database.store, state.row.id)
                return
            try:
                index.optimize()
            except BaseException:
                with database.store.lock:
                    if index.damaged and state.index is index:
                        state.drop_index()
                raise
            # The metadata columns too, saved for the processes that open it later.
            state.filters.save_all(database.store, state.row.id)

    def _index_status(self) -> IndexStatus:
        database, state = self._database, self._state
        with database.store.lock:
            return database.index(state).status()

    def _evaluate(
        self, queries: object, matrix: FloatMatrix | None, *, k: int, sample: int
    ) -> RecallReport:
        database, state = self._database, self._state
        with database.store.lock:
            index = database.index(state)
            if isinstance(queries, str):  # RECORDED_QUERIES (the API checked it)
                matrix = index.sampler.queries()
                if not len(matrix):
                    raise InvalidArgumentError(
                        f"collection {state.row.name!r} has recorded no queries yet (its "
                        f"index records {index.spec.sample_rate:g} of the unfiltered ones)"
                    )
            recall, qps, exact_qps, count, source, plain = index.evaluate(
                matrix, k=k, sample=sample
            )
            if isinstance(queries, str):  # RECORDED_QUERIES (the API checked it)
                source = "recorded queries"
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

    def _count(self) -> int:
        store = self._database.store
        with store.lock:
            self._database.sync(self._state)
            return store.count(self._state.row.id)

    # -- writes --------------------------------------------------------------------

    def _write(self, request: WriteRequest) -> None:
        matrix = write_vectors(self, request)[1]
        database, state = self._database, self._state
        store = database.store
        if matrix is not None:
            self._wait_for_index()
        with store.lock:  # held until the commit is mirrored in the index
            with store.write():
                database.sync(state)
                if request.mode == "update":
                    sequence, keys = self._update_rows(request, matrix)
                    state.rows.drop(keys.tolist())
                else:
                    assert matrix is not None
                    sequence, keys = self._insert_rows(request, matrix)
            if matrix is None:  # metadata or documents only: nothing for the index
                self._apply(sequence, None, None, None)
            else:
                self._apply(sequence, keys, request.ids, matrix)
            database.sync(state)  # notes our commit: queries go on without the lock

    def _wait_for_index(self) -> None:
        """Hold a write, before it takes the lock, while the index is far behind the
        writes (:meth:`SegmentedIndex.backlog` over ``WRITE_BACKLOG_ROWS``), for at most
        ``WRITE_STALL_SECONDS``: writes slow to the pace the builds keep, and queries
        keep scanning a short growing segment instead of one that grows without end."""
        index = self._state.index
        if index is None or index.backlog() <= WRITE_BACKLOG_ROWS:
            return
        database, state = self._database, self._state
        deadline = time.monotonic() + WRITE_STALL_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.02)
            with database.store.lock:  # also loads what another process has built
                index = database.index(state)
            if index.backlog() <= WRITE_BACKLOG_ROWS:
                return

    def _insert_rows(
        self, request: WriteRequest, matrix: FloatMatrix
    ) -> tuple[int, npt.NDArray[np.int64]]:
        """Insert (add) or replace (upsert) the records, in the open transaction."""
        store, row = self._database.store, self._state.row
        id_list, count = request.ids, request.size
        if request.mode == "add":
            stored = store.keys_for_ids(row.id, id_list)
            if stored:
                first = next(i for i in id_list if i in stored)
                raise DuplicateIdError(
                    f"id {first!r} is already stored in {self.name!r} "
                    f"({len(stored)} of the {count} ids are): use upsert to replace"
                )
        sequence = store.next_sequence()
        store.insert_records(
            row.id,
            ids=id_list,
            vectors=matrix,
            documents=request.documents or [None] * count,
            metadatas=request.metadata_json or [None] * count,
            sequence=sequence,
        )
        key_of = {record_id: key for key, record_id in store.keys_at(row.id, sequence)}
        return sequence, np.fromiter((key_of[i] for i in id_list), dtype=np.int64, count=count)

    def _update_rows(
        self, request: WriteRequest, matrix: FloatMatrix | None
    ) -> tuple[int, npt.NDArray[np.int64]]:
        """Change the fields of stored records, in the open transaction."""
        store, row = self._database.store, self._state.row
        id_list = request.ids
        key_of = store.keys_for_ids(row.id, id_list)
        missing = [i for i in id_list if i not in key_of]
        if missing:
            raise RecordNotFoundError(
                f"cannot update ids that are not stored in {self.name!r}: "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}"
            )
        keys = np.fromiter((key_of[i] for i in id_list), dtype=np.int64, count=request.size)
        sequence = store.next_sequence()
        store.update_records(
            keys.tolist(),
            vectors=matrix,
            documents=request.documents,
            metadatas=request.metadata_json,
            sequence=sequence,
        )
        return sequence, keys

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

    def _delete(self, request: GetRequest) -> int:
        database, state = self._database, self._state
        store = database.store
        with store.lock:  # held until the commit is mirrored in the index
            with store.write():
                database.sync(state)
                rows = store.select(state.row.id, ids=request.ids, where=request.filters)
                if not rows:
                    return 0
                keys = np.fromiter((key for key, _ in rows), dtype=np.int64, count=len(rows))
                sequence = store.next_sequence()
                store.delete_records(state.row.id, keys.tolist(), sequence=sequence)
            self._apply(sequence, None, None, None, keys)
            database.sync(state)  # notes our commit: queries go on without the lock
        return len(rows)

    # -- reads ---------------------------------------------------------------------

    def _get(self, request: GetRequest) -> GetResult:
        return self._read(
            request.ids, request.filters, request.limit, request.offset, request.fields
        )[0]

    def _scroll(self, request: GetRequest) -> Iterator[GetResult]:
        after = 0
        while True:
            page, after = self.page_after(request, after)
            if not page.ids:
                return
            yield page

    def page_after(self, request: GetRequest, after: int) -> tuple[GetResult, int]:
        """Up to ``request.limit`` matching records after row key ``after`` (0: from
        the first), in insertion order, and the last one's key: a cursor that stays
        valid while others write (a shard host pages with it)."""
        return self._read(None, request.filters, request.limit, 0, request.fields, after=after)

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

    def _query(self, request: QueryRequest) -> QueryResult:
        database, state = self._database, self._state
        space = state.space
        queries = request.queries
        if queries is None:
            queries = space.prepare(query_vectors(self, request), copy=False)
        if request.document is None and not request.hybrid and not request.explain:
            answer = self._query_snapshot(
                queries, request.fields, request.depth, request.condition, request.params,
                request.exact,
            )  # fmt: skip
            if answer is not None:
                return answer
        fields, depth, params, exact = request.fields, request.depth, request.params, request.exact
        explain, filtered = request.explain, request.filtered
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
                if not (params or exact or request.hybrid):
                    state.filters.pool.note(queries)  # tuning queries of filters
                    if index.sampler.offer(queries):
                        index.sampled()
                if explain:
                    plan = QueryPlan(
                        strategy="exact" if exact or not index.sealed else "ann",
                        rows=index.live,
                        params={} if exact else dict(index.search_settings(params)),
                        timings_ms={"search": (time.perf_counter() - started) * 1e3},
                    )
            else:
                for exactly in (exact, True):  # never a padding key -1 to the user
                    (distances, keys), plan = filtered_search(
                        store,
                        state.row.id,
                        state.applied,
                        state.filters,
                        index,
                        request.condition,
                        request.document,
                        queries,
                        depth,
                        params=params,
                        exact=exactly,
                    )
                    if not keys.size or keys.min() >= 0:
                        break
            scores = None
            if request.hybrid:
                assert request.texts is not None
                sql = sql_filters(request.where, request.where_document)
                fused = []
                for position, text in enumerate(request.texts):
                    match = fts_query(text)
                    ranking = [] if match is None else store.text_ranking(
                        state.row.id, match, depth, where=sql
                    )  # fmt: skip
                    fused.append(fuse(keys[position], ranking, request.k, request.weights))
                width = min(len(row_keys) for row_keys, _ in fused)
                keys = np.array([row_keys[:width] for row_keys, _ in fused], dtype=np.int64)
                keys = keys.reshape(len(fused), width)
                scores = np.array([row[:width] for _, row in fused], dtype=np.float32)
                scores = scores.reshape(len(fused), width)
                hits = index.vectors_of(keys.ravel()).reshape(*keys.shape, space.dimension)
                distances = pair_distances(queries, hits, space.metric)
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

    def _query_vectors(self, vectors: object, k: object, include: object) -> QueryResult | None:
        """``query(vectors=, k=, include=)`` with nothing else given, most queries: the
        general path's checks and snapshot search without building a request (fewer
        calls between the graph walks: ~10 us a query here). None sends the query down
        the general path, which also names any problem with it."""
        if type(vectors) is not np.ndarray or type(k) is not int or not 0 < k <= MAX_K:
            return None
        fields = check_include(include, QUERY_FIELDS)
        # Through an alias: one target for the whole call.
        target = self if self._alias is None else self._for_call()
        queries = target._state.space.prepare(vectors, copy=False)
        return target._query_snapshot(queries, fields, k, None, None, False)

    def _query_snapshot(
        self,
        queries: FloatMatrix,
        fields: frozenset[str],
        depth: int,
        condition: Condition | None,
        params: dict[str, int] | None,
        exact: bool,
    ) -> QueryResult | None:
        """The query (unfiltered, or filtered on metadata) on the index's published
        snapshot, taking no lock: writes, builds and optimize() go on meanwhile, and
        queries run side by side.

        None when it cannot be answered so (the caller takes the lock): the index is not
        loaded, another connection has committed since the last catch-up, or a hit was
        deleted after the snapshot was taken.
        """
        database, state = self._database, self._state
        index = state.index
        if index is None or state.stale or not database.store.unchanged_since(database.version):
            return None
        readers = index.readers
        readers.append(None)  # optimize() may wait for us (see SegmentedIndex._unpublish)
        try:
            view = index.view
            if view is None:
                return None
            if condition is None:
                distances, keys = view.search(
                    queries, depth, params=params, exact=exact,
                    with_distances="distances" in fields,
                )  # fmt: skip
                if not (params or exact):
                    state.filters.pool.note(queries)  # tuning queries of filters
                    if index.sampler.offer(queries):
                        index.sampled()
            else:  # the planner takes the store's lock only to read the store
                (distances, keys), _ = filtered_search(
                    database.store,
                    state.row.id,
                    view.applied,
                    state.filters,
                    view,
                    condition,
                    None,
                    queries,
                    depth,
                    params=params,
                    exact=exact,
                )
                if keys.size and keys.min() < 0:  # the snapshot lacks rows the filter
                    return None  # counted (written since): answered again under the lock
            try:
                ids = state.ids.lookup(keys)
            except (KeyError, IndexError):
                return None
            if (None in ids[0]) if len(ids) == 1 else any(None in row for row in ids):
                return None
            documents = metadatas = None
            if "documents" in fields or "metadatas" in fields:
                rows = self._rows_of(keys, fields)
                if rows is None:
                    return None
                documents, metadatas = rows
            hit_vectors = None
            if "vectors" in fields:
                found = view.vectors_of(keys.ravel())
                hit_vectors = list(found.reshape(keys.shape[0], keys.shape[1], found.shape[1]))
        finally:
            readers.pop()
        return query_result(
            ids, distances if "distances" in fields else None, documents, metadatas, hit_vectors
        )

    def _rows_of(
        self, keys: npt.NDArray[np.int64], fields: frozenset[str]
    ) -> tuple[list[list[str | None]] | None, list[list[Metadata | None]] | None] | None:
        """The documents and metadatas ``fields`` asks for, of each hit, read without the
        lock; None when a hit's row is gone (deleted since the snapshot)."""
        cache = self._state.rows
        epoch = cache.epoch  # before reading: a write meanwhile keeps the rows out
        key_list = keys.tolist()
        found, missing = cache.lookup(set().union(*key_list))
        if missing:
            read = self._database.store.payloads(missing)
            if len(read) < len(missing):
                return None
            found.update(cache.fill(read, epoch))
        documents = metadatas = None
        if "documents" in fields:
            documents = [[found[key][0] for key in row] for row in key_list]
        if "metadatas" in fields:
            # A row met twice gets one copy per place: callers may change theirs.
            metadatas = [[_copied(found[key][1]) for key in row] for row in key_list]
        return documents, metadatas

    # -- understanding the space ---------------------------------------------------

    def _every_vector(
        self,
    ) -> tuple[FloatMatrix, Callable[[npt.NDArray[np.int64]], list[str]]]:
        database, state = self._database, self._state
        with database.store.lock:
            keys, rows = database.index(state).live_rows()

        def ids_of(positions: npt.NDArray[np.int64]) -> list[str]:
            return state.ids.lookup(keys[positions][None, :])[0] if positions.size else []

        return rows, ids_of

    def _map(
        self, *, method: str, sample: int, where: Where | None, filters: SqlFilter | None
    ) -> SpaceMap:
        condition = filters
        database, state = self._database, self._state
        store = database.store
        with steps_bar(f"mapping {self.name}", 3) as steps:
            steps.advance("sampling")
            with store.read():
                database.sync(state)
                index = database.index(state)
                if condition is None:
                    keys = index.live_rows(vectors=False)[0]
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


def _copied(metadata: Metadata | None) -> Metadata | None:
    return None if metadata is None else dict(metadata)
