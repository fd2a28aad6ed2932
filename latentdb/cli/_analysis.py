"""The commands that measure a collection's latent space, draw it, and compare two."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from latentdb._connect import connect
from latentdb.analysis import SpaceComparison, SpaceReport
from latentdb.cli._app import CollectionName, Command, DatabasePath, app, console, parse_where

__all__ = ["analyze", "compare", "comparison_tables", "map_command", "report_tables"]


@app.command(cls=Command)
def analyze(
    path: DatabasePath,
    collection: CollectionName,
    sample: Annotated[int, typer.Option("--sample", help="Rows used as queries.")] = 2000,
    k: Annotated[int, typer.Option("-k", help="Neighbours per query.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Measure COLLECTION's latent space and advise on metric, index and PCA.

    The report gives norms, distance concentration against Gaussian vectors, intrinsic
    dimension, hubness and near-duplicates; each piece of advice cites a measurement."""
    with connect(path) as db:
        report = db.get_collection(collection).analyze(sample=sample, k=k)
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        for table in report_tables(report):
            console.print(table)


def report_tables(report: SpaceReport) -> list[Table]:
    """The space report as rich tables: the measurements, PCA trials, advice."""
    facts = Table(
        title=f"{report.collection}: {report.count:,} x {report.dimension} "
        f"({report.model}, {report.metric}); k={report.k}, {report.seconds:.1f} s",
        title_justify="left",
    )
    facts.add_column("measure")
    facts.add_column("this collection", justify="right")
    facts.add_column("Gaussian, same shape", justify="right")
    facts.add_column("note")
    for row in report.summary_rows():
        facts.add_row(*row)
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


@app.command("map", cls=Command)
def map_command(
    path: DatabasePath,
    collection: CollectionName,
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
    condition = parse_where(where)
    with connect(path) as db:
        space_map = db.get_collection(collection).map(method=method, sample=sample, where=condition)
    written = write_map(space_map, output, color_by=color_by)
    console.print(f"{written}: {len(space_map.ids):,} of {space_map.total:,} records ({method})")


@app.command(cls=Command)
def compare(
    path: DatabasePath,
    a: Annotated[str, typer.Argument(metavar="A", help="Collection (or alias) compared from.")],
    b: Annotated[str, typer.Argument(metavar="B", help="Collection (or alias) compared to.")],
    sample: Annotated[int, typer.Option("--sample", help="Shared records used as queries.")] = 2000,
    k: Annotated[int, typer.Option("-k", help="Neighbours per query.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """How much the neighbourhoods of the same records change from A to B.

    For the records both hold (by id): overlap of each sampled record's top-k in A and
    in B, rank correlation of distances, CKA, Procrustes residual, and the records
    that change most, e.g. before switching an alias to a re-embedded collection."""
    with connect(path) as db:
        comparison = db.compare(a, b, sample=sample, k=k)
    if as_json:
        print(json.dumps(comparison.to_dict()))
    else:
        for table in comparison_tables(comparison):
            console.print(table)


def comparison_tables(comparison: SpaceComparison) -> list[Table]:
    """A comparison as rich tables: the two spaces, the figures, the records that
    change most."""
    c, k = comparison, comparison.k
    spaces = Table(title=f"{c.a} -> {c.b}: {c.verdict}", title_justify="left")
    spaces.add_column("")
    spaces.add_column(c.a)
    spaces.add_column(c.b)
    spaces.add_row("model", c.model_a, c.model_b)
    spaces.add_row("dimension", str(c.dimension_a), str(c.dimension_b))
    spaces.add_row("metric", c.metric_a, c.metric_b)
    spaces.add_row("records", f"{c.count_a:,}", f"{c.count_b:,}")
    figures = Table(
        title=f"{c.shared:,} shared ids, {c.sample:,} sampled as queries (seed {c.seed}); "
        f"{c.seconds:.1f} s",
        title_justify="left",
    )
    figures.add_column("measure")
    figures.add_column("value", justify="right")
    figures.add_column("note")
    kept = c.overlap_counts[k] / c.sample if c.sample else 0.0
    figures.add_row(
        f"overlap@{k}",
        f"{c.overlap:.3f} ± {c.overlap_error:.3f}",
        f"share of a record's top-{k} in {c.a} still in its top-{k} in {c.b}",
    )
    figures.add_row(f"whole top-{k} kept", f"{kept:.1%}", "sampled records")
    figures.add_row(
        "Spearman, neighbourhood",
        _figure(c.distance_correlation),
        f"distances to the union of its top-{k} in both",
    )
    figures.add_row(
        "Spearman, global",
        _figure(c.global_distance_correlation),
        f"distances to {c.references} fixed random shared records",
    )
    figures.add_row("linear CKA", _figure(c.cka), "1: same up to rotation and scale")
    figures.add_row(
        "Procrustes residual",
        _figure(c.procrustes_residual),
        "0: a rotation maps one onto the other" + (f"; {c.padding}" if c.padding else ""),
    )
    tables = [spaces, figures]
    if c.changed:
        changed = Table(title="records whose neighbourhoods change most", title_justify="left")
        changed.add_column("id")
        changed.add_column(f"overlap@{k}", justify="right")
        changed.add_column("document", overflow="ellipsis", no_wrap=True, max_width=80)
        for record in c.changed:
            changed.add_row(record.id, f"{record.overlap:.2f}", record.document or "")
        tables.append(changed)
    return tables


def _figure(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
