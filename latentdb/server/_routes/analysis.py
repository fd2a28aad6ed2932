"""Understanding a collection's space: the report on it, 2-D maps of it, and the drift
between two collections' spaces."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import SkipValidation

from latentdb.api import Collection, Database
from latentdb.server._access import Authorized
from latentdb.server._models import WHERE, Body, Where, argument
from latentdb.server._openapi import responses
from latentdb.server._plumbing import AnsweringRoute, json_response
from latentdb.server._replies import SpaceComparisonReply, SpaceMapReply, SpaceReportReply

__all__ = ["compare_router", "router"]


class AnalyzeBody(Body):
    """Arguments of ``analyze``."""

    sample: SkipValidation[int] = argument(Collection.analyze, "sample")
    k: SkipValidation[int] = argument(Collection.analyze, "k")


class MapBody(Body):
    """Arguments of ``map`` (and ``project``)."""

    method: SkipValidation[Literal["pca", "umap", "tsne"]] = argument(
        Collection.map, "method", "pca, umap or tsne."
    )
    sample: SkipValidation[int] = argument(Collection.map, "sample")
    where: SkipValidation[Where | None] = argument(Collection.map, "where", WHERE)


class CompareBody(Body):
    """Arguments of ``compare``."""

    a: SkipValidation[str]
    b: SkipValidation[str]
    sample: SkipValidation[int] = argument(Database.compare, "sample")
    k: SkipValidation[int] = argument(Database.compare, "k")


router = APIRouter(prefix="/v1/collections/{name}", tags=["analysis"], route_class=AnsweringRoute)
compare_router = APIRouter(prefix="/v1", tags=["analysis"], route_class=AnsweringRoute)


@router.post(
    "/analyze", summary="analyze", response_model=SpaceReportReply, responses=responses(404)
)
def analyze(name: str, body: AnalyzeBody, access: Authorized) -> Response:
    report = access.collection(name, write=False).analyze(sample=body.sample, k=body.k)
    return json_response(report.to_dict())


@router.post("/map", summary="map", response_model=SpaceMapReply, responses=responses(404))
def map_records(name: str, body: MapBody, access: Authorized) -> Response:
    found = access.collection(name, write=False)
    space_map = found.map(method=body.method, sample=body.sample, where=body.where)
    return json_response(space_map.to_dict())


@compare_router.post(
    "/compare", summary="compare", response_model=SpaceComparisonReply, responses=responses(404)
)
def compare(body: CompareBody, access: Authorized) -> Response:
    # Both are read: the key must allow reading each (a name it may not use is refused
    # before the lookup, so no answer tells which names exist).
    names = [name for name in (body.a, body.b) if isinstance(name, str)]
    access.check(*names, write=False)
    comparison = access.database.compare(body.a, body.b, sample=body.sample, k=body.k)
    return json_response(comparison.to_dict())
