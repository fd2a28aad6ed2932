"""A bar of named steps on stderr for long analyses, drawn only on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Steps", "steps_bar"]


class Steps:
    """Reports the start of each step of a known number of steps."""

    def __init__(self, advance: Callable[[str], None] | None = None) -> None:
        self._advance = advance

    @classmethod
    def silent(cls) -> Steps:
        """Steps that report nowhere."""
        return cls(None)

    def advance(self, description: str) -> None:
        """The step named ``description`` starts (the one before it is done)."""
        if self._advance is not None:
            self._advance(description)


@contextmanager
def steps_bar(label: str, total: int) -> Iterator[Steps]:
    """Steps drawn as a transient rich bar on stderr when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield Steps.silent()
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"{label}: {{task.description}}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=total)
        started = False

        def advance(description: str) -> None:
            nonlocal started
            bar.update(task, description=description, advance=1 if started else 0)
            started = True

        yield Steps(advance)
