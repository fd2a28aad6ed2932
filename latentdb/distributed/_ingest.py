"""Bulk embedding: a JSONL or Parquet corpus, embedded by Ray Data workers, into shards.

:func:`ingest` reads the corpus with Ray Data and hands batches to a pool of worker
actors (``map_batches``). Each worker loads the collection's model once, asks the
shards which ids of its batch are stored already (so a run that stopped half way
resumes where it was: nothing stored is embedded again), embeds the rest and adds them
straight to the shards they hash to, with the retries of every sharded write. The
driver only reads the workers' counts, for progress; vectors never pass through it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.api import (
    Collection,
    check_ids,
    check_metadatas,
    check_non_negative,
    check_write_model,
)
from latentdb.distributed._collection import ShardedCollection
from latentdb.distributed._shards import Hosts, ShardGroup, require_ray
from latentdb.embed import get_embedder
from latentdb.errors import EmbedderError, InvalidArgumentError
from latentdb.ingest import (
    IngestReport,
    check_arguments,
    check_columns,
    corpus_files,
    corpus_kind,
    records_from_columns,
)
from latentdb.space import LatentSpace

__all__ = ["IngestReport", "ingest"]

_WORKER_CPUS = 0.5


class IngestWorker:
    """One Ray Data worker: skips stored ids, embeds the rest, adds them to the shards.

    Built by Ray Data from plain values (``target``), in the worker's process.
    """

    def __init__(self, target: Mapping[str, Any]) -> None:
        self.space = LatentSpace.from_dict(target["space"])
        self.group = ShardGroup(
            Hosts(retry_timeout=float(target["retry_timeout"])),
            str(target["holder"]),
            target["folders"],
        )
        self.id_field = str(target["id_field"])
        self.text_field = target["text_field"]
        self.vector_field = target["vector_field"]
        self.metadata_fields = list(target["metadata_fields"])
        embedder = target["embedder"]
        self.embedder = None if self.vector_field is not None else get_embedder(embedder)
        if self.embedder is not None and self.embedder.fingerprint != self.space.fingerprint:
            raise EmbedderError(
                f"embedder {embedder!r} has fingerprint {self.embedder.fingerprint} here, "
                f"but the collection was built with {self.space.fingerprint}"
            )

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, list[int]]:
        records = records_from_columns(
            batch,
            id_field=self.id_field,
            text_field=self.text_field,
            vector_field=self.vector_field,
            metadata_fields=self.metadata_fields,
        )
        check_ids(records.ids)
        fresh = records.without(self.group.present(records.ids))
        read, written = len(records), len(fresh)
        counts = {"read": [read], "skipped": [read - written], "written": [written]}
        if not fresh:
            return counts
        if fresh.vectors is not None:
            vectors = fresh.vector_array()
        else:
            assert self.embedder is not None  # built with one when no vector_field
            vectors = self.embedder.embed_texts(fresh.texts())
        self.space.prepare(vectors, rows=written)  # refuse bad vectors before writing
        if fresh.metadatas is not None:
            check_metadatas(fresh.metadatas, written)
        parts = self.group.parts(fresh.ids, np.asarray(vectors), fresh.documents, fresh.metadatas)
        self.group.write("add", parts, again="add_again")
        return counts


def ingest(
    collection: Collection,
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    id_field: str = "id",
    text_field: str | None = "text",
    vector_field: str | None = None,
    model: str | None = None,
    metadata_fields: Sequence[str] = (),
    batch_size: int = 256,
    workers: int | None = None,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Embed a corpus with Ray Data across the cluster and add it to a sharded collection.

    Records whose id is stored already are skipped before embedding, so running
    again after an interruption finishes the job without redoing it.

    Args:
        collection: A :class:`ShardedCollection` (from
            :func:`latentdb.distributed.connect`) with an embedder, or any sharded
            collection when ``vector_field`` is given.
        source: A JSONL file (``.jsonl``, ``.json``, ``.ndjson``, optionally
            ``.gz``), a Parquet file or folder (``.parquet``), or a list of them.
        id_field: The column of unique string (or integer) ids.
        text_field: The column embedded and stored as each record's document (None:
            no document; then ``vector_field`` is needed).
        vector_field: A column of ready vectors to add instead of embedding texts.
        model: The model the ``vector_field`` vectors come from: the collection's,
            and required when the collection's ``require_model`` is set (as for
            ``add(vectors=...)``).
        metadata_fields: Columns stored as each record's metadata (flat scalars).
        batch_size: Records a worker embeds and writes at a time.
        workers: Worker actors embedding in parallel, each on one thread with its
            own copy of the model (default: the cluster's CPUs).
        limit: Read at most this many records.
        progress: Called with the number of records handled so far.

    Returns:
        An :class:`IngestReport`.

    Raises:
        InvalidArgumentError: not a sharded collection, an unknown file type, a
            column missing from the corpus, or bad batch_size, workers or limit.
        ModelMismatchError: ``model`` is not the collection's (ModelRequiredError:
            none given for ``vector_field`` where the collection requires it).
        DuplicateIdError: an id repeats within a batch.
        EmbedderError: a record has no text to embed.
    """
    if not isinstance(collection, ShardedCollection):
        raise InvalidArgumentError(
            "ingest writes into a sharded collection: open the database with "
            "latentdb.distributed.connect"
        )
    check_arguments(
        text_field=text_field,
        vector_field=vector_field,
        batch_size=batch_size,
        limit=limit,
        embedder=collection.embedder is not None,
    )
    if workers is not None:
        check_non_negative(workers, "workers", minimum=1)
    check_write_model(
        collection.space,
        model,
        vectors=vector_field is not None,
        required=collection.require_model,
        collection=collection.name,
    )
    ray = require_ray()
    import ray.data  # noqa: F811 - the submodule, loaded on first use

    paths = _paths(source)
    started = time.perf_counter()
    context = ray.data.DataContext.get_current()
    bars, context.enable_progress_bars = context.enable_progress_bars, False
    try:
        dataset = _read(ray, paths)
        wanted = [id_field, text_field, vector_field, *metadata_fields]
        source = f"{paths[0]}{' ...' if len(paths) > 1 else ''}"
        check_columns(dataset.schema().names, wanted, source=source)
        dataset = dataset.select_columns([name for name in wanted if name is not None])
        if limit is not None:
            dataset = dataset.limit(limit)
        pool = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        # Blocks of a few batches: a single big file is one block, which one worker
        # alone would take.
        dataset = dataset.repartition(target_num_rows_per_block=4 * batch_size)
        row = collection._current()
        database = collection._sharded
        target = {
            "space": row.space,
            "embedder": row.embedder,
            "folders": ShardGroup.folders_of(database.root, row),
            "holder": database.holder,
            "retry_timeout": database.hosts.retry_timeout,
            "id_field": id_field,
            "text_field": text_field,
            "vector_field": vector_field,
            "metadata_fields": list(metadata_fields),
        }
        counted = dataset.map_batches(
            IngestWorker,
            fn_constructor_kwargs={"target": target},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=pool),
            # Half a CPU each: reserving whole ones for a pool as large as the cluster
            # leaves none to the read and repartition tasks that feed it, and the run
            # stalls. Each worker still embeds on one thread (OMP_NUM_THREADS=1).
            num_cpus=_WORKER_CPUS,
        )
        read = skipped = written = 0
        for counts in counted.iter_batches(batch_size=None, batch_format="numpy"):
            read += int(counts["read"].sum())
            skipped += int(counts["skipped"].sum())
            written += int(counts["written"].sum())
            if progress is not None:
                progress(read)
    finally:
        context.enable_progress_bars = bars
    return IngestReport(
        read=read, skipped=skipped, written=written, seconds=time.perf_counter() - started
    )


def _paths(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """The corpus's files, checked to exist and to be of one known kind."""
    paths = corpus_files(source)
    if len({corpus_kind(path) for path in paths}) != 1:
        raise InvalidArgumentError("ingest reads JSONL or Parquet files, not both at once")
    return paths


def _read(ray: Any, paths: list[str]) -> Any:
    """The corpus as a Ray Dataset."""
    if corpus_kind(paths[0]) == "json":
        return ray.data.read_json(paths, num_cpus=0)
    return ray.data.read_parquet(paths, num_cpus=0)
