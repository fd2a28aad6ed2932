"""Ingest: JSONL and Parquet files read into records and written, in batches, into a
collection.

The reading half is shared by every way of ingesting: :func:`corpus_files` names the
files (one kind each, by suffix: :data:`JSON_SUFFIXES`, :data:`PARQUET_SUFFIXES`, or a
folder of Parquet files), :func:`check_columns` says which wanted column a file lacks,
and :func:`records_from_columns` turns a batch of columns into :class:`Records` (string
ids, documents, ready vectors, metadata).

In this process, :func:`read_corpus` reads the files with pyarrow and
:func:`write_records` writes into any :class:`~latentdb.api.Collection` through its
public methods, skipping ids stored already, so a run that stopped resumes where it
was::

    report = write_records(collection, read_corpus("corpus.jsonl", metadata_fields=["kind"]))

:func:`latentdb.distributed.ingest` reads the same files with Ray Data instead and
embeds across a cluster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from latentdb.api import Collection, check_non_negative
from latentdb.errors import EmbedderError, InvalidArgumentError

__all__ = [
    "JSON_SUFFIXES",
    "PARQUET_SUFFIXES",
    "IngestReport",
    "Records",
    "check_arguments",
    "check_columns",
    "corpus_files",
    "corpus_kind",
    "read_corpus",
    "records_from_columns",
    "write_records",
]

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

#: Suffixes read as newline-delimited JSON (pyarrow and Ray Data decompress .gz by it).
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")
#: Suffixes read as Parquet (so is a folder, of Parquet files).
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class IngestReport:
    """What an ingest run did.

    Attributes:
        read: Records read from the corpus.
        skipped: Records whose id was stored already (not embedded again).
        written: Records embedded and added.
        seconds: Wall time of the run.
    """

    read: int
    skipped: int
    written: int
    seconds: float

    @property
    def rate(self) -> float:
        """Records read per second."""
        return self.read / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Records:
    """A batch of records as a collection takes them, one entry per id in each list.

    Attributes:
        ids: String ids.
        documents: Each record's text (None where it has none), or None when no text
            column is read.
        vectors: Each record's ready vector as read (stack with :meth:`vector_array`),
            or None when vectors are to be embedded.
        metadatas: Each record's metadata (None where all its fields are missing), or
            None when no metadata column is read.
        text_field: The column the documents came from, named in errors.
    """

    ids: list[str]
    documents: list[str | None] | None = None
    vectors: list[Any] | None = None
    metadatas: list[dict[str, Any] | None] | None = None
    text_field: str | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, stored: Container[str]) -> Records:
        """These records less those whose id is in ``stored``."""
        keep = [position for position, record_id in enumerate(self.ids) if record_id not in stored]

        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[position] for position in keep]

        return Records(
            ids=[self.ids[position] for position in keep],
            documents=pick(self.documents),
            vectors=pick(self.vectors),
            metadatas=pick(self.metadatas),
            text_field=self.text_field,
        )

    def vector_array(self) -> npt.NDArray[np.float32]:
        """The ready vectors as one float32 array of shape (len(self), d).

        Raises:
            InvalidArgumentError: no vectors were read.
        """
        if self.vectors is None:
            raise InvalidArgumentError("these records were read without a vector column")
        return np.stack([np.asarray(vector, dtype=np.float32) for vector in self.vectors])

    def texts(self) -> list[str]:
        """The documents, to embed: every record needs one.

        Raises:
            EmbedderError: a record has no text (or no text column was read).
        """
        documents = self.documents or [None] * len(self.ids)
        for record_id, text in zip(self.ids, documents, strict=True):
            if text is None:
                raise EmbedderError(f"record {record_id!r} has no {self.text_field!r} to embed")
        return [str(text) for text in documents]


def corpus_kind(path: str | os.PathLike[str]) -> str:
    """``"json"`` or ``"parquet"``: how a corpus file is read, by its suffix.

    Raises:
        InvalidArgumentError: neither a JSONL nor a Parquet suffix, nor a folder.
    """
    name = str(path).lower()
    if name.endswith(JSON_SUFFIXES):
        return "json"
    if name.endswith(PARQUET_SUFFIXES) or Path(path).is_dir():
        return "parquet"
    raise InvalidArgumentError(
        f"{path}: ingest reads JSONL ({', '.join(JSON_SUFFIXES)}) or Parquet "
        f"({', '.join(PARQUET_SUFFIXES)}, or a folder of them)"
    )


def corpus_files(source: Source) -> list[str]:
    """The files of a corpus, each checked to be of a known kind and to exist.

    Args:
        source: A file or folder, or a list of them; a URL (``scheme://``) is not
            checked to exist.

    Returns:
        The paths as strings, in the order given.

    Raises:
        InvalidArgumentError: no files, an unknown kind (see :func:`corpus_kind`), or
            a file that does not exist.
    """
    listed = [source] if isinstance(source, str | os.PathLike) else list(source)
    if not listed:
        raise InvalidArgumentError("ingest needs at least one file")
    paths = [os.fspath(path) for path in listed]  # str(Path()) makes s3:// s3:/
    for path in paths:
        corpus_kind(path)
    for path in paths:
        if "://" not in path and not Path(path).exists():
            raise InvalidArgumentError(f"no such file: {path}")
    return paths


def check_columns(columns: Sequence[str], wanted: Iterable[str | None], *, source: str) -> None:
    """Refuse a corpus that lacks a wanted column (None in ``wanted`` is skipped).

    Raises:
        InvalidArgumentError: naming the missing columns and those ``source`` has.
    """
    missing = [name for name in wanted if name is not None and name not in columns]
    if missing:
        raise InvalidArgumentError(
            f"{source} has no column {', '.join(map(repr, missing))}; its columns are "
            + ", ".join(columns)
        )


def check_arguments(
    *,
    text_field: str | None,
    vector_field: str | None,
    batch_size: int,
    limit: int | None,
    embedder: bool = True,
) -> None:
    """The checks of an ingest's arguments that come before any file is read.

    Args:
        text_field: The column to embed, or None.
        vector_field: The column of ready vectors, or None.
        batch_size: Records per batch.
        limit: Most records to read, or None for all.
        embedder: Whether the collection has an embedder (to embed ``text_field``).

    Raises:
        InvalidArgumentError: nothing to embed (no text_field, or no embedder) and no
            vector_field; a batch_size or limit under 1.
    """
    if vector_field is None and (text_field is None or not embedder):
        raise InvalidArgumentError(
            "ingest embeds text_field with the collection's embedder: give text_field= and "
            "a collection with an embedder, or vector_field= for ready vectors"
        )
    check_non_negative(batch_size, "batch_size", minimum=1)
    if limit is not None:
        check_non_negative(limit, "limit", minimum=1)


def records_from_columns(
    columns: Mapping[str, Iterable[Any]],
    *,
    id_field: str = "id",
    text_field: str | None = "text",
    vector_field: str | None = None,
    metadata_fields: Sequence[str] = (),
) -> Records:
    """Records from a batch of columns (lists, or numpy arrays as Ray Data gives them).

    Ids become strings; numpy scalars become Python values, and a missing value (None,
    or NaN, Arrow's missing float) is no document or is left out of the metadata.

    Args:
        columns: Column name to its values, one per record.
        id_field: The column of ids.
        text_field: The column of documents (None: no documents).
        vector_field: The column of ready vectors (None: none).
        metadata_fields: Columns stored as metadata (flat scalars).

    Returns:
        :class:`Records`; ``metadatas`` is None when ``metadata_fields`` is empty.
    """
    ids = [str(_plain(value)) for value in columns[id_field]]
    documents = None
    if text_field is not None:
        texts = [_plain(value) for value in columns[text_field]]
        documents = [None if text is None else str(text) for text in texts]
    vectors = None if vector_field is None else list(columns[vector_field])
    metadatas: list[dict[str, Any] | None] | None = None
    if metadata_fields:
        values = {field: [_plain(value) for value in columns[field]] for field in metadata_fields}
        metadatas = [
            {field: values[field][p] for field in metadata_fields if values[field][p] is not None}
            or None
            for p in range(len(ids))
        ]
    return Records(ids, documents, vectors, metadatas, text_field)


def _plain(value: Any) -> Any:
    """A numpy scalar as a Python value (None for a missing one)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN: Arrow's missing float
        return None
    return value


def read_corpus(
    source: Source,
    *,
    id_field: str = "id",
    text_field: str | None = "text",
    vector_field: str | None = None,
    metadata_fields: Sequence[str] = (),
    batch_size: int = 256,
    limit: int | None = None,
) -> Iterator[Records]:
    """Read a corpus with pyarrow in this process, a batch of records at a time.

    The files are checked when this is called; each file's columns when it is read
    (one file at a time, in the order given).

    Args:
        source: Files as :func:`corpus_files` takes them (JSONL and Parquet may mix).
        id_field, text_field, vector_field, metadata_fields: As
            :func:`records_from_columns` takes them.
        batch_size: Records per batch (at most).
        limit: Read at most this many records.

    Returns:
        An iterator of :class:`Records`.

    Raises:
        InvalidArgumentError: see :func:`corpus_files`; neither text_field nor
            vector_field; a batch_size or limit under 1; while iterating, a file without
            a wanted column (:func:`check_columns`).
        ImportError: pyarrow is not installed (while iterating).
    """
    check_arguments(
        text_field=text_field, vector_field=vector_field, batch_size=batch_size, limit=limit
    )
    paths = corpus_files(source)
    fields = {
        "id_field": id_field,
        "text_field": text_field,
        "vector_field": vector_field,
        "metadata_fields": metadata_fields,
    }
    named = (id_field, text_field, vector_field, *metadata_fields)
    wanted = list(dict.fromkeys(name for name in named if name is not None))
    return _batches(paths, wanted, fields, batch_size, limit)


def _batches(
    paths: list[str],
    wanted: list[str],
    fields: dict[str, Any],
    batch_size: int,
    limit: int | None,
) -> Iterator[Records]:
    read = 0
    for path in paths:
        table = _read_table(path)
        check_columns(table.column_names, wanted, source=path)
        for batch in table.select(wanted).to_batches(max_chunksize=batch_size):
            if limit is not None:
                batch = batch.slice(0, limit - read)
            records = records_from_columns(batch.to_pydict(), **fields)
            read += len(records)
            if records:
                yield records
            if limit is not None and read >= limit:
                return


def _read_table(path: str) -> Any:
    """One corpus file (or Parquet folder) as a pyarrow Table."""
    try:
        import pyarrow.json as arrow_json
        import pyarrow.parquet as parquet
    except ImportError:  # pragma: no cover - installed in development
        raise ImportError("ingest reads files with pyarrow: pip install pyarrow") from None
    if corpus_kind(path) == "json":
        return arrow_json.read_json(path)
    return parquet.read_table(path)


def write_records(
    collection: Collection,
    batches: Iterable[Records],
    *,
    model: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Add batches of records to a collection, skipping ids it stores already.

    Uses only the collection's public ``get`` and ``add``, so any implementation takes
    them: embedded, remote or sharded. Records without ready vectors are embedded by
    the collection's embedder, from their documents.

    Args:
        collection: Where the records go.
        batches: :class:`Records`, e.g. from :func:`read_corpus`.
        model: The model of ready vectors (as ``add(vectors=..., model=...)``).
        progress: Called after each batch with the number of records read so far.

    Returns:
        An :class:`IngestReport`.

    Raises:
        EmbedderError: a record to embed has no text.
        LatentDBError: whatever ``collection.add`` refuses (duplicate ids in a batch,
            vectors of another dimension or model, ...).
    """
    started = time.perf_counter()
    read = skipped = 0
    for records in batches:
        fresh = records.without(set(collection.get(records.ids, include=()).ids))
        if fresh:
            vectors = None if fresh.vectors is None else fresh.vector_array()
            if vectors is None:
                fresh.texts()  # refuse a record without text before any is embedded
            collection.add(
                fresh.ids,
                vectors=vectors,
                documents=fresh.documents,
                metadatas=fresh.metadatas,
                model=model,
            )
        read += len(records)
        skipped += len(records) - len(fresh)
        if progress is not None:
            progress(read)
    return IngestReport(
        read=read, skipped=skipped, written=read - skipped, seconds=time.perf_counter() - started
    )
