"""API keys: 401 without a valid one, 403 past its scope, keys from every source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

import latentdb
from latentdb import AuthError, ForbiddenError, InvalidArgumentError
from latentdb.cli import app
from latentdb.server import ApiKey, Keyring, ServerThread, check_exposure, is_loopback
from tests.server.conftest import DOCS_READER, DOCS_WRITER, READER, WRITER, serving

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

DIM = 4


@pytest.fixture(scope="module")
def seeded(keyed: ServerThread) -> Iterator[ServerThread]:
    """The keyed server with collections "docs" (alias "docs-live") and "other"."""
    with latentdb.connect(keyed.url, api_key=WRITER) as db:
        for name in ("docs", "other"):
            collection = db.create_collection(name, dimension=DIM, embedder=None, model=MODEL)
            collection.add(["a", "b"], vectors=np.eye(DIM)[:2], model=MODEL)
        db.create_alias("docs-live", "docs")
    yield keyed


def test_no_key_is_401_with_a_json_error(seeded: ServerThread) -> None:
    reply = httpx.get(f"{seeded.url}/v1/collections")
    assert reply.status_code == 401
    body = reply.json()
    assert body["code"] == "unauthorized" and body["status"] == 401
    assert "API key is required" in body["message"]
    with latentdb.connect(seeded.url) as db, pytest.raises(AuthError, match="required"):
        db.list_collections()


def test_an_unknown_key_is_401(seeded: ServerThread) -> None:
    with (
        latentdb.connect(seeded.url, api_key="not-a-known-key-at-all") as db,
        pytest.raises(AuthError, match="not valid") as raised,
    ):
        db.get_collection("docs").count()
    assert type(raised.value) is AuthError
    reply = httpx.get(f"{seeded.url}/v1/collections", headers={"X-API-Key": "wrong-key-12345678"})
    assert reply.status_code == 401


def test_both_headers_carry_a_key(seeded: ServerThread) -> None:
    for headers in ({"Authorization": f"Bearer {READER}"}, {"X-API-Key": READER}):
        reply = httpx.get(f"{seeded.url}/v1/collections", headers=headers)
        assert reply.status_code == 200 and reply.json() == ["docs", "other"]


def test_read_only_key_reads_and_gets_403_on_writes(seeded: ServerThread) -> None:
    with latentdb.connect(seeded.url, api_key=READER) as db:
        docs = db.get_collection("docs")
        assert docs.query(vectors=np.eye(DIM)[0], k=1).ids == [["a"]]
        assert docs.count() == 2 and db.list_aliases() == {"docs-live": "docs"}
        writes = [
            lambda: docs.add(["c"], vectors=np.ones(DIM), model=MODEL),
            lambda: docs.upsert(["a"], vectors=np.ones(DIM), model=MODEL),
            lambda: docs.update(["a"], metadatas=[{"x": 1}]),
            lambda: docs.delete(["a"]),
            lambda: docs.optimize(),
            lambda: docs.set_recall_target(0.9),
            lambda: db.create_collection("new", dimension=DIM, embedder=None, model=MODEL),
            lambda: db.delete_collection("other"),
            lambda: db.create_alias("x", "docs"),
            lambda: db.switch_alias("docs-live", "other"),
            lambda: db.delete_alias("docs-live"),
        ]
        for write in writes:
            with pytest.raises(ForbiddenError, match="read-only") as raised:
                write()
            assert raised.value.status == 403
        assert isinstance(raised.value, AuthError)  # catching AuthError catches both
    with latentdb.connect(seeded.url, api_key=WRITER) as db:
        assert db.get_collection("docs").count() == 2  # nothing was written
        assert db.list_collections() == ["docs", "other"]


def test_collection_scoped_keys(seeded: ServerThread) -> None:
    with latentdb.connect(seeded.url, api_key=DOCS_WRITER) as db:
        assert db.list_collections() == ["docs"]  # only what the key may see
        assert db.list_aliases() == {"docs-live": "docs"}
        db.get_collection("docs-live").upsert(["c"], vectors=np.ones(DIM), model=MODEL)
        with pytest.raises(ForbiddenError, match="may not use collection 'other'"):
            db.get_collection("other")
        with pytest.raises(ForbiddenError, match="'other'"):
            db.switch_alias("docs-live", "other")
        with pytest.raises(ForbiddenError):
            db.delete_collection("other")
    with latentdb.connect(seeded.url, api_key=DOCS_READER) as db:
        assert db.get_collection("docs").count() == 3
        with pytest.raises(ForbiddenError, match="'docs-live'"):  # the alias is not named
            db.get_collection("docs-live")
        with pytest.raises(ForbiddenError, match="read-only"):
            db.get_collection("docs").delete(["c"])
    reply = httpx.get(f"{seeded.url}/metrics", headers={"X-API-Key": DOCS_READER})
    assert 'latentdb_collection_rows{collection="docs"} 3' in reply.text
    assert 'collection="other"' not in reply.text


def test_open_endpoints_and_metrics_needing_a_key(seeded: ServerThread) -> None:
    assert httpx.get(f"{seeded.url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{seeded.url}/openapi.json").status_code == 200
    assert httpx.get(f"{seeded.url}/metrics").status_code == 401


def test_key_syntax_and_sources(tmp_path: Path) -> None:
    key = ApiKey.parse("k" * 16 + ":read:a,b", "test")
    assert key.scope == "read" and key.collections == frozenset({"a", "b"})
    assert ApiKey.parse("k" * 16, "test").scope == "write"
    with pytest.raises(InvalidArgumentError, match="at least 16"):
        ApiKey.parse("short", "test")
    with pytest.raises(InvalidArgumentError, match="scope must be 'read' or 'write'"):
        ApiKey.parse("k" * 16 + ":admin", "test")
    keys_file = tmp_path / "keys"
    keys_file.write_text("# readers\n" + "f" * 20 + ":read  # a comment\n\n")
    ring = Keyring.load(["c" * 20], keys_file=keys_file, environ={"LATENTDB_API_KEYS": "e" * 20})
    assert len(ring) == 3
    assert ring.find("f" * 20).scope == "read"
    assert ring.find("e" * 20).source == "LATENTDB_API_KEYS"
    with pytest.raises(AuthError):
        ring.find("c" * 19)
    with pytest.raises(InvalidArgumentError, match="line 1"):
        keys_file.write_text("bad:scope:x\n")
        Keyring.load(keys_file=keys_file, environ={})
    with pytest.raises(InvalidArgumentError, match="cannot read keys file"):
        Keyring.load(keys_file=tmp_path / "missing", environ={})


def test_no_auth_only_on_loopback(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    no_keys = Keyring([])
    check_exposure("127.0.0.1", no_keys, no_auth=True, max_body=1, max_batch=1)
    with pytest.raises(InvalidArgumentError, match="only on a loopback host"):
        check_exposure("0.0.0.0", no_keys, no_auth=True, max_body=1, max_batch=1)
    with pytest.raises(InvalidArgumentError, match="no API key"):
        check_exposure("127.0.0.1", no_keys, no_auth=False, max_body=1, max_batch=1)
    result = CliRunner().invoke(
        app, ["serve", str(tmp_path / "db"), "--host", "0.0.0.0", "--no-auth"]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, InvalidArgumentError)
    assert "loopback" in str(result.exception)
    assert not (tmp_path / "db").exists()  # refused before anything was opened


MINE = "mine-writer-0123456789abcdef"
MINE_ALL = "mine-all-writer-0123456789abcdef"
OTHER = "other-writer-0123456789abcdef"


@pytest.fixture(scope="module")
def migrating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A keyed server with collection "mine" and keys scoped to it (and its versions)."""
    keys = [
        WRITER,
        f"{READER}:read",
        f"{MINE}:write:mine",
        f"{MINE_ALL}:write:mine,mine-v1,mine-v2",
        f"{OTHER}:write:other",
    ]
    with serving(tmp_path_factory.mktemp("migrating") / "db", keys=keys) as server:
        with latentdb.connect(server.url, api_key=WRITER) as db:
            collection = db.create_collection("mine", dimension=DIM, embedder=None, model=MODEL)
            collection.add(
                ["a", "b", "c"], vectors=np.random.default_rng(0).random((3, DIM)), model=MODEL
            )
        yield server


def test_a_migration_needs_every_name_it_creates_or_renames(migrating: ServerThread) -> None:
    # Issue 15, defect 5: a key for "mine" created any collection with new_name=, and
    # renamed "mine" to "mine-v1", neither of which it may touch.
    with latentdb.connect(migrating.url, api_key=MINE) as db:
        for new_name, outside in (("elsewhere", "elsewhere"), (None, "mine-v1"), ("x", "mine-v1")):
            with pytest.raises(ForbiddenError, match=f"'{outside}'"):
                db.migrate("mine", reduce=2, new_name=new_name)
    with (
        latentdb.connect(migrating.url, api_key=MINE_ALL) as db,
        pytest.raises(ForbiddenError, match="'elsewhere'"),
    ):
        db.migrate("mine", reduce=2, new_name="elsewhere")
    with latentdb.connect(migrating.url, api_key=WRITER) as db:
        assert db.list_collections() == ["mine"]  # nothing created, nothing renamed
        assert db.list_aliases() == {} and db.list_migrations() == []
    with latentdb.connect(migrating.url, api_key=MINE_ALL) as db:
        status = db.migrate("mine", reduce=2, background=False).status()
        assert (status.source, status.target, status.state) == ("mine-v1", "mine-v2", "done")
        assert db.list_aliases() == {"mine": "mine-v2"}


def test_migration_routes_authenticate_before_looking_up(migrating: ServerThread) -> None:
    # Issue 15, defect 6: without a key, an id that exists got 401 and one that does
    # not got 404.
    with latentdb.connect(migrating.url, api_key=WRITER) as db:
        db.create_collection("other", dimension=DIM, embedder=None, model=MODEL).add(
            ["a", "b"], vectors=np.eye(DIM)[:2], model=MODEL
        )
        known = db.migrate("other", reduce=2, background=False).id
    unknown = known + 1000
    replies: dict[str, set[tuple[int, str]]] = {}
    for key, label in ((None, "none"), ("not-a-known-key-at-all", "bad"), (READER, "reader")):
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        for migration_id in (known, unknown):
            stop = httpx.post(f"{migrating.url}/v1/migrations/{migration_id}/stop", headers=headers)
            replies.setdefault(f"{label} stop", set()).add((stop.status_code, stop.text))
            if key is None or label == "bad":
                status = httpx.get(f"{migrating.url}/v1/migrations/{migration_id}", headers=headers)
                replies.setdefault(label, set()).add((status.status_code, status.text))
    # One answer whether the id exists or not.
    assert all(len(answers) == 1 for answers in replies.values()), replies
    assert {status for answers in replies.values() for status, _ in answers} == {401, 403}
    # A key for other names sees no migration of "mine": as absent as an unknown id.
    with latentdb.connect(migrating.url, api_key=MINE) as db:
        theirs = [m for m in db.list_migrations() if m.status().alias == "other"]
        assert theirs == []
    for migration_id in (known, unknown):
        reply = httpx.get(
            f"{migrating.url}/v1/migrations/{migration_id}", headers={"X-API-Key": MINE}
        )
        assert (
            reply.status_code == 404 and reply.json()["message"] == f"no migration {migration_id}"
        )
    reply = httpx.get(f"{migrating.url}/v1/migrations/{known}", headers={"X-API-Key": OTHER})
    assert reply.status_code == 200 and reply.json()["status"]["alias"] == "other"


def test_compare_needs_a_key_that_may_read_both_collections(seeded: ServerThread) -> None:
    with latentdb.connect(seeded.url, api_key=DOCS_READER) as db:
        with pytest.raises(ForbiddenError, match="'other'"):
            db.compare("docs", "other", k=1)
        with pytest.raises(ForbiddenError, match="'nope'"):  # refused before any lookup
            db.compare("nope", "docs", k=1)
        assert db.compare("docs", "docs", k=1).overlap == 1.0
    with latentdb.connect(seeded.url, api_key=READER) as db:
        assert db.compare("docs", "other", k=1).shared == 2
