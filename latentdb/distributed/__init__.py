"""Sharded collections on Ray: scatter writes by id hash, gather queries, merge top k.

``latentdb.distributed.connect(path=...)`` returns a :class:`ShardedDatabase`, a
:class:`~latentdb.Database` whose collections (:class:`ShardedCollection`) are split
into shards, each an embedded latentdb engine in its own folder, hosted by a Ray actor
that Ray restarts if it dies. :func:`ingest` embeds a large corpus with Ray Data into
one. Needs the ``ray`` extra (``pip install 'latentdb[ray]'``).
"""

from latentdb.distributed._collection import ShardedCollection
from latentdb.distributed._database import DEFAULT_SHARDS, ShardedDatabase, connect
from latentdb.distributed._host import ShardHost
from latentdb.distributed._ingest import IngestReport, IngestWorker, ingest
from latentdb.distributed._shards import host_name, shard_of

__all__ = [
    "DEFAULT_SHARDS",
    "IngestReport",
    "IngestWorker",
    "ShardHost",
    "ShardedCollection",
    "ShardedDatabase",
    "connect",
    "host_name",
    "ingest",
    "shard_of",
]
