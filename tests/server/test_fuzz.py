"""The server fuzzed with schemathesis from its own OpenAPI document (issue 15): no
server error, no status the document does not list, no reply unlike its schema, no
broken connection. A bounded run; ``bench/fuzz_server.py`` runs thousands of cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import latentdb
from latentdb import Collection
from latentdb.engine import EmbeddedCollection
from tests.server.conftest import DOCS_READER, KEYS, WRITER, serving
from tests.server.fuzzing import KNOWN_COLLECTION, KNOWN_MODEL, SPARED, FuzzReport, fuzz

DIM = 4
# UMAP and t-SNE maps take 20 s on first use (numba compiles): too slow for the suite;
# bench/fuzz_server.py maps the known collection too.
QUICK = SPARED | {("POST", "/v1/collections/{name}/map")}


def _seed(url: str, api_key: str | None = None) -> None:
    with latentdb.connect(url, api_key=api_key) as db:
        # require_model=False: the fuzzer's writes (model= null or a random name)
        # still reach the vector checks behind the model rule; the collections it
        # creates itself require model=.
        collection = db.create_collection(
            KNOWN_COLLECTION,
            dimension=DIM,
            embedder=None,
            model=KNOWN_MODEL,
            require_model=False,
        )
        collection.add(
            ["a", "b", "c"],
            vectors=np.eye(DIM)[:3],
            documents=["one", "two", "three"],
            metadatas=[{"n": 1}, {"n": 2}, {"n": 3}],
            model=KNOWN_MODEL,
        )


def _clean(report: FuzzReport, at_least: int) -> None:
    assert report.cases >= at_least, report
    assert report.problems() == [], "\n".join(report.problems())


@pytest.mark.slow
def test_fuzzing_a_server_without_keys(tmp_path: Path) -> None:
    with serving(tmp_path / "db") as server:
        _seed(server.url)
        report = fuzz(server.url, cases=400, seconds=30, seed=1, spared=QUICK)
    _clean(report, at_least=250)
    assert report.statuses[200] > 0 and report.statuses[404] > 0  # past the routing


@pytest.mark.slow
def test_fuzzing_a_server_with_keys(tmp_path: Path) -> None:
    with serving(tmp_path / "db", keys=KEYS) as server:
        _seed(server.url, WRITER)
        written = fuzz(
            server.url, headers={"X-API-Key": WRITER}, cases=250, seconds=20, seed=2, spared=QUICK
        )
        scoped = fuzz(server.url, headers={"X-API-Key": DOCS_READER}, cases=100, seconds=8, seed=3)
        keyless = fuzz(server.url, cases=100, seconds=8, seed=4)
    _clean(written, at_least=150)
    _clean(scoped, at_least=60)
    _clean(keyless, at_least=60)
    assert scoped.statuses[403] > 0
    assert set(keyless.statuses) == {200, 401}  # /healthz, and 401 before anything else


def test_the_fuzzer_sees_a_server_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Collection) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(EmbeddedCollection, "_count", broken)  # the engine behind the server
    with serving(tmp_path / "db") as server:
        _seed(server.url)
        report = fuzz(server.url, cases=60, seconds=10, seed=5, spared=QUICK)
    assert report.server_errors  # /metrics counts rows, and so does .../count
    assert all(": 500 " in line and "internal_error" in line for line in report.server_errors)
    assert report.broken == [] and report.undocumented == [] and report.nonconforming == []
