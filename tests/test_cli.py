"""The latentdb command, run in-process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

import latentdb
from latentdb import demo as demo_corpus
from latentdb.cli import app

from .conftest import HashingEmbedder

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

runner = CliRunner()
README = Path(__file__).resolve().parents[1] / "README.md"
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    with latentdb.connect(tmp_path / "db") as db:
        collection = db.create_collection("vectors", dimension=3, embedder=None, model=MODEL)
        collection.add(["a", "b"], vectors=np.eye(3)[:2], model=MODEL)
    return tmp_path / "db"


def test_every_command_has_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert set(COMMANDS) >= {
        "demo", "collections", "query", "alias", "migrate", "ingest", "serve", "analyze", "map"
    }  # fmt: skip
    for command in COMMANDS:
        assert command in result.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0 and len(sub.output) > 100


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_flags_without_a_value_type(command: str | None) -> None:
    """typer 0.29 printed `--help <bool>`, `--json <bool>` (issue 16): a flag takes no
    value, so its help names none; options that take one still show its type."""
    result = runner.invoke(
        app, ["--help"] if command is None else [command, "--help"], env={"COLUMNS": "100"}
    )
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert re.search(r"--help +Show this message and exit", result.output), result.output
    if command == "query":
        assert re.search(r"--json +Print JSON", result.output)
        assert re.search(r"--where +<str> +Metadata filter", result.output)
        assert "{PATH} {COLLECTION} {TEXT}" in result.output  # as the help text names them


def test_command_list_gives_each_command_one_line() -> None:
    """Docstrings spanning lines showed their line breaks in the command list."""
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    listed = [line for line in result.output.splitlines() if re.match(r"│ [a-z]+ {2,}\S", line)]
    assert sorted(line.split()[1] for line in listed) == COMMANDS, result.output


def test_readme_lists_every_command() -> None:
    block = README.read_text(encoding="utf-8").split("The command line:", 1)[1]
    block = block.split("```bash", 1)[1].split("```", 1)[0]
    listed = sorted({line.split()[1] for line in block.splitlines() if line.strip()})
    assert listed == COMMANDS


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and latentdb.__version__ in result.output


def test_collections_lists_spaces(folder: Path) -> None:
    result = runner.invoke(app, ["collections", str(folder)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "vectors" in result.output and "cosine" in result.output and "2" in result.output
    assert "┃ name" in result.output  # a table when it fits


def test_collections_never_cuts_a_model_name_at_80_columns(tmp_path: Path) -> None:
    """At 80 columns (a pipe, CI) the table cut "sentence-transformers/all-MiniLM-L6-v2"
    with an ellipsis (issue 16); now a collection takes a few uncut lines."""
    model = "sentence-transformers/all-MiniLM-L6-v2"
    with latentdb.connect(tmp_path / "db") as db:
        db.create_collection("pypi-minilm-vectors", dimension=4, embedder=None, model=model)
        db.create_collection("openai", dimension=8, embedder=None, model="openai/te-3-small")
        db.create_alias("live", "openai")
    result = runner.invoke(app, ["collections", str(tmp_path / "db")], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    lines = result.output.splitlines()
    assert f"  model     {model}" in lines
    assert "pypi-minilm-vectors  0 records" in lines and "  space     4-d cosine" in lines
    assert "  model     openai/te-3-small" in lines and "aliases: live -> openai" in lines
    assert all(len(line) <= 80 for line in lines)


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


def test_demo_prints_what_it_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashing_embedder: HashingEmbedder
) -> None:
    """The demo says how long each step took here, rather than promising a number
    (issue 16); the hashing embedder stands in for MiniLM to keep this fast."""
    small = demo_corpus.stdlib_docstrings()[:40]
    monkeypatch.setattr(demo_corpus, "stdlib_docstrings", lambda: small)
    path = tmp_path / "demo"
    with latentdb.connect(path) as db:
        db.create_collection("stdlib", embedder="test-hashing")
    first = runner.invoke(app, ["demo", "--path", str(path), "-k", "1"], env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    out, seconds, ms = first.output, r"(\d+ ms|\d+\.\d s)", r"\d+ ms"
    assert re.search(rf"Read 40 docstrings of the Python standard library in {seconds}\.", out)
    assert re.search(rf"Loaded test/hashing-16 in {seconds}\.", out)
    assert re.search(rf"Embedded and stored 40 docstrings in {seconds} \([\d,]+ texts/s\)", out)
    questions = demo_corpus.DEMO_QUESTIONS
    assert len(re.findall(rf"\(answered in {ms}\)", out)) == len(questions)
    assert re.search(
        rf"Measured on this machine \(\d+ CPUs\): model load {seconds}; embedding 40 texts "
        rf"{seconds}; each question \d+(-\d+)? ms, its embedding included; {seconds} in all\.",
        out,
    ), out
    assert hashing_embedder.calls == 2 + len(questions)  # a first text, the corpus, each question
    second = runner.invoke(app, ["demo", "gzip", "--path", str(path)], env={"COLUMNS": "200"})
    assert second.exit_code == 0, second.output
    assert "Using the collection built earlier" in second.output
    assert "Embedded" not in second.output and "embedding 40 texts" not in second.output
    assert re.search(rf"model load {seconds}; each question {ms}, its", second.output)


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
        db.create_collection("other", dimension=3, embedder=None, model=MODEL)
    for target in ("vectors", "other"):
        result = runner.invoke(app, ["alias", str(folder), "live", target])
        assert result.exit_code == 0, result.output
        with latentdb.connect(folder) as db:
            assert db.list_aliases() == {"live": target}
    assert "live -> other" in runner.invoke(app, ["collections", str(folder)]).output
    assert runner.invoke(app, ["alias", str(folder), "live", "--delete"]).exit_code == 0
    with latentdb.connect(folder) as db:
        assert db.list_aliases() == {}


def test_migrate_command_previews_the_drift_of_what_it_copied(folder: Path) -> None:
    """A copy re-indexed with --reduce keeps every vector: the preview printed after it
    finds the same top-10 for every record; --no-preview prints none, and a copy of too
    few records says why it has none."""
    vectors = np.random.default_rng(0).standard_normal((60, 16)).astype(np.float32)
    with latentdb.connect(folder) as db:
        db.create_collection("notes", dimension=16, embedder=None, model=MODEL).add(
            [f"n{i}" for i in range(60)], vectors=vectors, model=MODEL
        )
        db.create_collection("few", dimension=16, embedder=None, model=MODEL).add(
            ["a", "b"], vectors=vectors[:2], model=MODEL
        )
    result = runner.invoke(app, ["migrate", str(folder), "notes", "--reduce", "8"])
    assert result.exit_code == 0, result.output
    assert "notes -> notes-v2 (60 records copied)" in result.output
    assert "notes-v1 -> notes-v2: queries will see about 100% of the same top-10" in " ".join(
        result.output.split()
    )
    quiet = runner.invoke(app, ["migrate", str(folder), "notes", "--reduce", "4", "--no-preview"])
    assert quiet.exit_code == 0, quiet.output
    assert "notes -> notes-v3" in quiet.output and "same top-10" not in quiet.output
    few = runner.invoke(app, ["migrate", str(folder), "few", "--reduce", "8"])
    assert few.exit_code == 0, few.output
    assert "no drift preview: it needs more than 10 records, 2 were copied" in few.output


@pytest.mark.slow
def test_migrate_command_re_embeds_with_the_default_model(folder: Path) -> None:
    with latentdb.connect(folder) as db:
        db.create_collection("notes", dimension=3, embedder=None, model=MODEL).add(
            ["cat", "json"],
            vectors=np.eye(3)[:2],
            documents=["A cat sleeps on the sofa.", "Parse a JSON file in Python."],
            model=MODEL,
        )
    result = runner.invoke(app, ["migrate", str(folder), "notes", "--embedder", "minilm"])
    assert result.exit_code == 0, result.output
    assert "notes -> notes-v2" in result.output and "notes-v1" in result.output
    with latentdb.connect(folder) as db:
        notes = db.get_collection("notes")
        assert notes.space.dimension == 384
        assert notes.query(texts="kitten", k=1).ids == [["cat"]]
