"""ShardedDatabase: a Database whose collections are split into shards on Ray actors.

Layout of ``path``::

    path/catalog/                    an embedded database of the collections' names,
                                     latent spaces, settings and aliases (no records)
    path/shards/<id>/shard-S-replica-R/
                                     one embedded database per shard and replica,
                                     opened by the Ray actor that hosts it

Every node that may host a shard must see ``path`` (a shared file system on a
cluster; any folder on one machine): a host that Ray restarts elsewhere reopens its
folders from there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from latentdb.api import (
    DEFAULT_RECALL_TARGET,
    CollectionSettings,
    Database,
    IndexSpec,
    Migration,
    MigrationRequest,
    check_collection_name,
    check_flag,
    check_non_negative,
)
from latentdb.distributed._collection import ShardedCollection
from latentdb.distributed._shards import Hosts, ShardGroup, require_ray
from latentdb.engine import EmbeddedDatabase
from latentdb.errors import (
    InvalidArgumentError,
)
from latentdb.space import Metric
from latentdb.store import CollectionRow, Store

__all__ = ["DEFAULT_SHARDS", "ShardedDatabase", "connect"]

# Shards of a collection created without shards=: two, so that routing and merging are
# always at work, even in a test.
DEFAULT_SHARDS = 2
# More shards than this is a typo, not a plan: each shard is a folder per replica and
# a part of every query.
MAX_SHARDS = 1024
CATALOG_FOLDER = "catalog"
SHARDS_FOLDER = "shards"

# The hosts of this process's Ray job, shared by every ShardedDatabase it opens.
_hosts: Hosts | None = None


class ShardedDatabase(Database):
    """A latentdb database sharded over a Ray cluster, with :class:`Database`'s methods.

    Open one with :func:`latentdb.distributed.connect`. Collections, aliases and
    latent spaces behave as in the embedded engine; collections are
    :class:`ShardedCollection` objects, created with ``shards=`` and ``replicas=``.

    Attributes:
        root: The database's folder (the catalog and the shard folders).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hosts: Hosts,
        shards: int = DEFAULT_SHARDS,
        replicas: int = 1,
    ) -> None:
        self.root = Path(path)
        self.default_shards = _check_shards(shards)
        self.default_replicas = _check_replicas(replicas)
        # The names, spaces, settings and aliases of the collections (no records).
        self.catalog = EmbeddedDatabase(self.root / CATALOG_FOLDER)
        self.path = self.catalog.path
        self.hosts = hosts
        # Identifies this database to the hosts, which keep its folders open until
        # close() releases them.
        self.holder = uuid.uuid4().hex
        self._groups: dict[tuple[int, str], ShardGroup] = {}

    def close(self) -> None:
        """Close the database: the hosts close the shard folders only it had open."""
        if not self.catalog.closed:
            self.hosts.release(self.holder)
        self.catalog.close()

    @property
    def store(self) -> Store:
        """The catalog's store (internal)."""
        return self.catalog.store

    def __repr__(self) -> str:
        return f"ShardedDatabase({str(self.root)!r})"

    # -- collections -----------------------------------------------------------------

    def group(self, row: CollectionRow) -> ShardGroup:
        """The shards of the collection of catalog ``row`` (internal)."""
        key = (row.id, str(row.config["folder"]))
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = ShardGroup(
                self.hosts, self.holder, ShardGroup.folders_of(self.root, row)
            )
        return group

    def _collection(self, row: CollectionRow, *, alias: str | None = None) -> ShardedCollection:
        if "shards" not in row.config:
            raise InvalidArgumentError(
                f"collection {row.name!r} in {self.path} is not sharded: open the folder "
                "with latentdb.connect"
            )
        return ShardedCollection(self, row, alias=alias)

    def create_collection(
        self,
        name: str,
        *,
        dimension: int | None = None,
        metric: Metric = "cosine",
        embedder: str | None = "minilm",
        model: str | None = None,
        index: str | IndexSpec = "auto",
        recall_target: float = DEFAULT_RECALL_TARGET,
        reduce: int | None = None,
        require_model: bool = True,
        shards: int | None = None,
        replicas: int | None = None,
    ) -> ShardedCollection:
        """See :meth:`Database.create_collection`; the collection is split in shards.

        Args:
            shards: Number of shards (default: the database's, 2 unless ``connect``
                said otherwise). Fixed for the collection's life: ids are routed by
                a hash modulo this number.
            replicas: Copies of each shard, on different hosts (default 1). Writes go
                to every copy; reads to one that answers.
            index: Each shard's index (``"auto"``: exact while a shard holds under
                20,000 rows, then HNSW).
            reduce: Each shard's ANN index searches a PCA projection to this many
                dimensions, learned from that shard's rows (distances stay exact).

        Raises:
            InvalidArgumentError: bad shards or replicas, and what
                :meth:`Database.create_collection` raises.
        """
        check_collection_name(name)
        settings = CollectionSettings(
            dimension, metric, embedder, model, index, recall_target, reduce, require_model
        )
        return self._create_sharded(name, settings, shards, replicas)

    def _create_collection(self, name: str, settings: CollectionSettings) -> ShardedCollection:
        return self._create_sharded(name, settings, None, None)

    def _create_sharded(
        self,
        name: str,
        settings: CollectionSettings,
        shards: int | None,
        replicas: int | None,
    ) -> ShardedCollection:
        shard_count = self.default_shards if shards is None else _check_shards(shards)
        replica_count = self.default_replicas if replicas is None else _check_replicas(replicas)
        space, embedder_name, checked = settings.checked()
        spec, target = checked["index"], checked["recall_target"]
        config = {
            "index": spec,
            "recall_target": target,
            "require_model": checked["require_model"],
            "shards": shard_count,
            "replicas": replica_count,
            "folder": uuid.uuid4().hex,
        }
        store = self.store
        with store.write():
            row = store.insert_collection(
                name, space=space.to_dict(), embedder=embedder_name, config=config
            )
        group = self.group(row)
        shard_spec = {
            "dimension": space.dimension,
            "metric": space.metric,
            "model": space.model,
            "index": spec,
            "recall_target": target,
            "reduce": settings.reduce,
        }
        try:
            references = [
                self.hosts.handle(shard, replica).create.remote(folder, self.holder, shard_spec)
                for shard, replica, folder in group.places()
            ]
            self.hosts.ray.get(references)
        except BaseException:
            with store.write():
                store.drop_collection(row.id)
            self.hosts.drop(group.places())
            raise
        return self._collection(row)

    def get_or_create_collection(
        self,
        name: str,
        *,
        dimension: int | None = None,
        metric: Metric = "cosine",
        embedder: str | None = "minilm",
        model: str | None = None,
        index: str | IndexSpec = "auto",
        recall_target: float = DEFAULT_RECALL_TARGET,
        reduce: int | None = None,
        require_model: bool = True,
        shards: int | None = None,
        replicas: int | None = None,
    ) -> ShardedCollection:
        """See :meth:`Database.get_or_create_collection`; an existing collection keeps
        its shards, replicas and ``require_model``.

        Raises:
            CollectionExistsError: it exists in another latent space than the one asked.
            and whatever :meth:`create_collection` raises.
        """
        check_collection_name(name)
        check_flag(require_model, "require_model")
        settings = CollectionSettings(
            dimension, metric, embedder, model, index, recall_target, reduce, require_model
        )
        create = lambda: self._create_sharded(name, settings, shards, replicas)  # noqa: E731
        collection = self._get_or_create(name, settings, create)
        assert isinstance(collection, ShardedCollection)  # this database's own
        return collection

    def _get_collection(self, name: str) -> ShardedCollection:
        row = self.catalog.resolve(name)
        return self._collection(row, alias=None if row.name == name else name)

    def _list_collections(self) -> list[str]:
        return self.catalog.list_collections()

    def _create_alias(self, alias: str, collection: str) -> None:
        self.catalog.create_alias(alias, collection)

    def _switch_alias(self, alias: str, collection: str) -> None:
        self.catalog.switch_alias(alias, collection)

    def _delete_alias(self, alias: str) -> None:
        self.catalog.delete_alias(alias)

    def _list_aliases(self) -> dict[str, str]:
        return self.catalog.list_aliases()

    def _list_migrations(self) -> list[Migration]:
        # None: a sharded database does not migrate (see migrate).
        return []

    def _delete_collection(self, name: str) -> None:
        # Its shard folders are deleted too.
        row = self.store.collection_by_name(name)
        self.catalog.delete_collection(name)
        if row is not None:
            group = self.group(row)
            self._groups.pop((row.id, str(row.config["folder"])), None)
            self.hosts.drop(group.places())

    # -- what a sharded database does not do -----------------------------------------

    def _migrate(self, name: str, request: MigrationRequest) -> Migration:
        # Not available: re-embed with ingest() into a new collection and switch_alias.
        raise InvalidArgumentError(
            "migrate is not available on a sharded database: re-embed into a new sharded "
            "collection (latentdb.distributed.ingest or `latentdb ingest --ray`), then "
            "switch_alias to it"
        )


def _check_shards(value: object) -> int:
    count = check_non_negative(value, "shards", minimum=1)
    if count > MAX_SHARDS:
        raise InvalidArgumentError(f"shards must be at most {MAX_SHARDS}; got {count}")
    return count


def _check_replicas(value: object) -> int:
    return check_non_negative(value, "replicas", minimum=1)


def connect(
    address: str | None = None,
    *,
    path: str | os.PathLike[str],
    shards: int = DEFAULT_SHARDS,
    replicas: int = 1,
    host_options: Mapping[str, Any] | None = None,
    max_restarts: int = -1,
    retry_timeout: float = 60.0,
) -> ShardedDatabase:
    """Open (or create) a sharded database in folder ``path`` on a Ray cluster.

    Args:
        address: The Ray cluster, when this process has not joined one yet: None
            for the one ``ray.init()`` finds (``RAY_ADDRESS``, else a new local
            instance), ``"auto"``, or ``"ray://head:10001"`` (Ray Client). A process
            already in a cluster (``ray.init()`` called) stays in it.
        path: The database folder; on a cluster, a file system every node sees.
        shards: Shards of a collection created without ``shards=``.
        replicas: Copies of each shard for a collection created without
            ``replicas=``.
        host_options: Extra Ray actor options for the shard hosts (``num_cpus``
            (default 0), ``memory``, ``resources``, ``scheduling_strategy``, ...).
            The hosts are shared by every sharded database of this process: the
            first one opened sets them.
        max_restarts: How often Ray restarts a shard host that died (-1: always).
        retry_timeout: Seconds a call waits for a dead host to come back.

    Returns:
        A :class:`ShardedDatabase`, usable as a context manager.

    Raises:
        ImportError: Ray is not installed (``pip install 'latentdb[ray]'``).
        InvalidArgumentError: bad shards, replicas or host options.
    """
    global _hosts
    ray = require_ray()
    _check_shards(shards)
    _check_replicas(replicas)
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    if _hosts is None or _hosts.job != ray.get_runtime_context().get_job_id():
        _hosts = Hosts(options=host_options, max_restarts=max_restarts, retry_timeout=retry_timeout)
    return ShardedDatabase(path, hosts=_hosts, shards=shards, replicas=replicas)
