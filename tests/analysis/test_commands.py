"""latentdb analyze and latentdb map, run in-process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import latentdb
from latentdb.cli import app

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

runner = CliRunner(env={"COLUMNS": "200"})  # rich wraps table cells at 80


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    with latentdb.connect(tmp_path / "db") as db:
        collection = db.create_collection("v", dimension=16, embedder=None, model=MODEL)
        collection.add(
            [f"r{i}" for i in range(200)],
            vectors=rng.standard_normal((200, 16)),
            documents=[f"text {i}" for i in range(200)],
            metadatas=[{"kind": "odd" if i % 2 else "even"} for i in range(200)],
            model=MODEL,
        )
    return tmp_path / "db"


def test_analyze_prints_the_report(folder: Path) -> None:
    result = runner.invoke(app, ["analyze", str(folder), "v", "--sample", "100"])
    assert result.exit_code == 0, result.output
    for words in ("relative contrast", "intrinsic dimension", "TwoNN", "hubness", "advice"):
        assert words in result.output
    assert "unit length" in result.output


def test_analyze_of_an_exact_collection_shows_one_scan_speed_and_no_reduce(
    folder: Path,
) -> None:
    """200 rows under index="auto" are scanned exactly: the index row printed
    "flat 125 q/s, exact 176 q/s" for that one scan, and the advice offered reduce=,
    which only shrinks an ANN index (issue 16)."""
    result = runner.invoke(app, ["analyze", str(folder), "v", "--sample", "100"])
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if "flat scan of every row" in line]
    assert re.match(
        r"│ index +│ +exact │ +│ flat scan of every row \(index='auto'\); [\d,]+ q/s", row
    )
    assert result.output.count("q/s") == 1, result.output
    assert "no reduce= for now: the 200 rows are searched exactly" in result.output
    assert "create_collection(..., reduce=" not in result.output


def test_analyze_json(folder: Path) -> None:
    result = runner.invoke(app, ["analyze", str(folder), "v", "--json", "-k", "5"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["count"] == 200 and report["k"] == 5 and report["norms"]["unit_length"]


def test_map_writes_html_and_png(folder: Path, tmp_path: Path) -> None:
    html = tmp_path / "map.html"
    result = runner.invoke(app, ["map", str(folder), "v", "-o", str(html), "--color-by", "kind"])
    assert result.exit_code == 0, result.output
    assert "200 of 200 records" in result.output and "odd" in html.read_text()
    png = tmp_path / "map.png"
    result = runner.invoke(app, ["map", str(folder), "v", "-o", str(png), "--sample", "50"])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(
        app, ["map", str(folder), "v", "-o", str(html), "--where", '{"kind": "odd"}']
    )
    assert result.exit_code == 0 and "100 of 100 records" in result.output


def test_map_names_a_missing_colour_field(folder: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["map", str(folder), "v", "-o", str(tmp_path / "m.html"), "--color-by", "nope"]
    )
    assert result.exit_code != 0
    assert "no mapped record has metadata field 'nope'" in str(result.exception)


def test_map_refuses_a_file_it_cannot_write(folder: Path, tmp_path: Path) -> None:
    """`-o x.svg` wrote HTML into x.svg (issue 16): now refused before any work."""
    target = tmp_path / "x.svg"
    result = runner.invoke(app, ["map", str(folder), "v", "-o", str(target)])
    assert result.exit_code != 0
    assert "'x.svg' is neither" in str(result.exception)
    assert not target.exists()


def test_compare_prints_the_verdict_and_json(folder: Path) -> None:
    rng = np.random.default_rng(1)
    with latentdb.connect(folder) as db:
        vectors = np.asarray(db.get_collection("v").get(include=["vectors"]).vectors)
        noisy = db.create_collection("w", dimension=16, embedder=None, model=MODEL)
        noisy.add(
            [f"r{i}" for i in range(200)],
            vectors=vectors + 0.3 * rng.standard_normal((200, 16)),
            model=MODEL,
        )
    result = runner.invoke(app, ["compare", str(folder), "v", "w", "--sample", "50"])
    assert result.exit_code == 0, result.output
    assert "v -> w: queries will see about" in result.output
    assert "overlap@10" in result.output and "linear CKA" in result.output
    assert "text " in result.output  # the documents of the records that change most
    result = runner.invoke(app, ["compare", str(folder), "v", "w", "--json", "-k", "5"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["shared"], data["sample"], data["k"]) == (200, 200, 5)
    result = runner.invoke(app, ["compare", str(folder), "v", "nope"])
    assert isinstance(result.exception, latentdb.CollectionNotFoundError)
    assert "'nope'" in str(result.exception)
