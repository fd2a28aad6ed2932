"""ShardedCollection: a collection whose records are spread over shard actors.

It is a :class:`~latentdb.Collection` with the same methods, arguments, results and
errors. The driver checks every argument and embeds texts and images itself (with the
collection's model, as the embedded engine does), so bad input fails before any shard
is touched; then it routes records to shards by a hash of their id
(:func:`~latentdb.distributed.shard_of`), or fans a query out to every shard and merges
the top k by distance. Each shard computes distances exactly as the embedded engine
does on the same rows, so an exact search returns the ids and distances a single-node
collection returns.

What differs from one engine, and why:

- A write is atomic per shard, not across shards: ids are checked on every shard
  first (duplicates for ``add``, missing ids for ``update``), so bad input writes
  nothing, but a crash in the middle of a write may leave it on some shards only
  (it raised, so it was not acknowledged; send it again with ``upsert``).
- ``get`` without ids and ``scroll`` return shard 0's records in insertion order,
  then shard 1's, and so on: there is no global insertion order to follow.
- ``hybrid=True`` is refused: BM25 statistics and reciprocal-rank fusion need the
  whole corpus in one place.
- ``analyze`` gathers every vector to the driver (as the embedded engine holds them
  in memory); ``map`` gathers only its sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from latentdb.analysis import (
    SpaceMap,
    project,
    sample_positions,
    steps_bar,
)
from latentdb.api import (
    RECORDED_QUERIES,
    Collection,
    FloatMatrix,
    GetRequest,
    GetResult,
    IndexStatus,
    QueryRequest,
    QueryResult,
    RecallReport,
    Where,
    WriteRequest,
    collection_requires_model,
    query_vectors,
    write_vectors,
)
from latentdb.distributed._merge import (
    assemble,
    concatenate,
    merge,
    merge_plans,
    slice_page,
)
from latentdb.distributed._shards import ShardGroup
from latentdb.errors import (
    CollectionNotFoundError,
    DuplicateIdError,
    InvalidArgumentError,
    RecordNotFoundError,
)
from latentdb.index import EXACT_KIND
from latentdb.space import LatentSpace
from latentdb.store import CollectionRow, SqlFilter

if TYPE_CHECKING:
    from latentdb.distributed._database import ShardedDatabase

__all__ = ["ShardedCollection"]


class ShardedCollection(Collection):
    """A collection split into shards on Ray actors, with :class:`Collection`'s methods.

    Got from :meth:`ShardedDatabase.create_collection` and friends, never built
    directly. See the module's notes for what differs from one engine.
    """

    def __init__(
        self, database: ShardedDatabase, row: CollectionRow, *, alias: str | None = None
    ) -> None:
        self._sharded = database
        self._row = row
        self._alias = alias

    # -- where it is -----------------------------------------------------------------

    def _current(self) -> CollectionRow:
        """The collection's catalog row now (through an alias: its target's).

        Raises:
            CollectionNotFoundError: the collection (or the alias) was deleted.
            DatabaseClosedError: the database is closed.
        """
        database = self._sharded
        if self._alias is not None:
            try:
                self._row = database.catalog.resolve(self._alias)
            except CollectionNotFoundError:
                raise CollectionNotFoundError(f"alias {self._alias!r} was deleted") from None
            return self._row
        row = database.store.collection_by_id(self._row.id)
        if row is None:
            raise CollectionNotFoundError(f"collection {self._row.name!r} was deleted")
        self._row = row
        return row

    def _group(self) -> ShardGroup:
        return self._sharded.group(self._current())

    @property
    def shards(self) -> int:
        """Number of shards."""
        return int(self._current().config["shards"])

    @property
    def replicas(self) -> int:
        """Copies of each shard."""
        return int(self._current().config["replicas"])

    def __repr__(self) -> str:
        row = self._current()
        space = LatentSpace.from_dict(row.space)
        via = "" if self._alias is None else f", alias={self._alias!r}"
        return (
            f"ShardedCollection({row.name!r}{via}, model={space.model!r}, "
            f"dimension={space.dimension}, metric={space.metric!r}, "
            f"shards={row.config['shards']}, replicas={row.config['replicas']})"
        )

    @property
    def name(self) -> str:
        return self._current().name

    @property
    def alias(self) -> str | None:
        return self._alias

    @property
    def space(self) -> LatentSpace:
        return LatentSpace.from_dict(self._current().space)

    @property
    def embedder(self) -> str | None:
        return self._current().embedder

    @property
    def recall_target(self) -> float:
        return float(self._current().config["recall_target"])

    @property
    def require_model(self) -> bool:
        # The driver checks it; the shards do not.
        return collection_requires_model(self._current().config)

    def _for_call(self) -> ShardedCollection:
        if self._alias is None:
            return self
        return ShardedCollection(self._sharded, self._current())

    def _set_recall_target(self, target: float) -> None:
        # Stored, and every shard re-tuned.
        row = self._current()
        store = self._sharded.store
        with store.write():
            store.update_collection_config(row.id, {**row.config, "recall_target": target})
        group = self._sharded.group(row)
        arguments = {"target": target}
        group.write("set_recall_target", {shard: arguments for shard in range(group.shards)})

    def _clear_recorded_queries(self) -> int:
        # Every replica of every shard records the queries it answers.
        group = self._sharded.group(self._current())
        cleared = group.write(
            "clear_recorded_queries", {shard: {} for shard in range(group.shards)}
        )
        return max(cleared.values(), default=0)

    def _optimize(self) -> None:
        # Every replica of every shard, in parallel.
        group = self._group()
        group.write("optimize", {shard: {} for shard in range(group.shards)})

    def _index_status(self) -> IndexStatus:
        # Rows summed over shards; the kind and parameters of the most demanding shard
        # (each shard is tuned on its own rows).
        statuses: list[IndexStatus] = self._group().read_all("index_status", {})
        params: dict[str, int] = {}
        for status in statuses:
            for key, value in status.params.items():
                params[key] = max(params.get(key, value), value)
        tuned = [s.tuned_recall for s in statuses if s.tuned_recall is not None]
        kinds = [s.kind for s in statuses if s.kind != EXACT_KIND]
        live = [s.live_recall for s in statuses if s.live_recall is not None]
        return IndexStatus(
            kind=kinds[0] if kinds else EXACT_KIND,
            spec=statuses[0].spec,
            indexed=sum(s.indexed for s in statuses),
            pending=sum(s.pending for s in statuses),
            deleted=sum(s.deleted for s in statuses),
            segments=sum(s.segments for s in statuses),
            building=any(s.building for s in statuses),
            params=params,
            recall_target=statuses[0].recall_target,
            tuned_recall=min(tuned) if tuned else None,
            # Each shard measures its own part of every query: the worst shard bounds it.
            live_recall=min(live) if live else None,
            live_queries=min((s.live_queries for s in statuses), default=0),
        )

    def _count(self) -> int:
        return sum(self._group().read_all("count", {}))

    # -- writes ----------------------------------------------------------------------

    def _write(self, request: WriteRequest) -> None:
        # Returns when every replica of every shard that the ids go to has committed
        # its part. Each shard prepares its rows (normalizes) exactly as the embedded
        # engine prepares a batch, so both store the same bits: the driver sends the
        # vectors as given (or embedded), checked but not normalized.
        vectors = write_vectors(self, request)[0]
        id_list, count = request.ids, request.size
        group = self._group()
        stored = set() if request.mode == "upsert" else group.present(id_list)
        if request.mode == "update":
            missing = [i for i in id_list if i not in stored]
            if missing:
                raise RecordNotFoundError(
                    f"cannot update ids that are not stored in {self.name!r}: "
                    f"{missing[:5]}{' ...' if len(missing) > 5 else ''}"
                )
        elif request.mode == "add" and stored:
            first = next(i for i in id_list if i in stored)
            raise DuplicateIdError(
                f"id {first!r} is already stored in {self.name!r} "
                f"({len(stored)} of the {count} ids are): use upsert to replace"
            )
        parts = group.parts(id_list, vectors, request.documents, request.metadatas)
        if request.mode == "add":
            group.write("add", parts, again="add_again")
        else:
            group.write(request.mode, parts)

    def _delete(self, request: GetRequest) -> int:
        # A delete retried after a host died counts only what the retry deleted.
        id_list = request.ids
        group = self._group()
        filters = {"where": request.where, "where_document": request.where_document}
        if id_list is None:
            parts: dict[int, dict[str, Any]] = {
                shard: {"ids": None, **filters} for shard in range(group.shards)
            }
        else:
            parts = {
                shard: {"ids": [id_list[p] for p in rows], **filters}
                for shard, rows in group.route(id_list).items()
            }
        return sum(group.write("delete", parts).values())

    # -- reads -----------------------------------------------------------------------

    def _get(self, request: GetRequest) -> GetResult:
        # Without ids, records come shard by shard (each shard's in insertion order).
        fields, id_list = request.fields, request.ids
        limit, offset = request.limit, request.offset
        where, where_document = request.where, request.where_document
        group = self._group()
        wanted = tuple(sorted(fields))
        filters = {"where": where, "where_document": where_document, "include": wanted}
        dimension = self.space.dimension
        if id_list is not None:
            routed = group.route(list(dict.fromkeys(id_list)))
            unique = list(dict.fromkeys(id_list))
            found = group.read(
                "get",
                {
                    shard: {"ids": [unique[p] for p in rows], **filters}
                    for shard, rows in routed.items()
                },
            )
            located = {
                record_id: (result, row)
                for result in found.values()
                for row, record_id in enumerate(result.ids)
            }
            picked = [located[i] for i in id_list if i in located]
            picked = picked[offset : None if limit is None else offset + limit]
            return assemble(picked, fields, dimension)
        if limit is None and offset == 0:
            pages = group.read_all("get", filters)
            return concatenate(pages, fields, dimension)
        pages, skip, need = [], offset, limit
        for shard in range(group.shards):
            if need == 0:
                break
            arguments = {"limit": need, "offset": skip, **filters}
            page, total = group.read("page", {shard: arguments})[shard]
            skip = max(skip - total, 0)
            pages.append(page)
            if need is not None:
                need -= len(page)
        return concatenate(pages, fields, dimension)

    def _scroll(self, request: GetRequest) -> Iterator[GetResult]:
        # Shard by shard, each in insertion order, ``batch`` records a page (the last
        # one fewer).
        assert request.limit is not None
        batch, fields = request.limit, request.fields
        where, where_document = request.where, request.where_document
        group = self._group()
        dimension = self.space.dimension
        held: list[GetResult] = []
        arguments = {
            "batch": batch,
            "where": where,
            "where_document": where_document,
            "include": tuple(sorted(fields)),
        }
        for shard in range(group.shards):
            after = 0
            while True:
                page, after = group.read("page_after", {shard: {"after": after, **arguments}})[
                    shard
                ]
                if not page.ids:
                    break
                held.append(page)
                while sum(len(part) for part in held) >= batch:
                    whole = concatenate(held, fields, dimension)
                    yield slice_page(whole, 0, batch)
                    held = [slice_page(whole, batch, len(whole))]
        rest = concatenate(held, fields, dimension)
        if rest.ids:
            yield rest

    def _query(self, request: QueryRequest) -> QueryResult:
        # Every shard answers its own top k and the driver keeps the k nearest of them
        # (ties in shard order).
        if request.hybrid:
            raise InvalidArgumentError(
                "hybrid search is not available on a sharded collection: its BM25 ranking "
                "and rank fusion need every document in one place; query vectors or texts "
                "without hybrid=True"
            )
        vectors = query_vectors(self, request)
        queries = request.queries
        count = (queries if queries is not None else self.space.prepare(vectors, copy=False)).shape[
            0
        ]
        k, fields, explain = request.k, request.fields, request.explain
        group = self._group()
        started = time.perf_counter()
        answers: list[QueryResult] = group.read_all(
            "query",
            {
                "vectors": vectors,
                "k": k,
                "where": request.where,
                "where_document": request.where_document,
                "include": tuple(sorted(fields | {"distances"})),
                "exact": request.exact,
                "params": request.params,
                "explain": explain,
            },
        )
        merged = merge(answers, k, count, fields)
        if explain:
            plan = merge_plans([a.plan for a in answers if a.plan is not None])
            timings = {**plan.timings_ms, "shards": (time.perf_counter() - started) * 1e3}
            merged = replace(merged, plan=replace(plan, timings_ms=timings))
        return merged

    # -- measuring -------------------------------------------------------------------

    def _evaluate(
        self, queries: object, matrix: FloatMatrix | None, *, k: int, sample: int
    ) -> RecallReport:
        # Measured through the shards: the default search against an exact search of
        # every shard, merged. Without queries, ``sample`` stored rows are the queries
        # (their own id is not counted), rows that the shards' indexes hold, so recall
        # reads high (``source`` says so). Speeds are one query at a time, fan-out and
        # merge included.
        if isinstance(queries, str):  # RECORDED_QUERIES: each shard's own record, the worst
            reports: list[RecallReport] = self._group().read_all(
                "evaluate", {"queries": RECORDED_QUERIES, "k": k, "sample": sample}
            )
            return min(reports, key=lambda report: report.recall)
        own: list[str] | None = None
        if queries is None:
            listed = self._all_ids(None)
            if not listed:
                raise InvalidArgumentError(f"collection {self.name!r} is empty: nothing to query")
            own = [listed[p] for p in sample_positions(len(listed), sample).tolist()]
            found = self.get(own, include=("vectors",))
            matrix = found.vectors
            own = found.ids
            source = "indexed rows"
        else:
            source = "given queries"
        assert matrix is not None
        depth = k if own is None else k + 1
        approximate = self.query(vectors=matrix, k=depth, include=())
        exact = self.query(vectors=matrix, k=depth, include=(), exact=True)
        timed = matrix[: min(len(matrix), _TIMED_QUERIES)]
        status = self.index_status()
        extra: dict[str, Any] = {}
        reduce = getattr(self.space, "reduce", None)
        if reduce is not None and status.kind != EXACT_KIND:
            # What the reduction alone costs: only each shard's own top k re-scored.
            plain = self.query(vectors=matrix, k=depth, include=(), params={"rerank": 1})
            extra = {
                "reduce": reduce,
                "recall_without_rerank": _recall(plain.ids, exact.ids, own, k),
            }
        return RecallReport(
            recall=_recall(approximate.ids, exact.ids, own, k),
            qps=_one_at_a_time(self, timed, k, exact=False),
            exact_qps=_one_at_a_time(self, timed, k, exact=True),
            k=k,
            queries=len(matrix),
            source=source,
            kind=status.kind,
            params=status.params,
            recall_target=self.recall_target,
            **extra,
        )

    def _all_ids(self, where: Where | None) -> list[str]:
        """Every matching id, shard by shard."""
        pages = self._group().read_all(
            "get", {"where": where, "where_document": None, "include": ()}
        )
        return [record_id for page in pages for record_id in page.ids]

    def _every_vector(
        self,
    ) -> tuple[FloatMatrix, Callable[[npt.NDArray[np.int64]], list[str]]]:
        # Every vector is gathered to this process (the report measures queries
        # against every row), so it needs the memory of the whole collection here.
        pages = self._group().read_all(
            "get", {"where": None, "where_document": None, "include": ("vectors",)}
        )
        whole = concatenate(pages, frozenset({"vectors"}), self.space.dimension)
        assert whole.vectors is not None
        ids = np.array(whole.ids, dtype=object)

        def ids_of(positions: npt.NDArray[np.int64]) -> list[str]:
            return [str(i) for i in ids[positions].tolist()]

        return whole.vectors, ids_of

    def _map(
        self, *, method: str, sample: int, where: Where | None, filters: SqlFilter | None
    ) -> SpaceMap:
        # A fixed-seed sample of the matching ids (shard by shard), fetched from their
        # shards and projected here.
        name, space = self.name, self.space
        with steps_bar(f"mapping {name}", 3) as steps:
            steps.advance("sampling")
            listed = self._all_ids(where)
            picked = [listed[p] for p in sample_positions(len(listed), sample).tolist()]
            records = self.get(picked, include=("vectors", "documents", "metadatas"))
            steps.advance(f"{method} of {len(records):,} records")
            assert records.vectors is not None
            coordinates = project(records.vectors, method=method, metric=space.metric)
            steps.advance("done")
        return SpaceMap(
            ids=records.ids,
            coordinates=coordinates,
            documents=records.documents or [],
            metadatas=[None if m is None else dict(m) for m in records.metadatas or []],
            method=method,
            total=len(listed),
            collection=name,
        )


# Queries timed one at a time by evaluate(): each is a round trip to every shard.
_TIMED_QUERIES = 50


def _recall(found: list[list[str]], truth: list[list[str]], own: list[str] | None, k: int) -> float:
    """Mean recall@k of ``found`` against ``truth``, leaving out each query's own id."""
    recalls = []
    for row, (found_ids, true_ids) in enumerate(zip(found, truth, strict=True)):
        skip = None if own is None else own[row]
        expected = [i for i in true_ids if i != skip][:k]
        hits = [i for i in found_ids if i != skip][:k]
        if expected:
            recalls.append(len(set(expected) & set(hits)) / len(expected))
    return float(np.mean(recalls)) if recalls else 1.0


def _one_at_a_time(
    collection: ShardedCollection, queries: npt.NDArray[np.float32], k: int, *, exact: bool
) -> float:
    """Queries per second, one query at a time."""
    started = time.perf_counter()
    for query in queries:
        collection.query(vectors=query, k=k, include=(), exact=exact)
    elapsed = time.perf_counter() - started
    return len(queries) / elapsed if elapsed > 0 else 0.0
