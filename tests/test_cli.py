"""The latentdb command, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import latentdb
from latentdb import demo as demo_corpus
from latentdb.cli import app

runner = CliRunner()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    with latentdb.connect(tmp_path / "db") as db:
        collection = db.create_collection("vectors", dimension=3, embedder=None, model="m")
        collection.add(["a", "b"], vectors=np.eye(3)[:2])
    return tmp_path / "db"


def test_every_command_has_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "collections", "query", "alias", "migrate", "serve", "analyze", "map"):
        assert command in result.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0 and len(sub.output) > 100


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and latentdb.__version__ in result.output


def test_collections_lists_spaces(folder: Path) -> None:
    result = runner.invoke(app, ["collections", str(folder)])
    assert result.exit_code == 0, result.output
    assert "vectors" in result.output and "cosine" in result.output and "2" in result.output


def test_query_on_a_collection_without_embedder_fails_clearly(folder: Path) -> None:
    result = runner.invoke(app, ["query", str(folder), "vectors", "hello"])
    assert result.exit_code != 0
    assert isinstance(result.exception, latentdb.EmbedderError)


def test_stdlib_corpus_is_real_and_stable() -> None:
    records = demo_corpus.stdlib_docstrings()
    assert len(records) > 2000
    by_id = {r.id: r for r in records}
    assert "json.dumps" in by_id and by_id["json.dumps"].metadata == {
        "module": "json",
        "kind": "function",
    }
    assert by_id["json.dumps"].document.startswith("json.dumps: Serialize")
    assert len(by_id) == len(records)
    assert not any(r.id.startswith(("test.", "idlelib")) for r in records)


@pytest.mark.slow
def test_demo_builds_once_then_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    everything = demo_corpus.stdlib_docstrings()
    wanted = {"gzip.compress", "csv", "argparse.ArgumentParser", "json.dumps"}
    small = [r for r in everything if r.id in wanted] + [
        r for r in everything[:60] if r.id not in wanted
    ]
    monkeypatch.setattr(demo_corpus, "stdlib_docstrings", lambda: small)
    path = tmp_path / "demo"
    first = runner.invoke(app, ["demo", "--path", str(path), "-k", "1"])
    assert first.exit_code == 0, first.output
    assert f"Embedding {len(small)} docstrings" in first.output
    assert "gzip.compress" in first.output  # the answer to "compress data with gzip"
    second = runner.invoke(app, ["demo", "how do I compress bytes with gzip", "--path", str(path)])
    assert second.exit_code == 0, second.output
    assert "Using the collection built earlier" in second.output
    assert "gzip.compress" in second.output
    as_json = runner.invoke(
        app, ["query", str(path), "stdlib", "read and write CSV files", "-k", "1", "--json"]
    )
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["ids"] == [["csv"]]


def test_alias_command_creates_switches_and_deletes(folder: Path) -> None:
    with latentdb.connect(folder) as db:
        db.create_collection("other", dimension=3, embedder=None, model="m")
    for target in ("vectors", "other"):
        result = runner.invoke(app, ["alias", str(folder), "live", target])
        assert result.exit_code == 0, result.output
        with latentdb.connect(folder) as db:
            assert db.list_aliases() == {"live": target}
    assert "live -> other" in runner.invoke(app, ["collections", str(folder)]).output
    assert runner.invoke(app, ["alias", str(folder), "live", "--delete"]).exit_code == 0
    with latentdb.connect(folder) as db:
        assert db.list_aliases() == {}


@pytest.mark.slow
def test_migrate_command_re_embeds_with_the_default_model(folder: Path) -> None:
    with latentdb.connect(folder) as db:
        db.create_collection("notes", dimension=3, embedder=None, model="m").add(
            ["cat", "json"],
            vectors=np.eye(3)[:2],
            documents=["A cat sleeps on the sofa.", "Parse a JSON file in Python."],
        )
    result = runner.invoke(app, ["migrate", str(folder), "notes", "--embedder", "minilm"])
    assert result.exit_code == 0, result.output
    assert "notes -> notes-v2" in result.output and "notes-v1" in result.output
    with latentdb.connect(folder) as db:
        notes = db.get_collection("notes")
        assert notes.space.dimension == 384
        assert notes.query(texts="kitten", k=1).ids == [["cat"]]
