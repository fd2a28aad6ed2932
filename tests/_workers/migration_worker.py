"""Child process for tests/api/test_migration.py: runs a migration until it ends or is
killed.

``python migration_worker.py FOLDER NAME`` registers :class:`SlowHashing` as
``"slow-hashing"``, then runs ``Database.migrate(NAME, embedder="slow-hashing")`` in the
foreground, printing ``COPIED <n>`` after each batch and ``DONE`` at the end. The test
module imports this file (by path) to register the very same embedder when it resumes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, for tests.conftest

import latentdb
from latentdb import embed
from tests.conftest import HashingEmbedder

NAME = "slow-hashing"
PAUSE = 0.2  # seconds per embedding call: the test kills the copy part way


class SlowHashing(HashingEmbedder):
    """The test hashing embedder (32-d), slowed down, counting the texts it embeds."""

    def __init__(self, name: str) -> None:
        super().__init__(name, dimension=32, salt="migration")
        self.model = "test/slow-hashing"
        self.texts = 0

    def embed_texts(
        self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        time.sleep(PAUSE)
        self.texts += len(texts)
        return super().embed_texts(texts, progress=progress)


def register() -> SlowHashing:
    instance = SlowHashing(NAME)
    embed.register(NAME, lambda name: instance)
    return instance


def main(folder: str, name: str) -> None:
    register()
    with latentdb.connect(folder) as db:
        db.migrate(
            name,
            embedder=NAME,
            background=False,
            progress=lambda copied, total: print(f"COPIED {copied}", flush=True),
        )
    print("DONE", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
