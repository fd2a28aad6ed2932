"""The FastAPI application: every Database and Collection operation as an endpoint.

Each endpoint translates JSON to one call of the embedded API and its result back:
the engine does every check, so errors are the engine's own, sent as
``{"code", "status", "message"}`` and re-raised by the client as the same class.

An exception that is not a latentdb error (a bug) is answered in-band as a JSON 500
by the route itself (:class:`AnsweringRoute`): it never reaches uvicorn, which closes
a keep-alive connection after any exception that escapes the application (issue 15).
Messages never carry the database folder's path: it is replaced by ``<database>``.

Endpoints are plain functions, which FastAPI runs in its thread pool: a long query or
an ``optimize()`` holds a worker thread, never the event loop. The engine serializes
its work under its store's lock (one SQLite connection; faiss releases the GIL inside
a search), and background index builds run outside that lock, so reads go on while a
segment is built.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

import latentdb
from latentdb.api import Collection, Database
from latentdb.api._migration import version_names
from latentdb.client._wire import (
    VECTOR_HEADER,
    VectorFormat,
    decode_array,
    get_result_to_wire,
    query_result_to_wire,
    rows_of,
    texts_count,
)
from latentdb.errors import (
    InvalidArgumentError,
    LatentDBError,
    NotFoundError,
    PayloadTooLargeError,
)
from latentdb.server._auth import ApiKey, Keyring
from latentdb.server._metrics import Metrics
from latentdb.server._models import (
    AliasBody,
    AnalyzeBody,
    CreateAliasBody,
    CreateCollectionBody,
    DeleteBody,
    EvaluateBody,
    GetBody,
    MapBody,
    MigrateBody,
    QueryBody,
    RecallTargetBody,
    ScrollBody,
    WriteBody,
)
from latentdb.server._openapi import document, responses
from latentdb.server._plumbing import (
    OPEN_PATHS,
    AnsweringRoute,
    ASGIApp,
    Cursors,
    Limits,
    crash,
    error_response,
    json_response,
    key_of,
    scrub,
)

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY", "create_app"]


# 64 MiB: 10,000 384-d vectors as JSON lists of floats take ~40 MB, ~20 MB in binary.
DEFAULT_MAX_BODY = 64 * 1024 * 1024
# Rows per write and queries per query call.
DEFAULT_MAX_BATCH = 10_000


def create_app(
    database: Database,
    *,
    keys: Keyring | None,
    max_body: int = DEFAULT_MAX_BODY,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> FastAPI:
    """The HTTP API over ``database``.

    Args:
        database: An embedded database (``app.state.database``; the caller closes it).
        keys: The API keys accepted; None serves without authentication.
        max_body: Largest request body in bytes (413 above).
        max_batch: Most rows per write, queries per query, ids per read (413 above).

    Returns:
        The FastAPI application (wrapped in the body limit at ``app.state.asgi``).
    """
    app = FastAPI(
        title="latentdb",
        version=latentdb.__version__,
        description=(
            "A vector database that indexes a model's latent space. Send the API key as "
            "`Authorization: Bearer KEY`. Errors are `{code, status, message}`."
        ),
    )
    app.router.route_class = AnsweringRoute
    document(app)
    metrics = Metrics()
    cursors = Cursors()
    app.state.database = database
    app.state.keys = keys
    app.state.metrics = metrics

    # -- plumbing ----------------------------------------------------------------------

    def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
        return responses(*statuses, auth=keys is not None)

    @app.exception_handler(LatentDBError)
    async def on_latentdb_error(request: Request, error: LatentDBError) -> Response:
        metrics.error(error.code)
        return error_response(error, database=request.app.state.database)

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        return await on_latentdb_error(request, InvalidArgumentError(problems))

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 404:
            return await on_latentdb_error(
                request, NotFoundError(f"no endpoint {request.method} {request.url.path}")
            )
        wrapped = InvalidArgumentError(str(error.detail))
        wrapped.status = error.status_code  # 405 and the like: keep the HTTP status
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        metrics.error(wrapped.code)
        return error_response(wrapped, headers=headers)

    def allowed_methods(request: Request) -> str:
        # Starlette names only the first route of the path; several share one (records).
        methods: set[str] = set()
        for route in request.app.router.routes:
            if route.matches(request.scope)[0] is not Match.NONE:
                methods |= getattr(route, "methods", None) or set()
        return ", ".join(sorted(methods))

    @app.exception_handler(Exception)
    async def oncrash(request: Request, error: Exception) -> Response:
        # Only what escapes the routes gets here (AnsweringRoute answers the rest), and
        # Starlette re-raises it after this reply; Limits keeps it from uvicorn.
        return await on_latentdb_error(request, crash(request.method, request.url.path, error))

    def db(request: Request) -> Database:
        found: Database = request.app.state.database
        return found

    def allow(request: Request, *, write: bool, collection: str | None = None) -> ApiKey | None:
        key = key_of(request)
        if key is not None:
            key.check(write=write, collection=collection)
        return key

    def form(request: Request) -> VectorFormat:
        return "binary" if request.headers.get(VECTOR_HEADER, "") == "binary" else "json"

    def batch(count: int, what: str) -> None:
        if count > max_batch:
            raise PayloadTooLargeError(
                f"{count:,} {what} in one request is over this server's limit of "
                f"{max_batch:,} (latentdb serve --max-batch): split the call"
            )

    def collection(request: Request, name: str, *, write: bool) -> Collection:
        allow(request, write=write, collection=name)
        return db(request).get_collection(name)

    def images(value: object) -> Any:
        if not isinstance(value, list):
            return value  # the engine names what is wrong
        decoded = []
        for position, item in enumerate(value):
            try:
                decoded.append(base64.b64decode(item, validate=True))
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    f"images travel as base64 of their encoded bytes; the one at position "
                    f"{position} is not (file paths are not read on the server)"
                ) from None
        return decoded

    def info(found: Collection) -> dict[str, Any]:
        return {
            "name": found.name,
            "alias": found.alias,
            "space": found.space.to_dict(),
            "embedder": found.embedder,
            "recall_target": found.recall_target,
            "require_model": found.require_model,
        }

    # -- service -----------------------------------------------------------------------

    @app.get(
        "/healthz",
        tags=["service"],
        summary="Liveness: 200 while the database is open",
        responses=responses(auth="/healthz" not in OPEN_PATHS),
    )
    def healthz(request: Request) -> Response:
        db(request).list_collections()  # raises DatabaseClosedError once closed
        return json_response({"status": "ok", "version": latentdb.__version__})

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics (needs a read key)",
        response_class=PlainTextResponse,
        responses=errors(),
    )
    def prometheus(request: Request) -> Response:
        key = allow(request, write=False)
        database = db(request)
        rows = {
            name: database.get_collection(name).count()
            for name in database.list_collections()
            if key is None or key.allows(name)
        }
        return PlainTextResponse(
            metrics.render(rows), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    # -- collections -------------------------------------------------------------------

    @app.get(
        "/v1/collections", tags=["collections"], summary="list_collections", responses=errors()
    )
    def list_collections(request: Request) -> Response:
        key = allow(request, write=False)
        names = db(request).list_collections()
        return json_response([n for n in names if key is None or key.allows(n)])

    @app.post(
        "/v1/collections", tags=["collections"], summary="create_collection", responses=errors(409)
    )
    def create_collection(request: Request, body: CreateCollectionBody) -> Response:
        allow(request, write=True, collection=str(body.name))
        database = db(request)
        make = database.get_or_create_collection if body.get_or_create else None
        make = make or database.create_collection
        arguments = body.model_dump(exclude={"name", "get_or_create"})
        return json_response(info(make(body.name, **arguments)))

    @app.get(
        "/v1/collections/{name}",
        tags=["collections"],
        summary="get_collection",
        responses=errors(404),
    )
    def get_collection(request: Request, name: str) -> Response:
        return json_response(info(collection(request, name, write=False)))

    @app.delete(
        "/v1/collections/{name}",
        tags=["collections"],
        summary="delete_collection",
        responses=errors(404),
    )
    def delete_collection(request: Request, name: str) -> Response:
        allow(request, write=True, collection=name)
        db(request).delete_collection(name)
        return json_response({"deleted": name})

    # -- aliases -----------------------------------------------------------------------

    @app.get("/v1/aliases", tags=["aliases"], summary="list_aliases", responses=errors())
    def list_aliases(request: Request) -> Response:
        key = allow(request, write=False)
        aliases = db(request).list_aliases()
        return json_response({a: c for a, c in aliases.items() if key is None or key.allows(a)})

    @app.post("/v1/aliases", tags=["aliases"], summary="create_alias", responses=errors(404, 409))
    def create_alias(request: Request, body: CreateAliasBody) -> Response:
        allow(request, write=True, collection=str(body.alias))
        allow(request, write=True, collection=str(body.collection))
        db(request).create_alias(body.alias, body.collection)
        return json_response({"alias": body.alias, "collection": body.collection})

    @app.put("/v1/aliases/{alias}", tags=["aliases"], summary="switch_alias", responses=errors(404))
    def switch_alias(request: Request, alias: str, body: AliasBody) -> Response:
        allow(request, write=True, collection=alias)
        allow(request, write=True, collection=str(body.collection))
        db(request).switch_alias(alias, body.collection)
        return json_response({"alias": alias, "collection": body.collection})

    @app.delete(
        "/v1/aliases/{alias}", tags=["aliases"], summary="delete_alias", responses=errors(404)
    )
    def delete_alias(request: Request, alias: str) -> Response:
        allow(request, write=True, collection=alias)
        db(request).delete_alias(alias)
        return json_response({"deleted": alias})

    # -- migrations --------------------------------------------------------------------

    def migration_wire(request: Request, status: latentdb.MigrationStatus) -> dict[str, Any]:
        wire = dataclasses.asdict(status)
        if wire["error"] is not None:
            wire["error"] = scrub(wire["error"], request.app.state.database)
        return wire

    def migration_reply(
        request: Request, migration: latentdb.Migration, *, running: bool
    ) -> Response:
        status = migration_wire(request, migration.status())
        return json_response({"id": migration.id, "running": running, "status": status})

    def find_migration(request: Request, migration_id: int, *, write: bool) -> latentdb.Migration:
        # The key first, the lookup after: without a valid key, every id gets the same
        # 401, so no answer tells which ids exist (issue 15, defect 6). A migration of a
        # name the key may not use is as absent to it as in list_migrations.
        key = allow(request, write=write)
        for migration in db(request).list_migrations():
            if migration.id != migration_id:
                continue
            status = migration.status()
            if key is None or key.allows(status.alias):
                if write:  # stopping it leaves its target part filled
                    key_check(key, write=True, names={status.alias, status.target})
                return migration
            break
        raise NotFoundError(f"no migration {migration_id}")

    def key_check(key: ApiKey | None, *, write: bool, names: set[str]) -> None:
        for name in sorted(names):
            if key is not None:
                key.check(write=write, collection=name)

    def migration_names(database: Database, name: object, new_name: object) -> set[str]:
        """Every name ``migrate(name, new_name=)`` creates, renames or writes: ``name``,
        the new collection and, when ``name`` is a collection rather than an alias, the
        name it is retired under (``docs`` -> ``docs-v1``); a resumed run's target."""
        names = {str(name)} | ({str(new_name)} if new_name is not None else set())
        if not isinstance(name, str):
            return names  # the engine names what is wrong
        aliases = database.list_aliases()
        collections = set(database.list_collections())
        if name not in aliases and name not in collections:
            return names  # the engine says it is not found
        source = aliases.get(name, name)
        retired, default_new = version_names(
            source, lambda candidate: candidate in aliases or candidate in collections
        )
        if name not in aliases:
            names.add(retired)
        for migration in database.list_migrations():
            status = migration.status()
            if status.alias == name and status.state == "running":
                return names | {status.target}  # resumed: new_name is not used
        return names | {default_new if new_name is None else str(new_name)}

    @app.post(
        "/v1/migrations",
        tags=["migrations"],
        summary="migrate (in the background)",
        responses=errors(404, 409),
    )
    def migrate(request: Request, body: MigrateBody) -> Response:
        key = allow(request, write=True, collection=str(body.name))
        if key is not None and key.collections is not None:
            # A key for some names must hold every name the migration touches, or it
            # could create and rename collections outside them (issue 15, defect 5).
            names = migration_names(db(request), body.name, body.new_name)
            key_check(key, write=True, names=names)
        migration = db(request).migrate(
            body.name,
            embedder=body.embedder,
            reduce=body.reduce,
            new_name=body.new_name,
            background=True,
        )
        return migration_reply(request, migration, running=True)

    @app.get("/v1/migrations", tags=["migrations"], summary="list_migrations", responses=errors())
    def list_migrations(request: Request) -> Response:
        key = allow(request, write=False)
        replies = []
        for migration in db(request).list_migrations():
            status = migration.status()
            if key is None or key.allows(status.alias):
                replies.append({"id": migration.id, "status": migration_wire(request, status)})
        return json_response(replies)

    @app.get(
        "/v1/migrations/{migration_id}",
        tags=["migrations"],
        summary="Migration status; ?wait=SECONDS waits for a background run to end",
        responses=errors(404),
    )
    def migration_status(
        request: Request,
        migration_id: int,
        wait: float = Query(0.0, ge=0.0, allow_inf_nan=False, description="At most 30 s."),
    ) -> Response:
        migration = find_migration(request, migration_id, write=False)
        try:
            migration.wait(min(wait, 30.0))
        except TimeoutError:
            return migration_reply(request, migration, running=True)
        except Exception:  # the run failed: status().error says how
            pass
        return migration_reply(request, migration, running=False)

    @app.post(
        "/v1/migrations/{migration_id}/stop",
        tags=["migrations"],
        summary="Migration.stop",
        responses=errors(404),
    )
    def stop_migration(request: Request, migration_id: int) -> Response:
        migration = find_migration(request, migration_id, write=True)
        migration.stop()
        return migration_reply(request, migration, running=False)

    # -- records -----------------------------------------------------------------------

    def write_arguments(body: WriteBody) -> dict[str, Any]:
        ids = body.ids
        batch(
            max(
                len(ids) if isinstance(ids, list) else 1,
                rows_of(body.vectors),
                len(body.images) if isinstance(body.images, list) else 0,
            ),
            "rows",
        )
        return {
            "vectors": decode_array(body.vectors),
            "documents": body.documents,
            "metadatas": body.metadatas,
            "model": body.model,
            "images": None if body.images is None else images(body.images),
        }

    @app.post(
        "/v1/collections/{name}/records",
        tags=["records"],
        summary="add",
        responses=errors(404, 409),
    )
    def add(request: Request, name: str, body: WriteBody) -> Response:
        collection(request, name, write=True).add(body.ids, **write_arguments(body))
        return json_response({"written": True})

    @app.put(
        "/v1/collections/{name}/records",
        tags=["records"],
        summary="upsert",
        responses=errors(404, 409),
    )
    def upsert(request: Request, name: str, body: WriteBody) -> Response:
        collection(request, name, write=True).upsert(body.ids, **write_arguments(body))
        return json_response({"written": True})

    @app.patch(
        "/v1/collections/{name}/records",
        tags=["records"],
        summary="update",
        responses=errors(404, 409),
    )
    def update(request: Request, name: str, body: WriteBody) -> Response:
        collection(request, name, write=True).update(body.ids, **write_arguments(body))
        return json_response({"written": True})

    @app.post(
        "/v1/collections/{name}/delete", tags=["records"], summary="delete", responses=errors(404)
    )
    def delete(request: Request, name: str, body: DeleteBody) -> Response:
        found = collection(request, name, write=True)
        deleted = found.delete(body.ids, where=body.where, where_document=body.where_document)
        return json_response({"deleted": deleted})

    @app.post("/v1/collections/{name}/get", tags=["records"], summary="get", responses=errors(404))
    def get(request: Request, name: str, body: GetBody) -> Response:
        if isinstance(body.ids, list):
            batch(len(body.ids), "ids")
        result = collection(request, name, write=False).get(
            body.ids,
            where=body.where,
            limit=body.limit,
            offset=body.offset,
            include=body.include,
            where_document=body.where_document,
        )
        return json_response(get_result_to_wire(result, form(request)))

    @app.post(
        "/v1/collections/{name}/scroll",
        tags=["records"],
        summary="scroll, a page a call",
        responses=errors(404),
    )
    def scroll(request: Request, name: str, body: ScrollBody) -> Response:
        found = collection(request, name, write=False)
        token = body.after
        if token is None:
            if isinstance(body.batch, int):
                batch(body.batch, "rows per page")
            pages = found.scroll(
                batch=body.batch,
                where=body.where,
                where_document=body.where_document,
                include=body.include,
            )
        else:
            pages = cursors.take(token, name)
        page = next(pages, None)  # the first page also checks the arguments
        if page is None:
            return json_response({"page": None, "after": None})
        if token is None:
            token = cursors.open(name, pages)
        else:
            cursors.put_back(token, name, pages)
        return json_response({"page": get_result_to_wire(page, form(request)), "after": token})

    @app.get(
        "/v1/collections/{name}/count", tags=["records"], summary="count", responses=errors(404)
    )
    def count(request: Request, name: str) -> Response:
        return json_response({"count": collection(request, name, write=False).count()})

    @app.post(
        "/v1/collections/{name}/query", tags=["search"], summary="query", responses=errors(404, 409)
    )
    def query(request: Request, name: str, body: QueryBody) -> Response:
        batch(
            max(
                rows_of(body.vectors),
                texts_count(body.texts) if isinstance(body.texts, list | str) else 0,
                len(body.images) if isinstance(body.images, list) else 0,
            ),
            "queries",
        )
        found = collection(request, name, write=False)
        weights = body.hybrid_weights
        result = found.query(
            vectors=decode_array(body.vectors),
            texts=body.texts,
            k=body.k,
            where=body.where,
            include=body.include,
            exact=body.exact,
            model=body.model,
            params=body.params,
            images=None if body.images is None else images(body.images),
            explain=body.explain,
            where_document=body.where_document,
            hybrid=body.hybrid,
            hybrid_weights=tuple(weights) if isinstance(weights, list) else weights,
        )
        return json_response(query_result_to_wire(result, form(request)))

    # -- index -------------------------------------------------------------------------

    @app.post(
        "/v1/collections/{name}/optimize", tags=["index"], summary="optimize", responses=errors(404)
    )
    def optimize(request: Request, name: str) -> Response:
        collection(request, name, write=True).optimize()
        return json_response({"optimized": True})

    @app.get(
        "/v1/collections/{name}/index",
        tags=["index"],
        summary="index_status",
        responses=errors(404),
    )
    def index_status(request: Request, name: str) -> Response:
        status = collection(request, name, write=False).index_status()
        return json_response(dataclasses.asdict(status))

    @app.post(
        "/v1/collections/{name}/evaluate", tags=["index"], summary="evaluate", responses=errors(404)
    )
    def evaluate(request: Request, name: str, body: EvaluateBody) -> Response:
        batch(rows_of(body.queries), "queries")
        report = collection(request, name, write=False).evaluate(
            decode_array(body.queries), k=body.k, sample=body.sample
        )
        return json_response(dataclasses.asdict(report))

    @app.put(
        "/v1/collections/{name}/recall_target",
        tags=["index"],
        summary="set_recall_target",
        responses=errors(404),
    )
    def set_recall_target(request: Request, name: str, body: RecallTargetBody) -> Response:
        collection(request, name, write=True).set_recall_target(body.target)
        return json_response({"recall_target": body.target})

    @app.post(
        "/v1/collections/{name}/analyze",
        tags=["analysis"],
        summary="analyze",
        responses=errors(404),
    )
    def analyze(request: Request, name: str, body: AnalyzeBody) -> Response:
        report = collection(request, name, write=False).analyze(sample=body.sample, k=body.k)
        return json_response(report.to_dict())

    @app.post("/v1/collections/{name}/map", tags=["analysis"], summary="map", responses=errors(404))
    def map_records(request: Request, name: str, body: MapBody) -> Response:
        found = collection(request, name, write=False)
        space_map = found.map(method=body.method, sample=body.sample, where=body.where)
        return json_response(space_map.to_dict())

    return app


def limited(app: FastAPI, *, max_body: int = DEFAULT_MAX_BODY) -> ASGIApp:
    """``app`` behind the body size limit and the request metrics (what uvicorn serves)."""
    return Limits(app, max_body=max_body, metrics=app.state.metrics)
