"""The server's request models against the interface, and the OpenAPI document: the
defaults are the interface's, every body field has a type, every status is listed."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

import latentdb
from latentdb import errors
from latentdb.api import Collection, Database, Migration
from latentdb.server import Keyring, create_app
from latentdb.server._routes.analysis import AnalyzeBody, CompareBody, MapBody
from latentdb.server._routes.collections import CreateCollectionBody
from latentdb.server._routes.migrations import MigrateBody, PreviewBody
from latentdb.server._routes.queries import EvaluateBody, QueryBody
from latentdb.server._routes.records import DeleteBody, GetBody, ScrollBody, WriteBody
from tests.server.conftest import KEYS

# Each body and the interface method it feeds. Parameters that do not travel: a
# callback (progress), and background (a server always migrates in the background).
BODIES: list[tuple[type[BaseModel], Callable[..., Any]]] = [
    (CreateCollectionBody, Database.create_collection),
    (CreateCollectionBody, Database.get_or_create_collection),
    (MigrateBody, Database.migrate),
    (WriteBody, Collection.add),
    (WriteBody, Collection.upsert),
    (WriteBody, Collection.update),
    (DeleteBody, Collection.delete),
    (GetBody, Collection.get),
    (ScrollBody, Collection.scroll),
    (QueryBody, Collection.query),
    (EvaluateBody, Collection.evaluate),
    (AnalyzeBody, Collection.analyze),
    (MapBody, Collection.map),
    (CompareBody, Database.compare),
    (PreviewBody, Migration.preview),
]
NOT_SENT = {"self", "progress", "background"}
SERVER_ONLY = {"get_or_create", "after"}


@pytest.mark.parametrize(("body", "method"), BODIES, ids=lambda x: getattr(x, "__name__", ""))
def test_request_defaults_are_the_interface_defaults(
    body: type[BaseModel], method: Callable[..., Any]
) -> None:
    parameters = {
        name: parameter
        for name, parameter in inspect.signature(method).parameters.items()
        if name not in NOT_SENT
    }
    fields = {name: field for name, field in body.model_fields.items() if name not in SERVER_ONLY}
    assert set(fields) == set(parameters)  # every argument travels, and nothing else
    for name, parameter in parameters.items():
        field = fields[name]
        if parameter.default is inspect.Parameter.empty:
            assert field.is_required(), name
        else:
            assert not field.is_required(), name
            assert field.default == parameter.default, name
            assert type(field.default) is type(parameter.default), name


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """The OpenAPI document of a server without keys and of one with keys."""
    with latentdb.connect(tmp_path_factory.mktemp("models") / "db") as database:
        yield [
            create_app(database, keys=None).openapi(),
            create_app(database, keys=Keyring.load(KEYS, environ={})).openapi(),
        ]


def _typed(schema: dict[str, Any]) -> bool:
    if "$ref" in schema or "enum" in schema or "const" in schema:
        return True
    if "anyOf" in schema:
        return all(_typed(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        items = [schema.get("items", {}), *schema.get("prefixItems", [])]
        return all(_typed(item) for item in items if item or "prefixItems" not in schema)
    return "type" in schema


def test_openapi_types_every_body_and_reply_field(schemas: list[dict[str, Any]]) -> None:
    components = schemas[0]["components"]["schemas"]
    bodies = [name for name in components if name.endswith("Body")]
    assert len(bodies) >= 14
    for name, component in components.items():
        for field, schema in component.get("properties", {}).items():
            assert _typed(schema), (name, field, schema)
    for path, operations in schemas[0]["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {})
            for content in body.values():
                assert "$ref" in content["schema"], (path, method)
            reply = operation["responses"]["200"]["content"]
            assert any(_typed(c["schema"]) for c in reply.values() if c.get("schema")) or (
                path == "/metrics"
            ), (path, method, reply)


def test_openapi_lists_the_status_and_codes_of_every_error(
    schemas: list[dict[str, Any]],
) -> None:
    sent = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.LatentDBError)
        and not issubclass(cls, errors.TransportError)
    ]
    open_schema, keyed_schema = schemas
    documented: dict[str, str] = {}
    for operations in keyed_schema["paths"].values():
        for operation in operations.values():
            for status, reply in operation["responses"].items():
                if status != "200":
                    documented[status] = reply["description"]
    for cls in sent:
        assert str(cls.status) in documented, cls
        assert cls.code in documented[str(cls.status)], (cls, documented[str(cls.status)])
    writes = {
        ("/v1/collections/{name}/records", "put"),
        ("/v1/collections/{name}/delete", "post"),
        ("/v1/collections/{name}/optimize", "post"),
        ("/v1/aliases/{alias}", "delete"),
        ("/v1/migrations/{migration_id}/stop", "post"),
    }
    for path, method in writes:  # a read-only database refuses them: 409 read_only
        assert "409" in open_schema["paths"][path][method]["responses"], (path, method)
    assert "401" not in open_schema["paths"]["/v1/collections"]["get"]["responses"]


def test_the_json_schema_of_vectors_takes_both_wire_forms(
    schemas: list[dict[str, Any]],
) -> None:
    components = schemas[0]["components"]["schemas"]
    vectors = components["QueryBody"]["properties"]["vectors"]["anyOf"]
    assert {"$ref": "#/components/schemas/BinaryArray"} in vectors
    assert {"type": "array", "items": {"type": "number"}} in vectors
    assert set(components["BinaryArray"]["required"]) == {"shape", "data"}


def test_a_body_is_passed_as_sent_for_the_engine_to_check() -> None:
    # Typed for the document, not enforced: the engine's own error and message come back.
    body = QueryBody.model_validate({"k": "ten", "include": "vectors"})
    assert body.k == "ten" and body.include == "vectors"
