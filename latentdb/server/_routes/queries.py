"""Search: the k nearest records to each query, and the recall of the index measured
against the exact answer."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import SkipValidation

from latentdb.api import Collection
from latentdb.client import decode_array, query_result_to_wire, rows_of, texts_count
from latentdb.server._access import Authorized, VectorForm, images
from latentdb.server._models import (
    IMAGES,
    VECTORS,
    WHERE,
    WHERE_DOCUMENT,
    Body,
    QueryField,
    Vectors,
    Where,
    argument,
)
from latentdb.server._openapi import responses
from latentdb.server._plumbing import AnsweringRoute, json_response
from latentdb.server._replies import QueryReply, RecallReportReply

__all__ = ["router"]


class QueryBody(Body):
    """Arguments of ``query``."""

    vectors: SkipValidation[Vectors | None] = argument(Collection.query, "vectors", VECTORS)
    texts: SkipValidation[list[str] | str | None] = argument(Collection.query, "texts")
    k: SkipValidation[int] = argument(Collection.query, "k")
    where: SkipValidation[Where | None] = argument(Collection.query, "where", WHERE)
    include: SkipValidation[list[QueryField]] = argument(Collection.query, "include")
    exact: SkipValidation[bool] = argument(Collection.query, "exact")
    model: SkipValidation[str | None] = argument(Collection.query, "model")
    params: SkipValidation[dict[str, int] | None] = argument(
        Collection.query, "params", 'Search knobs for this call: {"ef": 128}.'
    )
    images: SkipValidation[list[str] | None] = argument(Collection.query, "images", IMAGES)
    explain: SkipValidation[bool] = argument(Collection.query, "explain")
    where_document: SkipValidation[Where | None] = argument(
        Collection.query, "where_document", WHERE_DOCUMENT
    )
    hybrid: SkipValidation[bool] = argument(Collection.query, "hybrid")
    hybrid_weights: SkipValidation[tuple[float, float]] = argument(
        Collection.query, "hybrid_weights"
    )


class EvaluateBody(Body):
    """Arguments of ``evaluate``."""

    queries: SkipValidation[Vectors | None] = argument(Collection.evaluate, "queries", VECTORS)
    k: SkipValidation[int] = argument(Collection.evaluate, "k")
    sample: SkipValidation[int] = argument(Collection.evaluate, "sample")


router = APIRouter(prefix="/v1/collections/{name}", route_class=AnsweringRoute)


@router.post(
    "/query",
    tags=["search"],
    summary="query",
    response_model=QueryReply,
    responses=responses(404, 409),
)
def query(name: str, body: QueryBody, access: Authorized, form: VectorForm) -> Response:
    access.batch(
        max(
            rows_of(body.vectors),
            texts_count(body.texts) if isinstance(body.texts, list | str) else 0,
            len(body.images) if isinstance(body.images, list) else 0,
        ),
        "queries",
    )
    found = access.collection(name, write=False)
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
    return json_response(query_result_to_wire(result, form))


@router.post(
    "/evaluate",
    tags=["index"],
    summary="evaluate",
    response_model=RecallReportReply,
    responses=responses(404),
)
def evaluate(name: str, body: EvaluateBody, access: Authorized) -> Response:
    access.batch(rows_of(body.queries), "queries")
    report = access.collection(name, write=False).evaluate(
        decode_array(body.queries), k=body.k, sample=body.sample
    )
    return json_response(dataclasses.asdict(report))
