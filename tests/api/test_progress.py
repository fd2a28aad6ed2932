"""Long embedding runs show a bar on a terminal, and only there."""

from __future__ import annotations

import io
from typing import Any

import pytest

from latentdb import Database
from latentdb.api._progress import LONG_INPUT


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def texts(count: int) -> list[str]:
    return [f"word{i % 50} other{i % 7}" for i in range(count)]


def test_a_long_input_on_a_terminal_draws_a_bar(
    db: Database, hashing_embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    collection = db.create_collection("t", embedder="test-hashing")
    collection.add([str(i) for i in range(LONG_INPUT)], documents=texts(LONG_INPUT))
    assert "embedding texts" in screen.getvalue()
    assert f"{LONG_INPUT}/{LONG_INPUT}" in screen.getvalue()


def test_no_bar_off_a_terminal_for_short_inputs_or_with_a_callback(
    db: Database, hashing_embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = db.create_collection("t", embedder="test-hashing")
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    collection.add(["short"], documents=["a few words"])
    done: list[int] = []
    collection.add(
        [f"a{i}" for i in range(LONG_INPUT)], documents=texts(LONG_INPUT), progress=done.append
    )
    assert screen.getvalue() == "" and done[-1] == LONG_INPUT
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    collection.add([f"b{i}" for i in range(LONG_INPUT)], documents=texts(LONG_INPUT))
    assert pipe.getvalue() == ""
