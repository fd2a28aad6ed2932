"""LlamaIndex: a vector store over a latentdb collection, embedded or over HTTP.

Needs the ``llamaindex`` extra (``pip install 'latentdb[llamaindex]'``)::

    from llama_index.core import Document, VectorStoreIndex
    from latentdb.integrations.llamaindex import LatentDBVectorStore

    store = LatentDBVectorStore("notes", path="my.db")
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
    index.insert(Document(text="a cat sat", metadata={"lang": "en"}))
    index.as_retriever(similarity_top_k=2).retrieve("kitten")

LlamaIndex embeds; the collection (created at the first insert, its dimension taken from
the first node's embedding) keeps the vectors without an embedder of its own, under the
model name given as ``model=``, which every write then names (a collection that requires
it refuses vectors of another model). Without ``model=`` the store cannot say where its
vectors come from, so a collection it creates accepts vectors without a model name
(``require_model=False``). Each node's text is the record's document, its metadata
the record's metadata (so ``MetadataFilters`` become latentdb ``where`` filters), and the
whole node (relationships included) rides along as JSON, as in LlamaIndex's own stores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from latentdb._extras import needs_extra

with needs_extra("llamaindex", __name__):
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.schema import BaseNode, MetadataMode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import (
        metadata_dict_to_node,
        node_to_metadata_dict,
    )

from latentdb.api import Collection, Database, is_metadata_value
from latentdb.errors import (
    CollectionNotFoundError,
    FilterError,
    InvalidArgumentError,
    ModelMismatchError,
    ModelRequiredError,
)
from latentdb.integrations._common import (
    DatabaseHolder,
    delete_every,
    open_database,
    refuse_unknown,
)
from latentdb.integrations._scores import relevance_function

__all__ = ["LatentDBVectorStore", "metadata_filters_to_where"]

Where = dict[str, Any]
# The metadata key LlamaIndex stores every node's source document id under.
_REF_DOC_ID = "ref_doc_id"


class LatentDBVectorStore(DatabaseHolder, BasePydanticVectorStore):
    """A LlamaIndex vector store kept in a latentdb collection.

    Args:
        collection_name: The collection (or alias) to use. If missing, it is created at
            the first :meth:`add`, without an embedder, for vectors of ``model``, with
            the dimension of the first embedding.
        path: A database folder or server URL to open with :func:`latentdb.connect`;
            :meth:`close` closes it.
        database: An open :class:`~latentdb.Database` (embedded or a server's client)
            to use instead of ``path``; left open by :meth:`close`.
        model: The model the embeddings come from (e.g. ``"BAAI/bge-small-en-v1.5"``),
            recorded by a new collection and checked against an existing one, so that
            vectors of another model are refused. None: ``"external"`` for a new
            collection, created with ``require_model=False``; an existing one must not
            require its model named.

    Raises:
        InvalidArgumentError: neither or both of ``path`` and ``database``.
        ModelMismatchError: the collection exists and holds vectors of another model
            (ModelRequiredError: it requires its model named, and ``model`` is None).
    """

    stores_text: bool = True
    collection_name: str

    _database: Database = PrivateAttr()
    _owned: bool = PrivateAttr()
    _model: str | None = PrivateAttr()
    _collection: Collection | None = PrivateAttr()

    def __init__(
        self,
        collection_name: str = "llamaindex",
        *,
        path: str | os.PathLike[str] | None = None,
        database: Database | None = None,
        model: str | None = None,
    ) -> None:
        # Pydantic's generated __init__, whose fields mypy cannot see without its plugin.
        super().__init__(collection_name=collection_name, stores_text=True)  # type: ignore[call-arg]
        self._database, self._owned = open_database(path, database)
        self._model = model
        try:
            self._collection = self._existing_collection()
        except BaseException:
            self.close()
            raise

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's name for this component."""
        return "LatentDBVectorStore"

    def _existing_collection(self) -> Collection | None:
        try:
            collection = self._database.get_collection(self.collection_name)
        except CollectionNotFoundError:
            return None
        if self._model is not None and collection.space.model != self._model:
            raise ModelMismatchError(
                f"collection {self.collection_name!r} holds vectors of model "
                f"{collection.space.model!r}, not {self._model!r}: their latent spaces are "
                "not comparable (use another collection)"
            )
        if self._model is None and collection.require_model:
            raise ModelRequiredError(
                f"collection {self.collection_name!r} requires every write of vectors to "
                f"name their model: pass model={collection.space.model!r} to "
                "LatentDBVectorStore if LlamaIndex's embed_model is that model"
            )
        return collection

    @property
    def client(self) -> Collection | None:
        """The latentdb collection (None until the first :meth:`add` creates it)."""
        return self._collection

    # -- writes --------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store embedded nodes; a stored node id is replaced (upsert).

        Metadata values latentdb cannot filter on (None, dicts, empty lists) are left
        out of the record's metadata; they stay in the node read back.

        Returns:
            The node ids.

        Raises:
            ValueError: a node has no embedding.
            DimensionMismatchError, ModelMismatchError: the embeddings do not fit the
                collection's space.
        """
        refuse_unknown(add_kwargs, "add")
        if not nodes:
            return []
        vectors = [node.get_embedding() for node in nodes]
        collection = self._collection
        if collection is None:
            collection = self._database.get_or_create_collection(
                self.collection_name,
                embedder=None,
                dimension=len(vectors[0]),
                model=self._model,
                require_model=self._model is not None,
            )
            self._collection = collection
        ids = [node.node_id for node in nodes]
        collection.upsert(
            ids,
            vectors=vectors,
            documents=[node.get_content(metadata_mode=MetadataMode.NONE) for node in nodes],
            metadatas=[_record_metadata(node) for node in nodes],
            model=self._model,
        )
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        refuse_unknown(delete_kwargs, "delete")
        if self._collection is not None:
            self._collection.delete(where={_REF_DOC_ID: ref_doc_id})

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes by id, by filter, or both (ids that also pass the filters).

        Raises:
            InvalidArgumentError: neither ids nor filters (use :meth:`clear`).
        """
        refuse_unknown(delete_kwargs, "delete_nodes")
        where = metadata_filters_to_where(filters)
        if node_ids is None and where is None:
            raise InvalidArgumentError(
                "delete_nodes needs node_ids= or filters=; clear() deletes every node"
            )
        if self._collection is not None:
            self._collection.delete(node_ids, where=where)

    def clear(self) -> None:
        """Delete every node (the collection stays)."""
        if self._collection is not None:
            delete_every(self._collection)

    # -- reads ---------------------------------------------------------------------

    def get_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
    ) -> list[BaseNode]:
        """Stored nodes by id and/or filter (all when neither is given)."""
        if self._collection is None:
            return []
        found = self._collection.get(
            node_ids, where=metadata_filters_to_where(filters), include=["documents", "metadatas"]
        )
        return [
            _node(metadata, text)
            for text, metadata in zip(found.documents or [], found.metadatas or [], strict=True)
        ]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nodes nearest ``query.query_embedding``.

        ``filters`` and ``doc_ids`` restrict the candidates. ``similarities`` are
        larger-is-better: 1 - distance for cosine (the cosine similarity), -distance
        for ip, 1 - √distance/√2 for l2.

        Raises:
            InvalidArgumentError: no query embedding, a mode other than the default,
                or a non-empty ``node_ids`` (latentdb filters on metadata, not on ids).
            FilterError: a filter latentdb cannot express (text_match).
        """
        refuse_unknown(kwargs, "query")
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise InvalidArgumentError(
                f"LatentDBVectorStore answers the default (dense) query mode; got {query.mode}"
            )
        if query.node_ids:  # VectorStoreIndex.as_retriever passes [] for "any node"
            raise InvalidArgumentError(
                "LatentDBVectorStore.query cannot restrict the search to node_ids (latentdb "
                "filters on metadata); use filters= or doc_ids="
            )
        if query.query_embedding is None:
            raise InvalidArgumentError("LatentDBVectorStore.query needs query.query_embedding")
        where = metadata_filters_to_where(query.filters)
        if query.doc_ids is not None:
            documents: Where = {_REF_DOC_ID: {"$in": list(query.doc_ids)}}
            where = documents if where is None else {"$and": [where, documents]}
        collection = self._collection
        if collection is None:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        result = collection.query(
            vectors=query.query_embedding,
            k=query.similarity_top_k,
            where=where,
            model=self._model,
        )
        relevance = relevance_function(collection.space.metric)
        texts = result.documents[0] if result.documents is not None else []
        metadatas = result.metadatas[0] if result.metadatas is not None else []
        distances = result.distances[0].tolist() if result.distances is not None else []
        return VectorStoreQueryResult(
            nodes=[_node(metadata, text) for text, metadata in zip(texts, metadatas, strict=True)],
            similarities=[relevance(distance) for distance in distances],
            ids=result.ids[0],
        )


def metadata_filters_to_where(filters: MetadataFilters | None) -> Where | None:
    """LlamaIndex ``MetadataFilters`` as a latentdb ``where`` filter (None for none).

    ``==``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``in``, ``nin`` map to ``$eq`` ...
    ``$nin``; ``contains`` to ``$contains``; ``any``/``all`` to ``$or``/``$and`` of
    ``$contains``; ``is_empty`` to ``$exists: False`` (None and empty lists are not
    stored, see :meth:`LatentDBVectorStore.add`); conditions ``and``, ``or``, ``not``
    to ``$and``, ``$or`` and ``$not`` of their ``$and``.

    Raises:
        FilterError: ``text_match`` (latentdb has no substring match on metadata), or
            a value of None.
    """
    if filters is None or not filters.filters:
        return None
    clauses = [
        metadata_filters_to_where(item) if isinstance(item, MetadataFilters) else _clause(item)
        for item in filters.filters
    ]
    kept = [clause for clause in clauses if clause is not None]
    if not kept:
        return None
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.OR:
        return {"$or": kept}
    both: Where = kept[0] if len(kept) == 1 else {"$and": kept}
    return {"$not": both} if condition == FilterCondition.NOT else both


_OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.CONTAINS: "$contains",
}


def _clause(item: MetadataFilter) -> Where:
    key, value, operator = item.key, item.value, item.operator
    if operator == FilterOperator.IS_EMPTY:
        return {key: {"$exists": False}}
    if value is None:
        raise FilterError(f"filter on {key!r} with operator {operator.value!r} needs a value")
    if operator in (FilterOperator.ANY, FilterOperator.ALL):
        items = value if isinstance(value, list) else [value]
        combined = "$or" if operator == FilterOperator.ANY else "$and"
        return {combined: [{key: {"$contains": item}} for item in items]}
    if operator not in _OPERATORS:
        raise FilterError(
            f"latentdb cannot filter metadata with LlamaIndex's {operator.value!r} operator"
        )
    return {key: {_OPERATORS[operator]: value}}


def _record_metadata(node: BaseNode) -> dict[str, Any]:
    """The node's metadata as latentdb stores it: its filterable entries, plus the node
    itself as JSON (without its text, which is the record's document)."""
    metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
    return {key: value for key, value in metadata.items() if _storable(key, value)}


def _storable(key: str, value: object) -> bool:
    return bool(key) and not key.startswith("$") and is_metadata_value(value)


def _node(metadata: Mapping[str, Any] | None, text: str | None) -> BaseNode:
    return metadata_dict_to_node(dict(metadata or {}), text=text)
