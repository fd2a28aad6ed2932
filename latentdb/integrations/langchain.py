"""LangChain: a ``VectorStore`` over a latentdb collection, embedded or over HTTP.

Needs the ``langchain`` extra (``pip install 'latentdb[langchain]'``)::

    from langchain_core.documents import Document
    from latentdb.integrations.langchain import LatentDBVectorStore

    store = LatentDBVectorStore("notes", path="my.db")      # the collection's own model
    store.add_documents([Document("a cat sat", metadata={"lang": "en"})])
    store.similarity_search("kitten", k=1, filter={"lang": "en"})
    retriever = store.as_retriever(search_kwargs={"k": 4})

With ``embedding=`` (any LangChain ``Embeddings``) LangChain embeds, and the collection
records that model by name as an external one, so vectors of another model are refused;
every write names it (``model=``), as a collection that requires it
(``require_model``, the default) asks.
Without it, latentdb embeds with the collection's embedder (``"minilm"`` for a new one).

Scores are latentdb distances, smaller is closer (cosine: 1 - cos θ, l2: squared
Euclidean, ip: -⟨q, x⟩); ``similarity_search_with_relevance_scores`` turns them into
LangChain's larger-is-better relevance. Filters (``filter=``) are latentdb's ``where``
language, Chroma's operators plus ``$not``, ``$exists`` and ``$contains``, and
``where_document=`` filters on the text.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from latentdb._extras import needs_extra

with needs_extra("langchain", __name__):
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance

from latentdb.api import Collection, Database, QueryResult
from latentdb.embed import get_embedder
from latentdb.errors import (
    CollectionNotFoundError,
    EmbedderError,
    InvalidArgumentError,
    ModelMismatchError,
)
from latentdb.integrations._common import (
    DatabaseHolder,
    delete_every,
    open_database,
    refuse_unknown,
)
from latentdb.integrations._scores import relevance_function

__all__ = ["LatentDBVectorStore", "embeddings_model_name"]

Where = Mapping[str, Any]


def embeddings_model_name(embedding: Embeddings) -> str:
    """The model name a collection records for vectors from a LangChain ``Embeddings``:
    ``langchain/<class>`` plus ``:<model>`` when the object names its model (the
    ``model``, ``model_name`` or ``model_id`` attribute), e.g.
    ``"langchain/OpenAIEmbeddings:text-embedding-3-small"``."""
    name = f"langchain/{type(embedding).__name__}"
    for attribute in ("model", "model_name", "model_id"):
        value = getattr(embedding, attribute, None)
        if isinstance(value, str) and value:
            return f"{name}:{value}"
    return name


class LatentDBVectorStore(DatabaseHolder, VectorStore):
    """A LangChain vector store kept in a latentdb collection.

    Args:
        collection_name: The collection (or alias) to use; created if missing.
        embedding: A LangChain ``Embeddings`` that embeds texts and queries. A new
            collection is then created without an embedder, for vectors of the model
            :func:`embeddings_model_name` names, its dimension taken from one probe
            embedding. None: the collection embeds with its own model (``"minilm"``
            for a new one).
        path: A database folder or server URL to open with :func:`latentdb.connect`;
            :meth:`close` closes it.
        database: An open :class:`~latentdb.Database` (embedded or a server's client)
            to use instead of ``path``; left open by :meth:`close`.

    Raises:
        InvalidArgumentError: neither or both of ``path`` and ``database``.
        ModelMismatchError: the collection exists and holds vectors of another model
            than ``embedding``'s.
    """

    def __init__(
        self,
        collection_name: str = "langchain",
        *,
        embedding: Embeddings | None = None,
        path: str | os.PathLike[str] | None = None,
        database: Database | None = None,
    ) -> None:
        self._database, self._owned = open_database(path, database)
        self._embedding = embedding
        self._model = None if embedding is None else embeddings_model_name(embedding)
        try:
            self._collection = self._open_collection(collection_name)
        except BaseException:
            self.close()
            raise

    def _open_collection(self, name: str) -> Collection:
        try:
            collection = self._database.get_collection(name)
        except CollectionNotFoundError:
            if self._embedding is None:
                return self._database.get_or_create_collection(name)
            dimension = len(self._embedding.embed_query("latentdb dimension probe"))
            return self._database.get_or_create_collection(
                name, embedder=None, dimension=dimension, model=self._model
            )
        if self._model is not None and collection.space.model != self._model:
            raise ModelMismatchError(
                f"collection {name!r} holds vectors of model {collection.space.model!r}; "
                f"the embedding given is {self._model!r}: their latent spaces are not "
                "comparable (use another collection)"
            )
        return collection

    def __repr__(self) -> str:
        return f"LatentDBVectorStore({self._collection!r}, embedding={self._model!r})"

    @property
    def collection(self) -> Collection:
        """The latentdb collection the documents are kept in."""
        return self._collection

    @property
    def embeddings(self) -> Embeddings | None:
        """The LangChain embeddings in use, or None when the collection embeds."""
        return self._embedding

    # -- writes --------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store texts; a stored id is replaced (upsert).

        Args:
            texts: The texts.
            metadatas: One flat dict per text (str/int/float/bool values or non-empty
                lists of them), or None.
            ids: One id per text; a missing one (None or "") gets a new uuid4.
            batch_size: Write this many texts per transaction (default: all in one).

        Returns:
            The ids, in the order of ``texts``.

        Raises:
            InvalidArgumentError: ``metadatas`` or ``ids`` of another length, or an
                unknown keyword argument.
            InvalidMetadataError, DuplicateIdError: latentdb refuses the records.
        """
        refuse_unknown(kwargs, "add_texts")
        text_list = list(texts)
        count = len(text_list)
        for name, values in (("metadatas", metadatas), ("ids", ids)):
            if values is not None and len(values) != count:
                raise InvalidArgumentError(f"got {len(values)} {name} for {count} texts")
        given: Sequence[str | None] = ids if ids is not None else [None] * count
        id_list = [i or str(uuid.uuid4()) for i in given]
        step = count if batch_size is None else batch_size
        if step < 1 and count:
            raise InvalidArgumentError(f"batch_size must be at least 1; got {batch_size}")
        for start in range(0, count, max(step, 1)):
            stop = start + step
            self._upsert(
                id_list[start:stop],
                text_list[start:stop],
                None if metadatas is None else metadatas[start:stop],
            )
        return id_list

    def _upsert(
        self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]] | None
    ) -> None:
        if self._embedding is None:
            self._collection.upsert(ids, documents=texts, metadatas=metadatas)
        else:
            self._collection.upsert(
                ids,
                vectors=self._embedding.embed_documents(texts),
                documents=texts,
                metadatas=metadatas,
                model=self._model,
            )

    def delete(
        self,
        ids: list[str] | None = None,
        *,
        filter: Where | None = None,
        where_document: Where | None = None,
        **kwargs: Any,
    ) -> bool:
        """Delete documents by id, by filter, or both (ids that also pass the filter).

        Without ids or filters every document of the collection is deleted. Ids that
        are not stored are ignored.

        Returns:
            True.

        Raises:
            FilterError: a malformed filter.
        """
        refuse_unknown(kwargs, "delete")
        if ids is None and filter is None and where_document is None:
            delete_every(self._collection)
            return True
        self._collection.delete(ids, where=filter, where_document=where_document)
        return True

    # -- reads ---------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents among ``ids`` (missing ones are left out), in that order."""
        found = self._collection.get(list(ids), include=["documents", "metadatas"])
        documents = found.documents or [None] * len(found.ids)
        metadatas = found.metadatas or [None] * len(found.ids)
        return [
            _document(i, text, metadata)
            for i, text, metadata in zip(found.ids, documents, metadatas, strict=True)
        ]

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        *,
        filter: Where | None = None,
        where_document: Where | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` documents nearest ``query``, nearest first.

        Args:
            query: The text to search for.
            k: How many documents (fewer when fewer match).
            filter: A latentdb ``where`` filter on the metadata.
            where_document: A filter on the text (``$contains``, ``$match``...).
        """
        refuse_unknown(kwargs, "similarity_search")
        return _unscored(self._nearest(query, k, filter, where_document))

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        *,
        filter: Where | None = None,
        where_document: Where | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest ``query`` with their latentdb distance (smaller
        is closer: cosine 1 - cos θ, l2 squared Euclidean, ip -⟨q, x⟩), nearest first.

        Same arguments as :meth:`similarity_search`.
        """
        refuse_unknown(kwargs, "similarity_search_with_score")
        return self._nearest(query, k, filter, where_document)

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        *,
        filter: Where | None = None,
        where_document: Where | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` documents nearest a vector of the collection's space, nearest first."""
        refuse_unknown(kwargs, "similarity_search_by_vector")
        return _unscored(self._nearest(embedding, k, filter, where_document))

    def similarity_search_with_score_by_vector(
        self,
        embedding: Sequence[float] | npt.NDArray[np.float32],
        k: int = 4,
        *,
        filter: Where | None = None,
        where_document: Where | None = None,
    ) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search_with_score`, for a vector (d,)."""
        return self._nearest(embedding, k, filter, where_document)

    def _nearest(
        self,
        query: str | Sequence[float] | npt.NDArray[np.float32],
        k: int,
        filter: Where | None,
        where_document: Where | None,
    ) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest a text or a vector (d,), with their distances. A
        text is embedded by LangChain's embeddings if given, else by the collection."""
        if not isinstance(query, str):
            result = self._collection.query(
                vectors=query, k=k, where=filter, where_document=where_document
            )
        elif self._embedding is None:
            result = self._collection.query(
                texts=query, k=k, where=filter, where_document=where_document
            )
        else:
            result = self._collection.query(
                vectors=self._embedding.embed_query(query),
                k=k,
                where=filter,
                where_document=where_document,
                model=self._model,
            )
        return _scored(result)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Relevance (larger is better) from a latentdb distance, per metric: cosine
        1 - d (LangChain's cosine relevance); l2 1 - √d/√2, since latentdb's l2
        distance is squared (in [0, 1] for unit vectors); ip -d, the inner product."""
        return relevance_function(self._collection.space.metric)

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        *,
        filter: Where | None = None,
        where_document: Where | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents among the ``fetch_k`` nearest ``query``, chosen for being
        near it and unlike each other (maximal marginal relevance).

        Without ``embedding=`` the query is embedded here with the collection's own
        model (over HTTP too: the client then loads that model).

        Args:
            lambda_mult: 1 ranks by similarity alone, 0 by diversity alone.
            filter, where_document: As for :meth:`similarity_search`.
        """
        refuse_unknown(kwargs, "max_marginal_relevance_search")
        return self._marginal_relevance(
            self._query_vector(query), k, fetch_k, lambda_mult, filter, where_document
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        *,
        filter: Where | None = None,
        where_document: Where | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` for a vector of the collection's space."""
        refuse_unknown(kwargs, "max_marginal_relevance_search_by_vector")
        vector = np.asarray(embedding, dtype=np.float32)
        return self._marginal_relevance(vector, k, fetch_k, lambda_mult, filter, where_document)

    def _query_vector(self, query: str) -> npt.NDArray[np.float32]:
        """``query`` embedded by LangChain's embeddings or the collection's model."""
        if self._embedding is not None:
            return np.asarray(self._embedding.embed_query(query), dtype=np.float32)
        collection = self._collection
        if collection.embedder is None:
            raise EmbedderError(
                f"collection {collection.name!r} has no embedder: pass embedding= to "
                "LatentDBVectorStore"
            )
        embedder = get_embedder(collection.embedder)
        if embedder.fingerprint != collection.space.fingerprint:
            raise ModelMismatchError(
                f"embedder {collection.embedder!r} here has fingerprint "
                f"{embedder.fingerprint}, collection {collection.name!r} was built with "
                f"{collection.space.fingerprint}"
            )
        vector: npt.NDArray[np.float32] = embedder.embed_texts([query])[0]
        return vector

    def _marginal_relevance(
        self,
        vector: npt.NDArray[np.float32],
        k: int,
        fetch_k: int,
        lambda_mult: float,
        filter: Where | None,
        where_document: Where | None,
    ) -> list[Document]:
        result = self._collection.query(
            vectors=vector,
            k=max(fetch_k, k),
            where=filter,
            where_document=where_document,
            include=["documents", "metadatas", "vectors"],
        )
        if not result.ids[0] or result.vectors is None:
            return []
        chosen = maximal_marginal_relevance(vector, result.vectors[0].tolist(), lambda_mult, k)
        documents = _documents(result)
        return [documents[position] for position in chosen]

    # -- construction --------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        collection_name: str = "langchain",
        path: str | os.PathLike[str] | None = None,
        database: Database | None = None,
        **kwargs: Any,
    ) -> Self:
        """A store over ``collection_name`` holding ``texts`` (added with
        :meth:`add_texts`). Same arguments as the constructor and :meth:`add_texts`."""
        refuse_unknown(kwargs, "from_texts")
        store = cls(collection_name, embedding=embedding, path=path, database=database)
        store.add_texts(texts, metadatas, ids=ids)
        return store


def _document(record_id: str, text: str | None, metadata: Mapping[str, Any] | None) -> Document:
    return Document(id=record_id, page_content=text or "", metadata=dict(metadata or {}))


def _documents(result: QueryResult) -> list[Document]:
    """The hits of a one-query result as Documents, nearest first."""
    ids = result.ids[0]
    texts = result.documents[0] if result.documents is not None else [None] * len(ids)
    metadatas = result.metadatas[0] if result.metadatas is not None else [None] * len(ids)
    return [_document(*fields) for fields in zip(ids, texts, metadatas, strict=True)]


def _scored(result: QueryResult) -> list[tuple[Document, float]]:
    documents = _documents(result)
    distances = [] if result.distances is None else result.distances[0].tolist()
    return list(zip(documents, distances, strict=True))


def _unscored(pairs: list[tuple[Document, float]]) -> list[Document]:
    return [document for document, _ in pairs]
