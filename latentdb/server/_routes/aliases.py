"""Aliases: names that point at a collection and switch atomically."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import SkipValidation

from latentdb.server._access import Authorized
from latentdb.server._models import Body
from latentdb.server._openapi import responses
from latentdb.server._plumbing import AnsweringRoute, json_response
from latentdb.server._replies import AliasReply, DeletedReply

__all__ = ["router"]


class CreateAliasBody(Body):
    """Arguments of ``create_alias``."""

    alias: SkipValidation[str]
    collection: SkipValidation[str]


class AliasBody(Body):
    """The collection an alias is switched to."""

    collection: SkipValidation[str]


router = APIRouter(prefix="/v1/aliases", tags=["aliases"], route_class=AnsweringRoute)


@router.get("", summary="list_aliases", response_model=dict[str, str], responses=responses())
def list_aliases(access: Authorized) -> Response:
    access.check(write=False)
    aliases = access.database.list_aliases()
    return json_response({a: c for a, c in aliases.items() if access.allows(a)})


@router.post("", summary="create_alias", response_model=AliasReply, responses=responses(404, 409))
def create_alias(body: CreateAliasBody, access: Authorized) -> Response:
    access.check(str(body.alias), str(body.collection), write=True)
    access.database.create_alias(body.alias, body.collection)
    return json_response({"alias": body.alias, "collection": body.collection})


@router.put(
    "/{alias}",
    summary="switch_alias",
    response_model=AliasReply,
    responses=responses(404, write=True),
)
def switch_alias(alias: str, body: AliasBody, access: Authorized) -> Response:
    access.check(alias, str(body.collection), write=True)
    access.database.switch_alias(alias, body.collection)
    return json_response({"alias": alias, "collection": body.collection})


@router.delete(
    "/{alias}",
    summary="delete_alias",
    response_model=DeletedReply,
    responses=responses(404, write=True),
)
def delete_alias(alias: str, access: Authorized) -> Response:
    access.check(alias, write=True)
    access.database.delete_alias(alias)
    return json_response({"deleted": alias})
