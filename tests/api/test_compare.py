"""Database.compare and Migration.preview on every transport: the same figures as the
computation on the same vectors, refusals by name that change nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from latentdb import (
    CollectionNotFoundError,
    Database,
    InvalidArgumentError,
    SpaceComparison,
)
from latentdb.analysis import ComparedSpace, compare_spaces, shared_positions
from latentdb.engine import _migration

pytestmark = pytest.mark.transports

ROWS = 300
DIM = 16


def vectors(rows: int = ROWS, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)


def two_spaces(
    db: Database, other: np.ndarray, *, ids_b: list[str] | None = None, metric: str = "l2"
) -> None:
    """Collection "a" (cosine, 16-d, with documents) and "b" (``metric``, other's width,
    no documents), holding ids r0000.. (b: ``ids_b``)."""
    ids = [f"r{i:04d}" for i in range(ROWS)]
    a = db.create_collection("a", dimension=DIM, embedder=None, model="test/a")
    a.add(ids, vectors=vectors(), documents=[f"document {i}" for i in ids], model="test/a")
    b = db.create_collection(
        "b", dimension=other.shape[1], embedder=None, model="test/b", metric=metric
    )
    b.add(ids_b or ids, vectors=other, model="test/b")


def computed(db: Database, sample: int, k: int) -> SpaceComparison:
    """compare_spaces on the vectors the collections hold, read back with get()."""
    sides = []
    got = [db.get_collection(name).get(include=["vectors"]) for name in ("a", "b")]
    shared, in_a, in_b = shared_positions(got[0].ids, got[1].ids)
    for name, result, positions in zip("ab", got, (in_a, in_b), strict=True):
        collection = db.get_collection(name)
        rows = np.stack(result.vectors)[positions]  # type: ignore[arg-type]
        sides.append(
            ComparedSpace(
                collection=name,
                model=collection.space.model,
                metric=collection.space.metric,
                count=len(result.ids),
                rows=rows,
            )
        )
    return compare_spaces(sides[0], sides[1], ids=shared, sample=sample, k=k)


def test_compare_gives_the_figures_of_the_computation(db: Database) -> None:
    other = vectors()[:, :10] + 0.2 * vectors(dim=10, seed=5)
    two_spaces(db, other)
    result = db.compare("a", "b", sample=120, k=5)
    expected = computed(db, 120, k=5)
    mine, theirs = result.to_dict(), expected.to_dict()
    for record in mine.pop("changed") + theirs.pop("changed"):
        assert record["document"] in (None, f"document {record['id']}")
    mine.pop("seconds"), theirs.pop("seconds")
    assert mine == theirs
    assert (result.a, result.b, result.shared, result.sample) == ("a", "b", ROWS, 120)
    assert (result.dimension_a, result.dimension_b) == (DIM, 10)
    assert (result.metric_a, result.metric_b) == ("cosine", "l2")
    assert 0 < result.overlap < 1 and result.verdict.startswith("queries will see about")
    # Documents come from a (b has none), for each record listed.
    assert [c.document for c in result.changed] == [f"document {c.id}" for c in result.changed]


def test_a_rotated_copy_keeps_every_neighbourhood(db: Database) -> None:
    rotation, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((DIM, DIM)))
    two_spaces(db, (vectors() @ rotation).astype(np.float32), metric="cosine")
    result = db.compare("a", "b")
    assert result.overlap == 1.0 and result.sample == ROWS
    assert result.cka == pytest.approx(1.0, abs=1e-5)
    assert result.procrustes_residual == pytest.approx(0.0, abs=1e-5)
    assert "about 100% of the same top-10" in result.verdict


def test_only_the_shared_records_count_and_aliases_are_followed(db: Database) -> None:
    ids_b = [f"r{i:04d}" for i in range(100, ROWS)] + [f"other{i}" for i in range(50)]
    two_spaces(db, vectors(250, seed=8), ids_b=ids_b)
    db.create_alias("live", "b")
    result = db.compare("a", "live", sample=50, k=3)
    assert (result.b, result.count_a, result.count_b, result.shared) == ("b", ROWS, 250, 200)
    assert all(c.id >= "r0100" for c in result.changed)
    assert all(n.startswith("r") for c in result.changed for n in c.neighbours_b)


def test_bad_comparisons_are_refused_by_name_and_change_nothing(db: Database) -> None:
    two_spaces(db, vectors(seed=4), ids_b=[f"x{i}" for i in range(ROWS)])
    db.create_collection("small", dimension=DIM, embedder=None, model="test/a").add(
        ["r0000", "r0001"], vectors=vectors(2), model="test/a"
    )
    before = (db.list_collections(), [db.get_collection(n).count() for n in ("a", "b")])
    with pytest.raises(CollectionNotFoundError, match="nope"):
        db.compare("a", "nope")
    with pytest.raises(CollectionNotFoundError, match="nope"):
        db.compare("nope", "b")
    with pytest.raises(InvalidArgumentError, match="share no ids"):
        db.compare("a", "b")
    with pytest.raises(InvalidArgumentError, match=r"more than k = 10 .* share 2"):
        db.compare("a", "small")
    for arguments in ({"sample": 0}, {"k": 0}, {"k": True}, {"sample": "many"}):
        with pytest.raises(InvalidArgumentError, match=r"sample|k"):
            db.compare("a", "a", **arguments)
    with pytest.raises(InvalidArgumentError, match="b must"):
        db.compare("a", 3)  # type: ignore[arg-type]
    assert (db.list_collections(), [db.get_collection(n).count() for n in ("a", "b")]) == before


def source(db: Database) -> None:
    collection = db.create_collection("docs", dimension=8, embedder=None, model="old/model")
    collection.add(
        [f"id{i}" for i in range(ROWS)],
        vectors=vectors(dim=8, seed=1),
        documents=[f"topic{i % 20} word{i % 7} item{i}" for i in range(ROWS)],
        model="old/model",
    )


@pytest.mark.unsharded  # a sharded database does not migrate
def test_migration_preview_compares_the_source_with_the_copy(
    db: Database, hashing_embedder: Any
) -> None:
    source(db)
    migration = db.migrate("docs", embedder="test-hashing", background=False)
    preview = migration.preview(sample=100, k=5)
    assert (preview.a, preview.b) == ("docs-v1", "docs-v2")
    assert (preview.shared, preview.dimension_a, preview.dimension_b) == (ROWS, 8, 16)
    assert preview.model_b == hashing_embedder.model
    assert preview.changed[0].document is not None
    status = migration.status(preview=True)
    assert status.state == "done" and status.preview is not None
    assert status.preview.overlap == migration.preview().overlap
    assert migration.status().preview is None  # only when asked: it reads every vector
    with pytest.raises(InvalidArgumentError, match="k must"):
        migration.preview(k=0)
    with pytest.raises(InvalidArgumentError, match="preview must"):
        migration.status(preview=1)  # type: ignore[arg-type]


@pytest.mark.embedded_only  # stops a run part way through its progress callback
def test_a_preview_covers_the_records_copied_so_far(
    db: Database, hashing_embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source(db)
    monkeypatch.setattr(_migration, "BATCH", 64)

    def stop_after_two_batches(copied: int, total: int) -> None:
        if copied >= 128:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        db.migrate(
            "docs", embedder="test-hashing", background=False, progress=stop_after_two_batches
        )
    (migration,) = db.list_migrations()
    status = migration.status(preview=True)
    assert status.state == "running" and status.copied == 128
    assert status.preview is not None
    assert (status.preview.a, status.preview.b) == ("docs", "docs-v2")
    assert (status.preview.shared, status.preview.count_a) == (128, ROWS)
    assert status.preview.sample == 128
