"""The fast lane of queries (server/_fastlane.py): it answers what the route would answer,
byte for byte, and hands what it cannot answer exactly to the FastAPI app."""

from __future__ import annotations

import asyncio
import base64
import http.client
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

import latentdb
from latentdb.engine import EmbeddedCollection
from latentdb.server import ServerThread
from latentdb.server._plumbing import REBALANCE_REQUESTS
from latentdb.server._protocol import ConnectionShare
from latentdb.server._routes import queries
from tests.server.conftest import DOCS_READER, KEYS, READER, WRITER, serving

MODEL = "test/vectors"
DIM = 4
QUERY = "/v1/collections/c/query"
# The lane takes "application/json" only; the app parses any JSON type, so this one
# sends a request through FastAPI's route: the reference the lane must match.
THROUGH_THE_APP = "application/vnd.test+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with serving(tmp_path_factory.mktemp("lane") / "db", keys=KEYS) as served:
        with latentdb.connect(served.url, api_key=WRITER) as db:
            db.create_collection("c", dimension=DIM, embedder=None, model=MODEL).add(
                ["a", "b", "c"],
                vectors=np.eye(DIM)[:3],
                documents=["one", "two", "three"],
                metadatas=[{"n": 1}, {"n": 2}, {"n": 3}],
                model=MODEL,
            )
        yield served


def post(
    server: ServerThread,
    body: bytes,
    *,
    content_type: str,
    key: str | None = WRITER,
    binary: bool = False,
    path: str = QUERY,
) -> httpx.Response:
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if binary:
        headers["X-LatentDB-Vectors"] = "binary"
    return httpx.post(f"{server.url}{path}", content=body, headers=headers)


def both(
    server: ServerThread, body: bytes, **options: Any
) -> tuple[httpx.Response, httpx.Response]:
    """The lane's reply and the route's to the same request."""
    lane = post(server, body, content_type="application/json", **options)
    route = post(server, body, content_type=THROUGH_THE_APP, **options)
    return lane, route


def binary(vectors: Any) -> dict[str, Any]:
    data = np.asarray(vectors, dtype="<f4")
    return {
        "dtype": "float32",
        "shape": list(data.shape),
        "data": base64.b64encode(data.tobytes()).decode(),
    }


ANSWERED = {
    "one vector": {"vectors": [1.0, 0.0, 0.0, 0.0], "k": 2},
    "binary, ids and distances": {
        "vectors": binary([[0.0, 1.0, 0.0, 0.0]]),
        "k": 3,
        "include": ["distances"],
    },
    "several vectors (a thread)": {"vectors": np.eye(DIM).tolist() * 2, "k": 1},
    "filtered (a thread)": {"vectors": [1.0, 0.0, 0.0, 0.0], "where": {"n": {"$gte": 2}}},
    "exact, with vectors": {
        "vectors": [0.0, 0.0, 1.0, 0.0],
        "exact": True,
        "include": ["vectors", "documents"],
    },
    "explained": {"vectors": [0.0, 0.0, 1.0, 0.0], "explain": True, "k": 1},
}


@pytest.fixture
def lane_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the collections the lane queried (the app's route holds the function
    itself, not the module's name for it, so only the lane's calls are seen)."""
    calls: list[str] = []
    route = queries.query

    def counted(name: str, *arguments: Any) -> Any:
        calls.append(name)
        return route(name, *arguments)

    monkeypatch.setattr(queries, "query", counted)
    return calls


@pytest.mark.parametrize("body", list(ANSWERED.values()), ids=list(ANSWERED))
@pytest.mark.parametrize("form", ["json", "binary"])
def test_the_lane_answers_as_the_route_does(
    server: ServerThread, body: Any, form: str, lane_calls: list[str]
) -> None:
    lane, route = both(server, orjson.dumps(body), binary=form == "binary")
    assert lane_calls == ["c"]  # the lane answered the first, the route the second
    assert lane.status_code == route.status_code == 200
    answer, reference = lane.json(), route.json()
    if body.get("explain"):  # timings differ from call to call
        answer.pop("plan"), reference.pop("plan")
    assert answer == reference
    assert lane.headers["content-type"] == route.headers["content-type"]


REFUSED = {
    "wrong dimension": (orjson.dumps({"vectors": [1.0, 0.0]}), WRITER, QUERY),
    "bad filter": (orjson.dumps({"vectors": [1.0] * DIM, "where": {"$bad": 1}}), WRITER, QUERY),
    "k of zero": (orjson.dumps({"vectors": [1.0] * DIM, "k": 0}), WRITER, QUERY),
    "misspelled field": (orjson.dumps({"vectors": [1.0] * DIM, "kk": 3}), WRITER, QUERY),
    "not JSON": (b"{vectors: [1, 0]", WRITER, QUERY),
    "a JSON list": (b"[1, 2]", WRITER, QUERY),
    "empty body": (b"", WRITER, QUERY),
    "NaN": (b'{"vectors": [NaN, 0, 0, 0]}', WRITER, QUERY),
    "no key": (orjson.dumps({"vectors": [1.0] * DIM}), None, QUERY),
    "unknown key": (orjson.dumps({"vectors": [1.0] * DIM}), "nobody-0123456789abcdef", QUERY),
    "another collection's key": (orjson.dumps({"vectors": [1.0] * DIM}), DOCS_READER, QUERY),
    "no such collection": (
        orjson.dumps({"vectors": [1.0] * DIM}),
        READER,
        "/v1/collections/nowhere/query",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED.values()), ids=list(REFUSED))
def test_the_lane_refuses_as_the_route_does(
    server: ServerThread, case: Any, lane_calls: list[str]
) -> None:
    body, key, path = case
    lane, route = both(server, body, key=key, path=path)
    # the engine's own errors come from the lane's call; the rest from the app
    assert len(lane_calls) <= 1
    assert lane.status_code == route.status_code >= 400
    assert lane.json() == route.json()


def test_a_crash_in_a_query_is_answered_in_band(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: EmbeddedCollection, request: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(EmbeddedCollection, "_query", broken)
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for body in ({"vectors": [1.0] * DIM}, {"vectors": [1.0] * DIM, "where": {"n": 1}}):
            connection.request(
                "POST",
                QUERY,
                body=orjson.dumps(body),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {WRITER}"},
            )
            reply = connection.getresponse()
            assert reply.status == 500
            assert reply.getheader("connection") != "close"  # the connection stays
            assert orjson.loads(reply.read())["code"] == "internal_error"
    finally:
        connection.close()


def test_a_connection_closes_after_keepalive_requests(tmp_path: Path) -> None:
    with serving(tmp_path / "db", keepalive_requests=3) as served:
        host, port = served.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            said = []
            for _ in range(4):
                connection.request("GET", "/v1/collections")
                reply = connection.getresponse()
                assert reply.status == 200 and reply.read() == b"[]"
                said.append(reply.getheader("connection"))
            # the third reply closes; http.client opens a new connection for the fourth
            assert said == [None, None, "close", None]
            # a scroll's pages keep their connection (its cursor lives in this process)
            with latentdb.connect(served.url) as db:
                collection = db.create_collection("c", dimension=2, embedder=None, model=MODEL)
                collection.add([str(i) for i in range(10)], vectors=np.ones((10, 2)), model=MODEL)
            said.clear()
            after: str | None = None
            for _ in range(6):
                body = {"batch": 2} if after is None else {"batch": 2, "after": after}
                connection.request(
                    "POST",
                    "/v1/collections/c/scroll",
                    body=orjson.dumps(body),
                    headers={"Content-Type": "application/json"},
                )
                reply = connection.getresponse()
                after = orjson.loads(reply.read())["after"]
                said.append(reply.getheader("connection"))
            assert said == [None] * 6 and after is None  # all 5 pages, then the end
            connection.request("GET", "/v1/collections")
            reply = connection.getresponse()
            reply.read()
            assert reply.getheader("connection") == "close"  # the first request after them
        finally:
            connection.close()


def test_a_crowded_worker_closes_connections_sooner(tmp_path: Path) -> None:
    crowded = [True]
    with serving(tmp_path / "db", keepalive_requests=1000, crowded=lambda: crowded[0]) as served:
        host, port = served.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            said = []
            for _ in range(2 * REBALANCE_REQUESTS):
                connection.request("GET", "/v1/collections")
                reply = connection.getresponse()
                reply.read()
                said.append(reply.getheader("connection"))
                crowded[0] = len(said) < REBALANCE_REQUESTS + 3  # no longer, from then on
            closed = [n + 1 for n, value in enumerate(said) if value == "close"]
            assert closed == [REBALANCE_REQUESTS]  # then its next connection is left alone
        finally:
            connection.close()


def test_connection_shares() -> None:
    slots = [9, 7]
    first, second = ConnectionShare(slots, 0), ConnectionShare(slots, 1)
    assert first.crowded() and not second.crowded()  # 9 > ceil(16 / 2)
    first.closed()
    second.opened()
    assert slots == [8, 8] and not first.crowded() and not second.crowded()
    assert ConnectionShare([2, 1, 0], 0).crowded()  # 2 > ceil(3 / 3)


def test_a_held_loop_does_not_reset_a_waiting_request(tmp_path: Path) -> None:
    """uvicorn closes a keep-alive connection when its timer runs out; when the loop was
    held (a query on it waiting for the engine) the timer can run before the request that
    came meanwhile is read. That connection is not idle, and is not closed."""
    with serving(tmp_path / "db") as served:
        host, port = served.url.removeprefix("http://").split(":")
        waiting = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            waiting.request("GET", "/v1/collections")
            assert waiting.getresponse().read() == b"[]"
            [protocol] = served._server.server_state.connections
            held, sent = threading.Event(), threading.Event()

            def held_then_timed_out() -> None:
                held.set()
                sent.wait(10)  # the loop is held while the next request comes in
                time.sleep(0.2)
                protocol.timeout_keep_alive_handler()  # the timer, before the read

            protocol.loop.call_soon_threadsafe(held_then_timed_out)
            assert held.wait(10)
            waiting.request("GET", "/v1/collections")
            sent.set()
            reply = waiting.getresponse()
            assert reply.status == 200 and reply.read() == b"[]"
        finally:
            waiting.close()


def test_a_reply_leaves_before_the_loop_moves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply's writes are gathered into one, and written when the reply is whole: not
    at the end of the loop's turn, which something else may hold for long (uvicorn starts
    the keep-alive timer as the reply ends)."""
    query = EmbeddedCollection._query

    def then_hold_the_loop(self: EmbeddedCollection, request: Any) -> Any:
        asyncio.get_running_loop().call_soon(time.sleep, 1.5)  # runs before a deferred write
        return query(self, request)

    with serving(tmp_path / "db") as served:
        with latentdb.connect(served.url) as db:
            collection = db.create_collection("c", dimension=2, embedder=None, model=MODEL)
            collection.add(["a"], vectors=[1.0, 0.0], model=MODEL)
        monkeypatch.setattr(EmbeddedCollection, "_query", then_hold_the_loop)
        started = time.perf_counter()
        reply = httpx.post(f"{served.url}{QUERY}", json={"vectors": [1.0, 0.0]}, timeout=10)
        took = time.perf_counter() - started
        assert reply.status_code == 200 and reply.json()["ids"] == [["a"]]
        assert took < 1.0  # not held back behind the 1.5 s the loop is held
