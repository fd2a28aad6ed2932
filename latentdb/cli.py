"""The ``latentdb`` command: a thin layer over the library.

latentdb demo ["your question"]        build a collection of stdlib docstrings, ask it
latentdb collections PATH              list collections and their latent spaces
latentdb query PATH COLLECTION "text"  nearest records to a text
latentdb alias PATH ALIAS COLLECTION   create or switch an alias (--delete removes it)
latentdb migrate PATH NAME --embedder E  re-embed a collection, switch NAME when done
latentdb ingest PATH COLLECTION FILES  embed a JSONL/Parquet corpus (--ray: on a Ray cluster)
latentdb serve PATH                    serve a database over HTTP (API keys, OpenAPI)
latentdb analyze PATH COLLECTION       the space report: norms, concentration, hubness, advice
latentdb map PATH COLLECTION -o F      a 2-D map of the records (HTML, or PNG for *.png)
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

import latentdb
from latentdb.analysis import SpaceReport
from latentdb.api import Collection, QueryResult
from latentdb.embed._onnx import available_threads
from latentdb.errors import InvalidArgumentError, LatentDBError
from latentdb.ingest import Records, read_corpus, write_records

__all__ = ["app", "main"]


def _without_flag_types(params: list[Any]) -> list[Any]:
    """Flags take no value, but typer 0.29's rich help prints a type after every option
    (``--help <bool>``, issue 16): an empty metavar leaves the flag bare."""
    for param in params:
        if isinstance(param, typer.core.TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class _Group(typer.core.TyperGroup):
    """The ``latentdb`` group, whose help shows flags without a value type."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))


class _Command(typer.core.TyperCommand):
    """A ``latentdb`` command, whose help shows flags without a value type and wraps its
    docstring at the terminal's width."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # typer keeps the docstring's line breaks after its first paragraph, which
        # breaks lines raggedly on a terminal narrower than the source.
        if self.help:
            paragraphs = inspect.cleandoc(self.help).split("\n\n")
            self.help = "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))


app = typer.Typer(
    cls=_Group,
    help="latentdb: a vector database for Python that indexes a model's latent space.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

DEMO_COLLECTION = "stdlib"


def _version(value: bool) -> None:
    if value:
        console.print(f"latentdb {latentdb.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """latentdb: a vector database for Python that indexes a model's latent space."""


@app.command(cls=_Command)
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
    from latentdb.demo import DEMO_QUESTIONS, stdlib_docstrings

    started = time.perf_counter()
    say = Console(soft_wrap=True, markup=False, highlight=False).print  # paths, names as is
    measured: list[str] = []
    with latentdb.connect(path) as db:
        if DEMO_COLLECTION in db.list_collections():  # built earlier, whatever its model
            collection = db.get_collection(DEMO_COLLECTION)
        else:
            collection = db.create_collection(DEMO_COLLECTION)
        space = collection.space
        records = []
        if collection.count() == 0:
            reading = time.perf_counter()
            records = stdlib_docstrings()
            say(
                f"Read {len(records):,} docstrings of the Python standard library in "
                f"{_took(time.perf_counter() - reading)}."
            )
        else:
            say(f"Using the collection built earlier in {path}/.")
        loading = _load_model(collection.embedder)
        say(f"Loaded {space.model} in {_took(loading)}.")
        measured.append(f"model load {_took(loading)}")
        if records:
            say(f"Embedding {len(records):,} docstrings into {path}/ (first run only)")
            embedding = time.perf_counter()
            with _progress() as progress:
                task = progress.add_task("embedding", total=len(records))
                collection.add(
                    [r.id for r in records],
                    documents=[r.document for r in records],
                    metadatas=[dict(r.metadata) for r in records],
                    progress=lambda done: progress.update(task, completed=done),
                )
            embedded = time.perf_counter() - embedding
            say(
                f"Embedded and stored {len(records):,} docstrings in {_took(embedded)} "
                f"({len(records) / embedded:,.0f} texts/s)."
            )
            measured.append(f"embedding {len(records):,} texts {_took(embedded)}")
        say(
            f"{collection.count():,} docstrings, {space.dimension}-d {space.metric} space "
            f"of {space.model}\n"
        )
        answered = []
        for question in questions or DEMO_QUESTIONS:
            asking = time.perf_counter()
            result = collection.query(texts=question, k=k)
            answered.append(1000 * (time.perf_counter() - asking))
            title = f"{question}  (answered in {answered[-1]:.0f} ms)"
            console.print(_answers_table(title, result, 0))
    fastest, slowest = f"{min(answered):.0f}", f"{max(answered):.0f}"
    spread = fastest if fastest == slowest else f"{fastest}-{slowest}"
    measured.append(f"each question {spread} ms, its embedding included")
    say(
        f"Measured on this machine ({available_threads()} CPUs): {'; '.join(measured)}; "
        f"{_took(time.perf_counter() - started)} in all."
    )


def _load_model(embedder: str | None) -> float:
    """Seconds to load a collection's embedder: its fingerprint and a first text (the
    model loads on first use), so that later timings are of embedding alone."""
    from latentdb.embed import get_embedder

    if embedder is None:
        return 0.0
    started = time.perf_counter()
    model = get_embedder(embedder)
    _ = model.fingerprint
    model.embed_texts(["a first text loads the model"])
    return time.perf_counter() - started


def _took(seconds: float) -> str:
    """A duration as people read it: "12 ms" under a second, else "38.2 s"."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _answers_table(title: str, result: QueryResult, position: int) -> Table:
    # Text, not markup: a stored document or id with "[/x]" in it is not a rich tag.
    table = Table(title=Text(title), title_justify="left", show_lines=False)
    table.add_column("distance", justify="right")
    table.add_column("id", overflow="fold")  # whole ids, never an ellipsis
    table.add_column("document", overflow="fold")
    distances = result.distances
    documents = result.documents
    for rank, record_id in enumerate(result.ids[position]):
        distance = "" if distances is None else f"{distances[position, rank]:.3f}"
        document = "" if documents is None else str(documents[position][rank] or "")
        table.add_row(distance, Text(record_id), Text(document[:100]))
    return table


@app.command(cls=_Command)
def collections(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Database folder.", exists=True)],
) -> None:
    """List the collections of a database with their latent spaces and sizes."""
    with latentdb.connect(path) as db:
        rows = []
        for name in db.list_collections():
            collection = db.get_collection(name)
            space = collection.space
            rows.append(
                {
                    "name": name,
                    "records": f"{collection.count():,}",
                    "model": space.model,
                    "dimension": str(space.dimension),
                    "metric": space.metric,
                    "embedder": collection.embedder or "-",
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
    for column in ("name", "records", "model", "dimension", "metric", "embedder"):
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
        ]
        if position:
            console.print()
        for line in lines:
            console.print(line, soft_wrap=True)  # the terminal wraps; rich cuts nothing


@app.command(cls=_Command)
def alias(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Database folder.", exists=True)],
    name: Annotated[str, typer.Argument(metavar="ALIAS", help="The alias.")],
    collection: Annotated[
        str | None,
        typer.Argument(metavar="COLLECTION", help="The collection it names (not with --delete)."),
    ] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
) -> None:
    """Point ALIAS at COLLECTION: create the alias, or switch it if it exists."""
    with latentdb.connect(path) as db:
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


@app.command(cls=_Command)
def migrate(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Database folder.", exists=True)],
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
) -> None:
    """Re-embed (or copy) NAME into a new collection, then switch NAME to it.

    Every document of NAME is embedded with EMBEDDER (or, without --embedder, its
    vectors are copied, re-indexed with --reduce). Interrupted (even killed), the same
    command resumes where it stopped."""
    with latentdb.connect(path) as db, _progress() as progress:
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


@app.command(cls=_Command)
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
    if not ray:
        if address is not None:
            raise typer.BadParameter("--address needs --ray")
        with latentdb.connect(path) as db, _progress() as progress:
            found = db.get_or_create_collection(collection, embedder=embedder)
            task = progress.add_task(f"ingesting into {collection}", total=None)
            batches = _read_files(sources, id_field, text_field, fields, batch_size, limit)
            report = write_records(
                found, batches, progress=lambda done: progress.update(task, completed=done)
            )
        console.print(
            f"{report.read:,} records read, {report.skipped:,} already stored, "
            f"{report.written:,} added in {report.seconds:.1f} s"
        )
        return
    from latentdb import distributed

    with (
        distributed.connect(address, path=path, shards=shards, replicas=replicas) as db,
        _progress() as progress,
    ):
        found = db.get_or_create_collection(collection, embedder=embedder)
        task = progress.add_task(f"ingesting into {collection} on Ray", total=None)
        report = distributed.ingest(
            found,
            sources,
            id_field=id_field,
            text_field=text_field,
            metadata_fields=fields,
            batch_size=batch_size,
            workers=workers,
            limit=limit,
            progress=lambda done: progress.update(task, completed=done),
        )
    console.print(
        f"{report.read:,} records read, {report.skipped:,} already stored, "
        f"{report.written:,} added in {report.seconds:.1f} s ({report.rate:,.0f} records/s)"
    )


def _read_files(
    sources: list[Path],
    id_field: str,
    text_field: str,
    fields: list[str],
    batch_size: int,
    limit: int | None,
) -> Iterator[Records]:
    """The records of FILES, where a file that cannot be read (an unknown kind, no such
    column, no pyarrow) is a bad argument; errors of the writes stay what they are."""
    try:
        yield from read_corpus(
            sources,
            id_field=id_field,
            text_field=text_field,
            metadata_fields=fields,
            batch_size=batch_size,
            limit=limit,
        )
    except (InvalidArgumentError, ImportError) as error:
        raise typer.BadParameter(str(error)) from None


@app.command(cls=_Command)
def query(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Database folder.", exists=True)],
    collection: Annotated[str, typer.Argument(metavar="COLLECTION", help="Collection name.")],
    text: Annotated[str, typer.Argument(metavar="TEXT", help="Text to search for.")],
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 5,
    where: Annotated[
        str | None,
        typer.Option("--where", help='Metadata filter as JSON, e.g. \'{"kind": "class"}\'.'),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the records nearest to TEXT in COLLECTION."""
    condition: Any = None
    if where is not None:
        try:
            condition = json.loads(where)
        except ValueError as error:
            raise typer.BadParameter(f"--where is not valid JSON: {error}") from None
    with latentdb.connect(path) as db:
        found: Collection = db.get_collection(collection)
        result = found.query(texts=text, k=k, where=condition)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        console.print(_answers_table(text, result, 0))


@app.command(cls=_Command)
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
    Console(stderr=True, soft_wrap=True).print(
        f"serving {path} at {scheme}://{host}:{port} {access}"
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
    )


@app.command(cls=_Command)
def analyze(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Database folder.", exists=True)],
    collection: Annotated[str, typer.Argument(metavar="COLLECTION", help="Collection name.")],
    sample: Annotated[int, typer.Option("--sample", help="Rows used as queries.")] = 2000,
    k: Annotated[int, typer.Option("-k", help="Neighbours per query.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Measure COLLECTION's latent space and advise on metric, index and PCA.

    The report gives norms, distance concentration against Gaussian vectors, intrinsic
    dimension, hubness and near-duplicates; each piece of advice cites a measurement."""
    with latentdb.connect(path) as db:
        report = db.get_collection(collection).analyze(sample=sample, k=k)
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        for table in report_tables(report):
            console.print(table)


def report_tables(report: SpaceReport) -> list[Table]:
    """The space report as rich tables: the measurements, PCA trials, advice."""
    norms = report.norms
    facts = Table(
        title=f"{report.collection}: {report.count:,} x {report.dimension} "
        f"({report.model}, {report.metric}); {report.sample:,} sampled queries, "
        f"k={report.k}, {report.seconds:.1f} s",
        title_justify="left",
    )
    facts.add_column("measure")
    facts.add_column("this collection", justify="right")
    facts.add_column("Gaussian, same shape", justify="right")
    facts.add_column("note")
    facts.add_row(
        "norms",
        f"{norms.mean:.4g} ± {norms.std:.2g}",
        "",
        f"min {norms.min:.4g}, max {norms.max:.4g}; "
        + ("unit length" if norms.unit_length else "not unit length"),
    )
    facts.add_row(
        "relative contrast",
        f"{report.relative_contrast:.3f}",
        f"{report.gaussian_relative_contrast:.3f}",
        "mean farthest / mean nearest distance (1 = all points equidistant)",
    )
    facts.add_row(
        "intrinsic dimension",
        f"{report.intrinsic_dimension:.1f}",
        "",
        f"{report.intrinsic_dimension_estimator}; Levina-Bickel MLE "
        f"{report.levina_bickel_dimension:.1f}",
    )
    facts.add_row(
        "hubness (k-occurrence skew)",
        f"{report.hubness_skewness:.2f}",
        f"{report.gaussian_hubness_skewness:.2f}",
        f"{report.centered_hubness_skewness:.2f} after centering; top hubs: "
        + ", ".join(f"{hub.id} ({hub.share:.1%})" for hub in report.top_hubs[:3]),
    )
    about = "~" if report.near_duplicates_estimated else ""
    facts.add_row(
        "near-duplicate pairs",
        f"{about}{report.near_duplicate_pairs:,}",
        "",
        report.near_duplicate_rule
        + ("; estimated from the sample" if report.near_duplicates_estimated else ""),
    )
    index = report.index
    if index is not None and index.kind == "flat":
        # One scan, which evaluate() times twice (as the index and as exact): one figure.
        facts.add_row(
            "index",
            "exact",
            "",
            f"flat scan of every row (index={index.spec!r}); "
            f"{index.exact_qps:,.0f} q/s one at a time",
        )
    elif index is not None:
        params = "".join(f" {name}={value}" for name, value in index.params.items())
        facts.add_row(
            "index",
            f"recall {index.recall:.3f}",
            "",
            f"{index.kind}{params} (target {index.recall_target:.2f}, {index.source}); "
            f"{index.qps:,.0f} q/s, exact scan {index.exact_qps:,.0f} q/s",
        )
    trials = Table(title="PCA to fewer dimensions (exact search)", title_justify="left")
    for column in ("dimensions", "variance kept", f"recall@{report.k}", "re-ranked", "saves"):
        trials.add_column(column, justify="right")
    for trial in report.reductions:
        trials.add_row(
            str(trial.dimension),
            f"{trial.variance_kept:.1%}",
            f"{trial.recall:.3f}",
            f"{trial.recall_reranked:.3f} ({trial.rerank * report.k} candidates)",
            f"{trial.memory_saved / 2**20:,.1f} MiB",
        )
    advice = Table(title="advice", title_justify="left", show_header=False)
    advice.add_column("topic", style="bold")
    advice.add_column("text")
    for item in report.advice:
        advice.add_row(item.topic, item.text)
    return [facts, trials, advice]


@app.command("map", cls=_Command)
def map_command(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Database folder.", exists=True)],
    collection: Annotated[str, typer.Argument(metavar="COLLECTION", help="Collection name.")],
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="File to write: *.html (or *.htm), or *.png for an image."
        ),
    ] = Path("map.html"),
    method: Annotated[str, typer.Option("--method", help="pca, umap or tsne.")] = "pca",
    sample: Annotated[int, typer.Option("--sample", help="Records to place.")] = 5000,
    color_by: Annotated[
        str | None, typer.Option("--color-by", help="Metadata field that colours the points.")
    ] = None,
    where: Annotated[str | None, typer.Option("--where", help="Metadata filter as JSON.")] = None,
) -> None:
    """Draw a 2-D map of COLLECTION as an HTML page or a PNG image.

    The HTML page is interactive and self-contained (hover a point for its id, document
    and metadata); OUTPUT ending in .png gives an image."""
    from latentdb.analysis import check_map_path, write_map

    check_map_path(output)  # before the map is computed
    condition: Any = None
    if where is not None:
        try:
            condition = json.loads(where)
        except ValueError as error:
            raise typer.BadParameter(f"--where is not valid JSON: {error}") from None
    with latentdb.connect(path) as db:
        space_map = db.get_collection(collection).map(method=method, sample=sample, where=condition)
    written = write_map(space_map, output, color_by=color_by)
    console.print(f"{written}: {len(space_map.ids):,} of {space_map.total:,} records ({method})")


def main() -> None:
    """Entry point of the ``latentdb`` console script."""
    try:
        app()
    except LatentDBError as error:
        console.print(f"[red]error:[/] {error}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
