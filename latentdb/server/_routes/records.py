"""Records: writes (add, upsert, update, delete) and reads (get, scroll, count)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field, SkipValidation

from latentdb.api import Collection
from latentdb.client import decode_array, get_result_to_wire, rows_of
from latentdb.server._access import Access, Authorized, Scrolls, VectorForm, images
from latentdb.server._models import (
    IMAGES,
    VECTORS,
    WHERE,
    WHERE_DOCUMENT,
    Body,
    GetField,
    Ids,
    Vectors,
    Where,
    argument,
)
from latentdb.server._openapi import responses
from latentdb.server._plumbing import AnsweringRoute, json_response
from latentdb.server._replies import (
    CountReply,
    DeletedCountReply,
    GetReply,
    ScrollReply,
    WrittenReply,
)

__all__ = ["router"]


class WriteBody(Body):
    """Arguments of ``add``, ``upsert`` and ``update`` (their signatures are one)."""

    ids: SkipValidation[Ids] = Field(description="String ids (or one string).")
    vectors: SkipValidation[Vectors | None] = argument(Collection.add, "vectors", VECTORS)
    documents: SkipValidation[list[str | None] | None] = argument(Collection.add, "documents")
    metadatas: SkipValidation[list[dict[str, Any] | None] | None] = argument(
        Collection.add, "metadatas"
    )
    model: SkipValidation[str | None] = argument(Collection.add, "model")
    images: SkipValidation[list[str] | None] = argument(Collection.add, "images", IMAGES)


class DeleteBody(Body):
    """Arguments of ``delete``."""

    ids: SkipValidation[Ids | None] = argument(Collection.delete, "ids")
    where: SkipValidation[Where | None] = argument(Collection.delete, "where", WHERE)
    where_document: SkipValidation[Where | None] = argument(
        Collection.delete, "where_document", WHERE_DOCUMENT
    )


class GetBody(Body):
    """Arguments of ``get``."""

    ids: SkipValidation[Ids | None] = argument(Collection.get, "ids")
    where: SkipValidation[Where | None] = argument(Collection.get, "where", WHERE)
    limit: SkipValidation[int | None] = argument(Collection.get, "limit")
    offset: SkipValidation[int] = argument(Collection.get, "offset")
    include: SkipValidation[list[GetField]] = argument(Collection.get, "include")
    where_document: SkipValidation[Where | None] = argument(
        Collection.get, "where_document", WHERE_DOCUMENT
    )


class ScrollBody(Body):
    """One page of ``scroll``: the first without ``after``, the next with the cursor the
    previous page returned."""

    batch: SkipValidation[int] = argument(Collection.scroll, "batch")
    where: SkipValidation[Where | None] = argument(Collection.scroll, "where", WHERE)
    where_document: SkipValidation[Where | None] = argument(
        Collection.scroll, "where_document", WHERE_DOCUMENT
    )
    include: SkipValidation[list[GetField]] = argument(Collection.scroll, "include")
    after: str | None = Field(None, description="The cursor the previous page returned.")


router = APIRouter(prefix="/v1/collections/{name}", tags=["records"], route_class=AnsweringRoute)


def _write_arguments(body: WriteBody, access: Access) -> dict[str, Any]:
    ids = body.ids
    access.batch(
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


def _writer(verb: str) -> Callable[[str, WriteBody, Access], Response]:
    """The route of the write ``verb`` (add, upsert, update): one body, one reply."""

    def write(name: str, body: WriteBody, access: Authorized) -> Response:
        found = access.collection(name, write=True)
        getattr(found, verb)(body.ids, **_write_arguments(body, access))
        return json_response({"written": True})

    write.__name__ = verb
    return write


for _method, _verb in (("POST", "add"), ("PUT", "upsert"), ("PATCH", "update")):
    router.add_api_route(
        "/records",
        _writer(_verb),
        methods=[_method],
        summary=_verb,
        response_model=WrittenReply,
        responses=responses(404, 409),
    )


@router.post(
    "/delete",
    summary="delete",
    response_model=DeletedCountReply,
    responses=responses(404, write=True),
)
def delete(name: str, body: DeleteBody, access: Authorized) -> Response:
    found = access.collection(name, write=True)
    deleted = found.delete(body.ids, where=body.where, where_document=body.where_document)
    return json_response({"deleted": deleted})


@router.post("/get", summary="get", response_model=GetReply, responses=responses(404))
def get(name: str, body: GetBody, access: Authorized, form: VectorForm) -> Response:
    if isinstance(body.ids, list):
        access.batch(len(body.ids), "ids")
    result = access.collection(name, write=False).get(
        body.ids,
        where=body.where,
        limit=body.limit,
        offset=body.offset,
        include=body.include,
        where_document=body.where_document,
    )
    return json_response(get_result_to_wire(result, form))


@router.post(
    "/scroll", summary="scroll, a page a call", response_model=ScrollReply, responses=responses(404)
)
def scroll(
    name: str, body: ScrollBody, access: Authorized, form: VectorForm, cursors: Scrolls
) -> Response:
    found = access.collection(name, write=False)
    token = body.after
    if token is None:
        if isinstance(body.batch, int):
            access.batch(body.batch, "rows per page")
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
    return json_response({"page": get_result_to_wire(page, form), "after": token})


@router.get("/count", summary="count", response_model=CountReply, responses=responses(404))
def count(name: str, access: Authorized) -> Response:
    return json_response({"count": access.collection(name, write=False).count()})
