"""Adapters that let LangChain and LlamaIndex applications keep their vectors in latentdb.

Each lives in its own module and needs its own extra, imported only when that module is:

- :mod:`latentdb.integrations.langchain`: ``LatentDBVectorStore``, a LangChain
  ``VectorStore`` (``pip install 'latentdb[langchain]'``).
- :mod:`latentdb.integrations.llamaindex`: ``LatentDBVectorStore``, a LlamaIndex
  ``BasePydanticVectorStore`` (``pip install 'latentdb[llamaindex]'``).

Both work over any :class:`~latentdb.Database`, embedded (a folder) or a server's client
(``latentdb.connect("http://...")``).
"""
