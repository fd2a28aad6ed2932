"""The service's own routes: liveness (open, without a key) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from latentdb._version import __version__
from latentdb.server._access import Authorized
from latentdb.server._openapi import responses
from latentdb.server._plumbing import AnsweringRoute, json_response
from latentdb.server._replies import HealthReply

__all__ = ["health", "metrics"]

# Answered without an API key (OPEN_PATHS): included without the key's statuses.
health = APIRouter(tags=["service"], route_class=AnsweringRoute)
metrics = APIRouter(tags=["service"], route_class=AnsweringRoute)


@health.get(
    "/healthz",
    summary="Liveness: 200 while the database is open",
    response_model=HealthReply,
    responses=responses(),
)
def healthz(request: Request) -> Response:
    request.app.state.database.list_collections()  # raises DatabaseClosedError once closed
    return json_response({"status": "ok", "version": __version__})


@metrics.get(
    "/metrics",
    summary="Prometheus metrics (needs a read key)",
    response_class=PlainTextResponse,
    responses=responses(),
)
def prometheus(request: Request, access: Authorized) -> Response:
    access.check(write=False)
    database = access.database
    rows, recalls = {}, {}
    for name in database.list_collections():
        if access.allows(name):
            collection = database.get_collection(name)
            rows[name] = collection.count()
            status = collection.index_status()
            if status.live_recall is not None:
                recalls[name] = (status.live_recall, status.live_queries)
    return PlainTextResponse(
        request.app.state.metrics.render(rows, recalls),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
