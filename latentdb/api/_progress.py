"""A progress bar for long embedding runs, when nobody asked to be told otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["LONG_INPUT", "progress_bar"]

# Inputs at least this long show a bar (about 7 s of MiniLM on 2 cores).
LONG_INPUT = 1000

Progress = Callable[[int], None]


@contextmanager
def progress_bar(label: str, total: int, progress: Progress | None) -> Iterator[Progress | None]:
    """The callback to hand an embedder: the caller's own, else, for a long input on
    a terminal, one that draws a bar on stderr (gone once done), else None."""
    if progress is not None or total < LONG_INPUT or not sys.stderr.isatty():
        yield progress
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        f"[progress.description]{label}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)
