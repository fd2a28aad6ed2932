"""The store as the owner of the graphs' float rows (index.PackOwner): one copy of each
sealed vector on disk, in a pack file both the store and the graph read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from latentdb.index import PackFile
from latentdb.store import Store


class StorePacks:
    """A collection's packs, kept by the store (see store/_packs.py)."""

    def __init__(self, store: Store, collection_id: int) -> None:
        self.store = store
        self.collection_id = collection_id

    @property
    def folder(self) -> Path:
        """Where the collection's packs are written."""
        return self.store.packs_folder(self.collection_id)

    def ready(self) -> bool:
        """False inside a transaction of the store's that this thread opened (a bulk
        build reading every row): adoption commits a transaction per chunk of rows; and
        in a read-only store (whose graphs still map their packs)."""
        return not (self.store.read_only or self.store.in_transaction)

    def adopt(
        self, pack: PackFile, keys: npt.NDArray[np.int64], sequences: npt.NDArray[np.int64]
    ) -> None:
        """The store takes ``pack`` as its copy of those rows, then gives the pages they
        freed back to the file system when they are many."""
        dimension = (pack.size - pack.offset) // (4 * pack.rows) if pack.rows else 0
        moved = self.store.adopt_pack(
            self.collection_id, pack.name, offset=pack.offset, dimension=dimension,
            size=pack.size, checksum=pack.xxh3, keys=keys, sequences=sequences,
        )  # fmt: skip
        self.store.reclaim(freed=moved * dimension * 4)
        self._seen()

    def adopted(self) -> set[str]:
        """Names of the packs the store adopted whole."""
        return self.store.pack_names(self.collection_id)

    def release(self, named: set[str]) -> None:
        """Drop the packs neither stored rows nor the ``named`` segments need."""
        self.store.release_packs(self.collection_id, named=named)
        self._seen()

    def _seen(self) -> None:
        """Note this connection's own commits in the store's watch of the WAL-index
        header, so that the next query still takes the snapshot path: the pragma's
        version is unchanged by them, but the header is not (store/_wal.py)."""
        self.store.data_version()
