"""Objects that hold something open until :meth:`close`, and close it at the end of a
``with`` block."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

__all__ = ["Closeable"]


class Closeable(ABC):
    """A base for what must be closed: ``with`` returns the object itself and calls
    :meth:`close` on the way out, whether the block raised or not (and lets what it
    raised through)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the object holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
