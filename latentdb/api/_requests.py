"""Request normalisation, written once: every implementation of :class:`Collection`
(the embedded engine, the HTTP client, the sharded collection) receives its calls as
these checked requests, so an argument is refused the same way, with the same error,
whichever transport it was sent to.

The abstract :class:`~latentdb.api.Collection` builds them; the embedding helpers at
the end are for the implementations that embed in this process (the engine, and the
sharded collection's driver).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from latentdb.api._progress import progress_bar
from latentdb.api._validation import (
    MAX_K,
    check_callable,
    check_documents,
    check_flag,
    check_ids,
    check_include,
    check_metadatas,
    check_non_negative,
    check_search_params,
    check_texts,
    check_write_model,
)
from latentdb.embed import Embedder, ImageInput, get_embedder
from latentdb.errors import EmbedderError, InvalidArgumentError, ModelMismatchError
from latentdb.query import (
    Condition,
    and_filters,
    candidates,
    compile_where,
    compile_where_document,
    parse_where,
)
from latentdb.store import SqlFilter

if TYPE_CHECKING:
    from latentdb.api._collection import Collection
    from latentdb.space import LatentSpace


FloatMatrix = npt.NDArray[np.float32]
Where = Mapping[str, Any]
Progress = Callable[[int], None]
WriteMode = Literal["add", "upsert", "update"]

GET_FIELDS = ("vectors", "documents", "metadatas")
QUERY_FIELDS = ("distances", "documents", "metadatas", "vectors")


def sql_filters(where: Where | None, where_document: Where | None) -> SqlFilter | None:
    """Both filters as one SQL condition (None for none).

    Raises:
        FilterError: either is malformed.
    """
    filters = [f for f in (compile_where(where), compile_where_document(where_document)) if f]
    return and_filters(*filters) if filters else None


class WriteRequest(NamedTuple):
    """A checked ``add``, ``upsert`` or ``update``.

    Attributes:
        mode: Which of the three.
        ids: The ids, checked (distinct, valid Unicode).
        documents: Checked, one per id, or None when not given.
        metadatas: One dict (or None) per id as given, or None when not given.
        metadata_json: ``metadatas`` checked and encoded as the store keeps them.
        vectors: The vectors as given, checked against the space (shape, dimension,
            finite) but not normalized, or None.
        prepared: ``vectors`` as the space stores them (float32, unit rows where the
            space normalizes), or None.
        images: The images to embed, or None.
        model: ``model=`` as given (already checked against the space).
        progress: The caller's progress callback.
        embeds: Whether the collection's model must make the vectors (from
            ``images``, else from ``documents``).
    """

    mode: WriteMode
    ids: list[str]
    documents: list[str | None] | None
    metadatas: list[Any] | None
    metadata_json: list[str | None] | None
    vectors: npt.NDArray[Any] | None
    prepared: FloatMatrix | None
    images: Sequence[ImageInput] | None
    model: str | None
    progress: Progress | None
    embeds: bool

    @property
    def size(self) -> int:
        """The number of ids."""
        return len(self.ids)


def write_request(
    collection: Collection,
    mode: WriteMode,
    ids: object,
    vectors: object,
    documents: object,
    metadatas: object,
    model: str | None,
    progress: Progress | None,
    images: Sequence[ImageInput] | None,
) -> WriteRequest:
    """Check a write's arguments against ``collection`` (which must not change during
    the call: through an alias, its target pinned).

    Raises:
        InvalidArgumentError, InvalidIdError, InvalidMetadataError,
        DimensionMismatchError, InvalidVectorError, ModelRequiredError,
        ModelMismatchError: bad input; nothing may be written.
    """
    id_list = check_ids(ids)
    count = len(id_list)
    document_list = check_documents(documents, count)
    metadata_json = check_metadatas(metadatas, count)
    metadata_list = None if metadatas is None else list(metadatas)  # type: ignore[call-overload]
    check_callable(progress, "progress")
    space = collection.space
    fields = (id_list, document_list, metadata_list, metadata_json)
    if mode == "update":
        if vectors is None and images is None and document_list is None and metadata_list is None:
            raise InvalidArgumentError("update needs vectors=, images=, documents= or metadatas=")
        if not (
            vectors is not None
            or images is not None
            or (document_list is not None and collection.embedder is not None)
        ):
            space.check_model(model)
            return WriteRequest(mode, *fields, None, None, None, model, progress, False)
    if images is not None and vectors is not None:
        raise InvalidArgumentError("give vectors= or images=, not both")
    check_write_model(
        space,
        model,
        vectors=vectors is not None,
        required=collection.require_model,
        collection=collection.name,
    )
    if vectors is None:
        if images is None and document_list is None and collection.embedder is not None:
            raise InvalidArgumentError("give vectors=, images= or documents= to embed")
        return WriteRequest(mode, *fields, None, None, images, model, progress, True)
    prepared = space.prepare(vectors, rows=count)
    given = np.asarray(vectors)
    return WriteRequest(mode, *fields, given, prepared, None, model, progress, False)


def write_vectors(
    collection: Collection, request: WriteRequest
) -> tuple[npt.NDArray[Any], FloatMatrix] | tuple[None, None]:
    """A write's vectors, as given or as the collection's model makes them (checked
    against the space, not normalized), and as the space stores them; (None, None)
    for an update of fields only.

    Raises:
        EmbedderError, ModelMismatchError: no model, a drifted one, or no document.
    """
    if not request.embeds:
        if request.vectors is None or request.prepared is None:
            return None, None
        return request.vectors, request.prepared
    if request.images is not None:
        made = embed_images(collection, request.images, request.size, request.progress)
    else:
        made = embed_texts(collection, request.documents or [], request.progress)
    return made, collection.space.prepare(made, rows=request.size)


class QueryRequest(NamedTuple):
    """A checked ``query``.

    Attributes:
        fields: The fields to return (of :data:`QUERY_FIELDS`).
        k: Neighbours per query.
        depth: Neighbours to search for: ``k``, or more for a hybrid fusion.
        vectors: The query vectors as given, or None (texts or images).
        queries: ``vectors`` as the space compares them, or None until embedded.
        texts, images: The query texts (checked) or images, or None.
        model, params, exact, explain, hybrid, weights: As given, checked.
        where, where_document: The filters as given.
        condition, document: The filters parsed, or None.
    """

    fields: frozenset[str]
    k: int
    depth: int
    vectors: object
    queries: FloatMatrix | None
    texts: list[str] | None
    images: Sequence[ImageInput] | None
    model: str | None
    params: dict[str, int] | None
    exact: bool
    explain: bool
    hybrid: bool
    weights: tuple[float, float]
    where: Where | None
    where_document: Where | None
    condition: Condition | None
    document: SqlFilter | None

    @property
    def filtered(self) -> bool:
        """Whether a filter limits the rows."""
        return self.condition is not None or self.document is not None


def query_request(
    space: LatentSpace,
    vectors: object,
    texts: object,
    images: Sequence[ImageInput] | None,
    k: object,
    where: Where | None,
    include: object,
    exact: object,
    model: str | None,
    params: object,
    explain: object,
    where_document: Where | None,
    hybrid: object,
    hybrid_weights: object,
) -> QueryRequest:
    """Check a query's arguments against ``space``.

    Raises:
        InvalidArgumentError, DimensionMismatchError, InvalidVectorError,
        ModelMismatchError, FilterError: bad input.
    """
    # Written for speed: a one-vector query should cost little beyond the graph walk.
    if (
        vectors is not None
        and texts is None
        and images is None
        and where is None
        and where_document is None
        and params is None
        and model is None
        and exact is False
        and explain is False
        and hybrid is False
        and type(k) is int
        and 0 < k <= MAX_K
    ):  # the common query: vectors and k, checked in a few calls
        return QueryRequest(
            check_include(include, QUERY_FIELDS), k, k, vectors,
            space.prepare(vectors, copy=False), None, None, None, None,
            False, False, False, (1.0, 1.0), None, None, None, None,
        )  # fmt: skip
    fields = check_include(include, QUERY_FIELDS)
    count = check_non_negative(k, "k", minimum=1, maximum=MAX_K)
    if (vectors is not None) + (texts is not None) + (images is not None) != 1:
        raise InvalidArgumentError("query needs exactly one of vectors=, texts= or images=")
    exact = check_flag(exact, "exact")
    explain = check_flag(explain, "explain")
    hybrid = check_flag(hybrid, "hybrid")
    checked_params = check_search_params(params)
    text_list = None if texts is None else check_texts(texts)
    depth, weights = count, (1.0, 1.0)
    if hybrid:
        if texts is None:
            raise InvalidArgumentError("hybrid search needs texts= (the words to match)")
        weights = _check_weights(hybrid_weights)
        depth = candidates(count)
    space.check_model(model)
    queries = None if vectors is None else space.prepare(vectors, copy=False)
    return QueryRequest(
        fields=fields,
        k=count,
        depth=depth,
        vectors=vectors,
        queries=queries,
        texts=text_list,
        images=images,
        model=model,
        params=checked_params,
        exact=exact,
        explain=explain,
        hybrid=hybrid,
        weights=weights,
        where=where,
        where_document=where_document,
        condition=parse_where(where),
        document=compile_where_document(where_document),
    )


def query_vectors(collection: Collection, request: QueryRequest) -> npt.NDArray[Any]:
    """The query's vectors as given or as the collection's model makes them (not
    normalized)."""
    if request.images is not None:
        return embed_images(collection, request.images, None, None)
    if request.texts is not None:
        return embed_texts(collection, request.texts, None)
    return np.asarray(request.vectors)


def _check_weights(weights: object) -> tuple[float, float]:
    """Two finite, non-negative weights, not both zero."""
    try:
        vector, text = (float(w) for w in weights)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"hybrid_weights must be two numbers (vector, text); got {weights!r}"
        ) from None
    if not (np.isfinite(vector) and np.isfinite(text)) or min(vector, text) < 0:
        raise InvalidArgumentError(f"hybrid_weights must be finite and >= 0; got {weights!r}")
    if vector == text == 0:
        raise InvalidArgumentError("hybrid_weights must not both be 0")
    return vector, text


class GetRequest(NamedTuple):
    """A checked ``get`` or ``scroll``.

    Attributes:
        fields: The fields to return (of :data:`GET_FIELDS`).
        ids: The ids to read (repeats allowed), or None for every match.
        limit, offset: The page (``scroll``: ``limit`` is the batch).
        where, where_document: The filters as given.
        filters: Both filters as one SQL condition, or None.
    """

    fields: frozenset[str]
    ids: list[str] | None
    limit: int | None
    offset: int
    where: Where | None
    where_document: Where | None
    filters: SqlFilter | None


def get_request(
    ids: object,
    *,
    where: Where | None,
    limit: object,
    offset: object,
    include: object,
    where_document: Where | None,
) -> GetRequest:
    """Check a ``get``'s (or, with ``limit`` the batch, a ``scroll``'s) arguments.

    Raises:
        InvalidArgumentError, InvalidIdError, FilterError: bad input.
    """
    fields = check_include(include, GET_FIELDS)
    id_list = None if ids is None else check_ids(ids, allow_empty=True, distinct=False)
    page = None if limit is None else check_non_negative(limit, "limit")
    start = check_non_negative(offset, "offset")
    filters = sql_filters(where, where_document)
    return GetRequest(fields, id_list, page, start, where, where_document, filters)


def scroll_request(
    batch: object, where: Where | None, where_document: Where | None, include: object
) -> GetRequest:
    """Check a ``scroll``'s arguments: a :class:`GetRequest` whose ``limit`` is the
    batch.

    Raises:
        InvalidArgumentError, FilterError: bad input.
    """
    check_non_negative(batch, "batch", minimum=1)
    return get_request(
        None,
        where=where,
        limit=batch,
        offset=0,
        include=include,
        where_document=where_document,
    )


# -- embedding in this process -------------------------------------------------------


def collection_embedder(collection: Collection) -> Embedder:
    """The collection's own model, refusing a drifted one.

    Raises:
        EmbedderError: the collection has no embedder.
        ModelMismatchError: the embedder's fingerprint is not the collection's.
    """
    name, space = collection.embedder, collection.space
    if name is None:
        raise EmbedderError(
            f"collection {collection.name!r} has no embedder (its vectors come from model "
            f"{space.model!r}): pass vectors= instead of text or images"
        )
    embedder = get_embedder(name)
    if embedder.fingerprint != space.fingerprint:
        raise ModelMismatchError(
            f"embedder {name!r} now has fingerprint {embedder.fingerprint}, but collection "
            f"{collection.name!r} was built with {space.fingerprint}: the model changed; "
            "re-embed into a new collection (Database.migrate)"
        )
    return embedder


def embed_texts(
    collection: Collection, texts: Sequence[str | None], progress: Progress | None
) -> FloatMatrix:
    """Embed texts with the collection's own model.

    Raises:
        EmbedderError: a text is missing, or the collection has no model.
    """
    missing = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if missing:
        raise EmbedderError(
            f"no vector and no document to embed at position {missing[0]}: give a "
            "document or a vector for every id"
        )
    embedder = collection_embedder(collection)
    with progress_bar("embedding texts", len(texts), progress) as report:
        return embedder.embed_texts([t for t in texts if isinstance(t, str)], progress=report)


def embed_images(
    collection: Collection,
    images: Sequence[ImageInput],
    count: int | None,
    progress: Progress | None,
) -> FloatMatrix:
    """Embed images with the collection's own model (one per id when ``count``).

    Raises:
        InvalidArgumentError: not a list, or not one per id.
        EmbedderError: the model does not take images.
    """
    if isinstance(images, str | bytes) or not isinstance(images, Sequence):
        raise InvalidArgumentError(
            "images must be a list of file paths, image bytes or PIL images; "
            f"got {type(images).__name__}"
        )
    if count is not None and len(images) != count:
        raise InvalidArgumentError(f"got {len(images)} images for {count} ids")
    if not images:
        raise InvalidArgumentError("images must not be empty")
    embedder = collection_embedder(collection)
    if "image" not in embedder.modalities:
        raise EmbedderError(
            f"the model of collection {collection.name!r} ({collection.space.model}) embeds "
            f"{', '.join(sorted(embedder.modalities))} only, not images"
        )
    with progress_bar("embedding images", len(images), progress) as report:
        return embedder.embed_images(list(images), progress=report)
