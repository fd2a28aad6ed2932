"""Collections: create, list, describe and delete them, and look after their index."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field, SkipValidation

from latentdb.api import INDEX_KINDS, Collection, Database
from latentdb.server._access import Authorized
from latentdb.server._models import Body, argument
from latentdb.server._openapi import responses
from latentdb.server._plumbing import AnsweringRoute, json_response
from latentdb.server._replies import (
    ClearedReply,
    CollectionReply,
    DeletedReply,
    IndexStatusReply,
    OptimizedReply,
    RecallTargetReply,
)

__all__ = ["router"]


class CreateCollectionBody(Body):
    """Arguments of ``create_collection`` / ``get_or_create_collection``."""

    name: SkipValidation[str] = Field(description="1-128 letters, digits, '.', '_', '-'.")
    dimension: SkipValidation[int | None] = argument(
        Database.create_collection, "dimension", "Required without an embedder."
    )
    metric: SkipValidation[Literal["cosine", "l2", "ip"]] = argument(
        Database.create_collection, "metric", "cosine, l2 or ip."
    )
    embedder: SkipValidation[str | None] = argument(
        Database.create_collection, "embedder", "A registered embedder, or null."
    )
    model: SkipValidation[str | None] = argument(
        Database.create_collection, "model", "Where the vectors come from (without an embedder)."
    )
    index: SkipValidation[str | dict[str, Any]] = argument(
        Database.create_collection,
        "index",
        f"{', '.join(INDEX_KINDS)}, or the fields of an IndexSpec.",
    )
    recall_target: SkipValidation[float] = argument(
        Database.create_collection, "recall_target", "Recall@10 approximate search is tuned to."
    )
    reduce: SkipValidation[int | None] = argument(
        Database.create_collection, "reduce", "Index a PCA projection to this many dimensions."
    )
    require_model: SkipValidation[bool] = argument(
        Database.create_collection,
        "require_model",
        "Writes of vectors must name their model (model=, the collection's); false "
        "accepts vectors without one. True needs model= without an embedder.",
    )
    get_or_create: bool = Field(False, description="Return the collection if it exists.")


class RecallTargetBody(Body):
    """Argument of ``set_recall_target``."""

    target: SkipValidation[float]


router = APIRouter(prefix="/v1/collections", route_class=AnsweringRoute)


def info(found: Collection) -> dict[str, Any]:
    """What the client needs to stand in for ``found``."""
    return {
        "name": found.name,
        "alias": found.alias,
        "space": found.space.to_dict(),
        "embedder": found.embedder,
        "recall_target": found.recall_target,
        "require_model": found.require_model,
    }


@router.get(
    "",
    tags=["collections"],
    summary="list_collections",
    response_model=list[str],
    responses=responses(),
)
def list_collections(access: Authorized) -> Response:
    access.check(write=False)
    names = access.database.list_collections()
    return json_response([name for name in names if access.allows(name)])


@router.post(
    "",
    tags=["collections"],
    summary="create_collection",
    response_model=CollectionReply,
    responses=responses(409),
)
def create_collection(body: CreateCollectionBody, access: Authorized) -> Response:
    access.check(str(body.name), write=True)
    database = access.database
    make = database.get_or_create_collection if body.get_or_create else None
    make = make or database.create_collection
    arguments = {field: value for field, value in body if field not in {"name", "get_or_create"}}
    return json_response(info(make(body.name, **arguments)))


@router.get(
    "/{name}",
    tags=["collections"],
    summary="get_collection",
    response_model=CollectionReply,
    responses=responses(404),
)
def get_collection(name: str, access: Authorized) -> Response:
    return json_response(info(access.collection(name, write=False)))


@router.delete(
    "/{name}",
    tags=["collections"],
    summary="delete_collection",
    response_model=DeletedReply,
    responses=responses(404, write=True),
)
def delete_collection(name: str, access: Authorized) -> Response:
    access.check(name, write=True)
    access.database.delete_collection(name)
    return json_response({"deleted": name})


# -- the index -------------------------------------------------------------------------


@router.post(
    "/{name}/optimize",
    tags=["index"],
    summary="optimize",
    response_model=OptimizedReply,
    responses=responses(404, write=True),
)
def optimize(name: str, access: Authorized) -> Response:
    access.collection(name, write=True).optimize()
    return json_response({"optimized": True})


@router.get(
    "/{name}/index",
    tags=["index"],
    summary="index_status",
    response_model=IndexStatusReply,
    responses=responses(404),
)
def index_status(name: str, access: Authorized) -> Response:
    status = access.collection(name, write=False).index_status()
    return json_response(dataclasses.asdict(status))


@router.delete(
    "/{name}/recorded_queries",
    tags=["index"],
    summary="clear_recorded_queries",
    response_model=ClearedReply,
    responses=responses(404, write=True),
)
def clear_recorded_queries(name: str, access: Authorized) -> Response:
    cleared = access.collection(name, write=True).clear_recorded_queries()
    return json_response({"cleared": cleared})


@router.put(
    "/{name}/recall_target",
    tags=["index"],
    summary="set_recall_target",
    response_model=RecallTargetReply,
    responses=responses(404, write=True),
)
def set_recall_target(name: str, body: RecallTargetBody, access: Authorized) -> Response:
    access.collection(name, write=True).set_recall_target(body.target)
    return json_response({"recall_target": body.target})
