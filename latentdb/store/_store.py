"""The durable store: SQLite in WAL mode, the source of truth for every record.

The store knows rows, bytes and sequence numbers; it knows nothing of indexes. Every
write runs inside :meth:`Store.write` (one ``BEGIN IMMEDIATE`` transaction, so one call
of the public API is all or nothing) and takes one new number from the database-wide
write sequence; every row it touches is stamped with that number and every deleted row
leaves a tombstone with it. A reader that remembers the last number it applied can catch
up with :meth:`Store.changes_since`, whichever process wrote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from latentdb.store._catalog import CatalogStore
from latentdb.store._reads import RecordReads
from latentdb.store._writes import RecordWrites


class Store(CatalogStore, RecordReads, RecordWrites):
    """A latentdb folder's SQLite database.

    One connection, used under a lock so that a Database may be shared by threads.
    Every statement goes through :class:`GuardedConnection`, so storage failures are
    named errors (see :mod:`latentdb.store._connection`).

    Attributes:
        read_only: The database can only be read (a read-only file, folder or file
            system); every write raises :class:`ReadOnlyError`.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self._mapped: dict[int, npt.NDArray[np.float32]] = {}
        self._freed = 0
