"""The ``latentdb`` typer application, its console and what its commands share."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from latentdb._version import __version__
from latentdb.api import QueryResult
from latentdb.errors import LatentDBError

__all__ = [
    "CollectionName",
    "Command",
    "DatabasePath",
    "answers_table",
    "app",
    "console",
    "main",
    "parse_where",
    "progress_bar",
    "took",
]


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


class Command(typer.core.TyperCommand):
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

# The arguments most commands take first.
DatabasePath = Annotated[Path, typer.Argument(metavar="PATH", help="Database folder.", exists=True)]
CollectionName = Annotated[str, typer.Argument(metavar="COLLECTION", help="Collection name.")]


def _version(value: bool) -> None:
    if value:
        console.print(f"latentdb {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """latentdb: a vector database for Python that indexes a model's latent space."""


def took(seconds: float) -> str:
    """A duration as people read it: "12 ms" under a second, else "38.2 s"."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def progress_bar() -> Progress:
    """A bar of records (or steps) done, their count and the time taken."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def answers_table(title: str, result: QueryResult, position: int) -> Table:
    """The answers to query ``position`` of ``result``: distance, id, document."""
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


def parse_where(where: str | None) -> Any:
    """A ``--where`` option's JSON as a filter (None when the option is not given).

    Raises:
        typer.BadParameter: not valid JSON.
    """
    if where is None:
        return None
    try:
        return json.loads(where)
    except ValueError as error:
        raise typer.BadParameter(f"--where is not valid JSON: {error}") from None


def main() -> None:
    """Entry point of the ``latentdb`` console script."""
    try:
        app()
    except LatentDBError as error:
        console.print(f"[red]error:[/] {error}")
        raise SystemExit(2) from None
