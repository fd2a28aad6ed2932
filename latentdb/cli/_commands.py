"""The commands that build, fill, name, query and serve a database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from latentdb import demo as corpus
from latentdb._connect import connect
from latentdb.api import Collection, Database
from latentdb.cli._app import (
    CollectionName,
    Command,
    DatabasePath,
    answers_table,
    app,
    console,
    parse_where,
    progress_bar,
    took,
)
from latentdb.embed import available_threads
from latentdb.errors import InvalidArgumentError
from latentdb.ingest import IngestReport, Records, read_corpus, write_records

__all__ = ["alias", "collections", "demo", "ingest", "migrate", "query", "serve"]

# Neighbours compared by migrate's drift preview (Migration.preview's default).
_PREVIEW_K = 10


@app.command(cls=Command)
def demo(
    questions: Annotated[
        list[str] | None,
        typer.Argument(metavar="QUESTIONS", help="Questions to ask (default: a few examples)."),
    ] = None,
    path: Annotated[Path, typer.Option("--path", help="Database folder for the demo.")] = Path(
        "latentdb-demo"
    ),
    k: Annotated[int, typer.Option("-k", help="Answers per question.")] = 3,
) -> None:
    """Embed the Python standard library's docstrings and search them in plain English.

    The first run builds the collection; later runs reuse it. Every step prints how long
    it took on this machine.
    """
    started = time.perf_counter()
    say = Console(soft_wrap=True, markup=False, highlight=False).print  # paths, names as is
    measured: list[str] = []
    with connect(path) as db:
        collection = corpus.demo_collection(db)
        space = collection.space
        records: list[corpus.DocstringRecord] = []
        if collection.count() == 0:
            reading = time.perf_counter()
            records = corpus.stdlib_docstrings()
            say(
                f"Read {len(records):,} docstrings of the Python standard library in "
                f"{took(time.perf_counter() - reading)}."
            )
        else:
            say(f"Using the collection built earlier in {path}/.")
        loading = corpus.load_model(collection.embedder)
        say(f"Loaded {space.model} in {took(loading)}.")
        measured.append(f"model load {took(loading)}")
        if records:
            say(f"Embedding {len(records):,} docstrings into {path}/ (first run only)")
            embedding = time.perf_counter()
            with progress_bar() as progress:
                task = progress.add_task("embedding", total=len(records))
                corpus.add_docstrings(
                    collection, records, progress=lambda done: progress.update(task, completed=done)
                )
            embedded = time.perf_counter() - embedding
            say(
                f"Embedded and stored {len(records):,} docstrings in {took(embedded)} "
                f"({len(records) / embedded:,.0f} texts/s)."
            )
            measured.append(f"embedding {len(records):,} texts {took(embedded)}")
        say(
            f"{collection.count():,} docstrings, {space.dimension}-d {space.metric} space "
            f"of {space.model}\n"
        )
        answered = []
        for question in questions or corpus.DEMO_QUESTIONS:
            asking = time.perf_counter()
            result = collection.query(texts=question, k=k)
            answered.append(1000 * (time.perf_counter() - asking))
            title = f"{question}  (answered in {answered[-1]:.0f} ms)"
            console.print(answers_table(title, result, 0))
    fastest, slowest = f"{min(answered):.0f}", f"{max(answered):.0f}"
    spread = fastest if fastest == slowest else f"{fastest}-{slowest}"
    measured.append(f"each question {spread} ms, its embedding included")
    say(
        f"Measured on this machine ({available_threads()} CPUs): {'; '.join(measured)}; "
        f"{took(time.perf_counter() - started)} in all."
    )


@app.command(cls=Command)
def collections(
    path: DatabasePath,
) -> None:
    """List the collections of a database with their latent spaces and sizes."""
    with connect(path) as db:
        rows = []
        for name in db.list_collections():
            collection = db.get_collection(name)
            space = collection.space
            live = collection.index_status()
            rows.append(
                {
                    "name": name,
                    "records": f"{collection.count():,}",
                    "model": space.model,
                    "dimension": str(space.dimension),
                    "metric": space.metric,
                    "embedder": collection.embedder or "-",
                    "live recall": "-"
                    if live.live_recall is None
                    else f"{live.live_recall:.3f} ({live.live_queries:,} queries)",
                }
            )
        aliases = db.list_aliases()
    _print_collections(rows)
    if aliases:
        console.print(
            Text("aliases: " + ", ".join(f"{alias} -> {name}" for alias, name in aliases.items())),
            soft_wrap=True,
        )


def _print_collections(rows: list[dict[str, str]]) -> None:
    """A table of the collections when it fits the terminal whole; else a few lines per
    collection, never cut (a pipe or CI is 80 columns wide, and a model name is often
    longer than its column: issue 16)."""
    table = Table()
    for column in ("name", "records", "model", "dimension", "metric", "embedder", "live recall"):
        table.add_column(column, no_wrap=True, justify="right" if column == "records" else "left")
    for row in rows:
        table.add_row(*(Text(value) for value in row.values()))
    natural = Measurement.get(console, console.options.update_width(1_000_000), table)
    if natural.maximum <= console.width:
        console.print(table)
        return
    for position, row in enumerate(rows):
        lines = [
            Text.assemble((row["name"], "bold"), f"  {row['records']} records"),
            Text(f"  model     {row['model']}"),
            Text(f"  space     {row['dimension']}-d {row['metric']}"),
            Text(f"  embedder  {row['embedder']}"),
            Text(f"  live recall  {row['live recall']}"),
        ]
        if position:
            console.print()
        for line in lines:
            console.print(line, soft_wrap=True)  # the terminal wraps; rich cuts nothing


@app.command(cls=Command)
def alias(
    path: DatabasePath,
    name: Annotated[str, typer.Argument(metavar="ALIAS", help="The alias.")],
    collection: Annotated[
        str | None,
        typer.Argument(metavar="COLLECTION", help="The collection it names (not with --delete)."),
    ] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
) -> None:
    """Point ALIAS at COLLECTION: create the alias, or switch it if it exists."""
    with connect(path) as db:
        if delete:
            db.delete_alias(name)
            console.print(f"alias {name} deleted")
            return
        if collection is None:
            raise typer.BadParameter("give the COLLECTION the alias names, or --delete")
        if name in db.list_aliases():
            db.switch_alias(name, collection)
        else:
            db.create_alias(name, collection)
        console.print(f"{name} -> {collection}")


@app.command(cls=Command)
def migrate(
    path: DatabasePath,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Alias or collection to re-embed.")],
    embedder: Annotated[
        str | None,
        typer.Option(
            "--embedder",
            help="The new embedder, e.g. sentence-transformers:DIR (default: copy the "
            "vectors as they are).",
        ),
    ] = None,
    reduce: Annotated[
        int | None,
        typer.Option("--reduce", help="Index the new collection's vectors PCA-reduced to N."),
    ] = None,
    new_name: Annotated[
        str | None, typer.Option("--new-name", help="Name of the new collection.")
    ] = None,
    preview: Annotated[
        bool,
        typer.Option(
            "--preview/--no-preview",
            help="Then compare the records copied with the old version: how much their "
            "neighbourhoods change (latentdb compare OLD NEW).",
        ),
    ] = True,
) -> None:
    """Re-embed (or copy) NAME into a new collection, then switch NAME to it.

    Every document of NAME is embedded with EMBEDDER (or, without --embedder, its
    vectors are copied, re-indexed with --reduce). Interrupted (even killed), the same
    command resumes where it stopped. Then the drift from the old version: the overlap
    of each sampled record's top-10 in both, and the records that change most."""
    from latentdb.cli._analysis import comparison_tables  # after this module's commands

    with connect(path) as db:
        with progress_bar() as progress:
            task = progress.add_task("re-embedding" if embedder else "copying", total=None)
            migration = db.migrate(
                name,
                embedder=embedder,
                reduce=reduce,
                new_name=new_name,
                background=False,
                progress=lambda copied, total: progress.update(task, completed=copied, total=total),
            )
        status = migration.status()
        how = f"embedded with {status.embedder}" if embedder else "copied"
        console.print(
            f"{status.alias} -> {status.target} ({status.copied:,} records {how}); "
            f"the old version is {status.source}"
        )
        if not preview:
            return
        if status.copied <= _PREVIEW_K:
            console.print(
                f"no drift preview: it needs more than {_PREVIEW_K} records, "
                f"{status.copied} were copied"
            )
            return
        for table in comparison_tables(migration.preview(k=_PREVIEW_K)):
            console.print(table)


@app.command(cls=Command)
def ingest(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="Database folder (created if missing).")
    ],
    collection: Annotated[
        str, typer.Argument(metavar="COLLECTION", help="Collection to add to (created if missing).")
    ],
    sources: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILES", help="JSONL (.jsonl, .jsonl.gz) or Parquet files.", exists=True
        ),
    ],
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="PATH is a sharded database: embed with Ray Data across the cluster's "
            "workers and write into the shards (needs the ray extra).",
        ),
    ] = False,
    address: Annotated[
        str | None,
        typer.Option(
            "--address", help="With --ray: the cluster, e.g. ray://head:10001 (default: local)."
        ),
    ] = None,
    shards: Annotated[
        int, typer.Option("--shards", help="With --ray: shards of a new collection.")
    ] = 2,
    replicas: Annotated[
        int, typer.Option("--replicas", help="With --ray: copies of each shard.")
    ] = 1,
    embedder: Annotated[
        str, typer.Option("--embedder", help="Embedder of a new collection.")
    ] = "minilm",
    id_field: Annotated[str, typer.Option("--id-field", help="Column of unique ids.")] = "id",
    text_field: Annotated[
        str, typer.Option("--text-field", help="Column embedded and stored as the document.")
    ] = "text",
    metadata: Annotated[
        str | None,
        typer.Option("--metadata", help="Columns stored as metadata, comma-separated."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Records per batch.")] = 256,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="With --ray: embedding workers (default: the CPUs)."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Read at most N records.")] = None,
) -> None:
    """Embed a JSONL or Parquet corpus into COLLECTION (resumable).

    The --text-field of every record of FILES is embedded, skipping ids already stored:
    run it again after an interruption and it carries on."""
    fields = [name.strip() for name in (metadata or "").split(",") if name.strip()]
    run: Callable[..., IngestReport]
    if ray:
        from latentdb import distributed

        database: Database = distributed.connect(
            address, path=path, shards=shards, replicas=replicas
        )
        run = partial(distributed.ingest, workers=workers)
    elif address is not None:
        raise typer.BadParameter("--address needs --ray")
    else:
        database, run = connect(path), _ingest_here
    with database as db, progress_bar() as progress:
        found = db.get_or_create_collection(collection, embedder=embedder)
        task = progress.add_task(f"ingesting into {collection}{' on Ray' * ray}", total=None)
        report = run(
            found,
            sources,
            id_field=id_field,
            text_field=text_field,
            metadata_fields=fields,
            batch_size=batch_size,
            limit=limit,
            progress=lambda done: progress.update(task, completed=done),
        )
    rate = f" ({report.rate:,.0f} records/s)" if ray else ""
    console.print(
        f"{report.read:,} records read, {report.skipped:,} already stored, "
        f"{report.written:,} added in {report.seconds:.1f} s{rate}"
    )


def _ingest_here(
    collection: Collection,
    sources: list[Path],
    *,
    progress: Callable[[int], None],
    **reading: Any,
) -> IngestReport:
    """``ingest`` without Ray: :mod:`latentdb.ingest` in this process, where a file that
    cannot be read (an unknown kind, no such column, no pyarrow) is a bad FILES argument;
    errors of the writes stay what they are."""
    return write_records(collection, _read_files(sources, reading), progress=progress)


def _read_files(sources: list[Path], reading: dict[str, Any]) -> Iterator[Records]:
    try:
        yield from read_corpus(sources, **reading)
    except (InvalidArgumentError, ImportError) as error:
        raise typer.BadParameter(str(error)) from None


@app.command(cls=Command)
def query(
    path: DatabasePath,
    collection: CollectionName,
    text: Annotated[str, typer.Argument(metavar="TEXT", help="Text to search for.")],
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 5,
    where: Annotated[
        str | None,
        typer.Option("--where", help='Metadata filter as JSON, e.g. \'{"kind": "class"}\'.'),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the records nearest to TEXT in COLLECTION."""
    condition = parse_where(where)
    with connect(path) as db:
        result = db.get_collection(collection).query(texts=text, k=k, where=condition)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        console.print(answers_table(text, result, 0))


@app.command(cls=Command)
def serve(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="Database folder (created if missing).")
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8750,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="An accepted key, KEY[:read|write[:COLLECTION,...]] (repeatable); also "
            "from --keys-file and LATENTDB_API_KEYS.",
        ),
    ] = None,
    keys_file: Annotated[
        Path | None, typer.Option("--keys-file", help="A file of keys, one per line.")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without keys (loopback hosts only).")
    ] = False,
    max_body: Annotated[
        int, typer.Option("--max-body", help="Largest request body, in bytes (413 above).")
    ] = 64 * 1024 * 1024,
    max_batch: Annotated[
        int,
        typer.Option("--max-batch", help="Most rows per write or queries per call (413 above)."),
    ] = 10_000,
    certfile: Annotated[
        str | None, typer.Option("--certfile", help="TLS certificate (PEM): serve HTTPS.")
    ] = None,
    keyfile: Annotated[str | None, typer.Option("--keyfile", help="TLS private key (PEM).")] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request (off: see /metrics).")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Processes serving the database (one per core: the GIL holds one "
            "process to one core).",
        ),
    ] = 1,
) -> None:
    """Serve the database in PATH over HTTP.

    Every operation is a REST endpoint, with OpenAPI at /docs, /healthz and /metrics.
    Clients connect with latentdb.connect("http://HOST:PORT", api_key=KEY)."""
    from latentdb.server import Keyring, check_exposure
    from latentdb.server import serve as run

    keys = Keyring.load(api_key or [], keys_file=keys_file)
    check_exposure(host, keys, no_auth=no_auth, max_body=max_body, max_batch=max_batch)
    scheme = "https" if certfile else "http"
    access = "without authentication" if no_auth else f"with {len(keys)} API key(s)"
    processes = f" in {workers} processes" if workers > 1 else ""
    Console(stderr=True, soft_wrap=True).print(
        f"serving {path} at {scheme}://{host}:{port} {access}{processes}"
    )
    run(
        path,
        host=host,
        port=port,
        keys=keys,
        no_auth=no_auth,
        max_body=max_body,
        max_batch=max_batch,
        certfile=certfile,
        keyfile=keyfile,
        access_log=access_log,
        workers=workers,
    )
