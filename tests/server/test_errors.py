"""Errors over HTTP: a 500 keeps the connection, the client retries a broken one once,
no reply names a server path, and the OpenAPI document lists every status sent."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import latentdb
from latentdb import Collection, ServerError, TransportError
from latentdb.engine import EmbeddedCollection
from latentdb.server import ServerThread, create_app
from tests.server.conftest import KEYS, serving

# The model every test vector is written as: collections require writes of vectors
# to name their model (require_model).
MODEL = "test/vectors"

DIM = 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("errors") / "db"


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[ServerThread]:
    """A server without keys over a database holding collection "c"."""
    with serving(folder) as served:
        with latentdb.connect(served.url) as db:
            db.create_collection("c", dimension=DIM, embedder=None, model=MODEL).add(
                ["a", "b"], vectors=np.eye(DIM)[:2], model=MODEL
            )
        yield served


def _broken(self: Collection) -> int:
    raise RuntimeError("a bug")


def test_a_500_keeps_the_keep_alive_connection(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 15, defect 4: the 500 went out, then uvicorn closed the connection because
    # the exception reached it, and the next request on it was reset 30-40% of the time.
    monkeypatch.setattr(EmbeddedCollection, "_count", _broken)  # the engine behind the server
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        first_socket = connection.sock
        for _ in range(40):
            connection.request("GET", "/v1/collections/c/count")
            crashed = connection.getresponse()
            assert crashed.status == 500
            assert crashed.getheader("connection") != "close"
            body = crashed.read()
            assert body.startswith(b'{"code":"internal_error","status":500,')
            for path in ("/v1/collections", "/v1/collections/c"):
                connection.request("GET", path)
                reply = connection.getresponse()
                assert reply.status == 200, reply.read()
                reply.read()
            assert connection.sock is first_socket  # one connection all along
    finally:
        connection.close()
    with latentdb.connect(server.url) as db:
        for _ in range(40):
            with pytest.raises(ServerError):
                db.get_collection("c").count()
            assert db.list_collections() == ["c"]


def test_a_crash_outside_the_routes_is_answered_in_band(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(request: object) -> None:
        raise RuntimeError("a bug in the exception handling")

    # A not-found handler that fails: the exception escapes every route.
    app = server.app.app.app  # type: ignore[attr-defined]  # Limits, FastLane, FastAPI
    monkeypatch.setitem(app.exception_handlers, 404, broken)
    monkeypatch.setattr(app, "middleware_stack", None)  # built again with it
    with httpx.Client(base_url=server.url) as client:
        for _ in range(20):
            reply = client.get("/nowhere")
            assert reply.status_code == 500 and reply.json()["code"] == "internal_error"
            assert client.get("/v1/collections").json() == ["c"]


class BreakOnce(httpx.BaseTransport):
    """Breaks the connection under the first ``breaks`` requests, then delegates."""

    def __init__(self, breaks: int) -> None:
        self.breaks = breaks
        self.sent: list[str] = []
        self.real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        if self.breaks:
            self.breaks -= 1
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return self.real.handle_request(request)

    def close(self) -> None:
        self.real.close()


def _client_with(db: Any, transport: BreakOnce) -> None:
    db._http.close()
    db._http = httpx.Client(
        base_url=db.url, headers=db._http.headers, transport=transport, timeout=10
    )


def test_the_client_sends_an_idempotent_request_again_once(server: ServerThread) -> None:
    with latentdb.connect(server.url) as db:
        collection = db.get_collection("c")
        once = BreakOnce(1)
        _client_with(db, once)
        assert collection.count() == 2
        assert once.sent == ["GET /v1/collections/c/count"] * 2
        once.breaks = 1
        assert collection.query(vectors=np.eye(DIM)[0], k=1).ids == [["a"]]  # a read
        once.breaks = 2
        with pytest.raises(TransportError, match="broke during GET"):
            collection.count()  # once more, not twice more
        sent = len(once.sent)
        once.breaks = 1
        with pytest.raises(TransportError, match="may have been applied"):
            collection.add(
                ["z"], vectors=np.ones(DIM), model=MODEL
            )  # not idempotent: not sent again
        assert len(once.sent) == sent + 1
        assert collection.count() == 2


def test_replies_never_name_the_database_folder(server: ServerThread, folder: Path) -> None:
    # Issue 15, defect 7: "no collection named 'x' in /srv/...".
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/v1/collections/missing", None),
        ("GET", "/v1/collections/missing/count", None),
        ("DELETE", "/v1/collections/missing", None),
        ("POST", "/v1/collections/missing/query", {"vectors": [1, 0, 0, 0]}),
        ("PUT", "/v1/aliases/missing", {"collection": "c"}),
        ("DELETE", "/v1/aliases/missing", None),
        ("POST", "/v1/aliases", {"alias": "x", "collection": "missing"}),
        ("POST", "/v1/migrations", {"name": "missing", "reduce": 2}),
    ]
    with httpx.Client(base_url=server.url) as client:
        for method, path, body in requests:
            reply = client.request(method, path, json=body)
            assert reply.status_code == 404, (path, reply.text)
            message = reply.json()["message"]
            assert "'missing'" in message, message  # the collection is named
            assert str(folder) not in message and str(folder.parent) not in message
            assert str(folder.resolve()) not in message


def test_a_relative_database_path_is_scrubbed_in_every_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with (
        latentdb.connect("data") as database,
        ServerThread(create_app(database, keys=None)) as served,
    ):
        reply = httpx.get(f"{served.url}/v1/collections/nope")
    message = reply.json()["message"]
    assert str(tmp_path) not in message and "'nope'" in message


def test_a_405_says_which_methods_the_path_allows(server: ServerThread) -> None:
    cases = {
        "/v1/collections/c/count": "GET",
        "/v1/collections/c/records": "PATCH, POST, PUT",  # three routes share the path
        "/v1/collections": "GET, POST",
    }
    for path, allowed in cases.items():
        reply = httpx.request("DELETE", server.url + path)
        assert reply.status_code == 405 and reply.json()["status"] == 405
        assert reply.headers["allow"] == allowed


def test_a_request_that_does_not_parse_is_a_400(server: ServerThread) -> None:
    for path in ("/v1/migrations/not-a-number", "/v1/migrations/1?wait=nan"):
        reply = httpx.get(server.url + path)
        assert reply.status_code == 400 and reply.json()["code"] == "invalid_argument"
    for shape in ([None, 4], [{}, 4], ["1", 4], [True, 4]):  # found by bench/fuzz_server.py
        vectors = {"dtype": "float32", "shape": shape, "data": ""}
        for method, route, body in (
            ("PUT", "records", {"ids": ["a"], "vectors": vectors}),
            ("POST", "evaluate", {"queries": vectors}),
            ("POST", "query", {"vectors": vectors}),
        ):
            reply = httpx.request(method, f"{server.url}/v1/collections/c/{route}", json=body)
            assert reply.status_code == 400, reply.text
            assert reply.json()["code"] == "invalid_vector"


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_openapi_lists_every_status_with_the_error_body(tmp_path: Path) -> None:
    # Issue 15, defect 14: it listed 200 and 422, and 422 is never sent.
    with latentdb.connect(tmp_path / "db") as database:
        open_schema = create_app(database, keys=None).openapi()
        keyed_schema = create_app(database, keys=latentdb.server.Keyring.load(KEYS)).openapi()
    assert "HTTPValidationError" not in keyed_schema["components"]["schemas"]
    error = keyed_schema["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"code", "status", "message"}
    route_specific = {
        ("/v1/collections", "post"): {"409"},
        ("/v1/collections/{name}/query", "post"): {"404", "409"},
        ("/v1/collections/{name}/records", "post"): {"404", "409"},
        ("/v1/migrations/{migration_id}", "get"): {"404"},
        ("/v1/aliases", "post"): {"404", "409"},
        ("/v1/compare", "post"): {"404"},
    }
    for schema, keyed in ((open_schema, False), (keyed_schema, True)):
        operations = list(_operations(schema))
        assert len(operations) == 31  # with compare, a migration's preview, clear_recorded_queries
        for path, method, operation in operations:
            statuses = set(operation["responses"])
            assert "422" not in statuses
            expected = {"200", "400", "413", "500"} | route_specific.get((path, method), set())
            if keyed and path != "/healthz":
                expected |= {"401", "403"}
            assert expected <= statuses, (path, method, statuses)
            if "{" in path:
                assert "404" in statuses
            for status in statuses - {"200"}:
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    metrics = open_schema["paths"]["/metrics"]["get"]["responses"]["200"]
    assert "text/plain" in metrics["content"]


def test_the_served_openapi_document_is_the_same(server: ServerThread) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert all("422" not in op["responses"] for _, _, op in _operations(schema))
