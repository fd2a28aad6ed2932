"""Optional dependencies: the error that names the extra to install when one is missing.

Heavy or optional libraries (the server, Ray, the integrations) sit behind extras and are
imported only by the module that needs them; that import goes in a
``with needs_extra(...)`` block so that every such module fails the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["needs_extra"]


@contextmanager
def needs_extra(extra: str, needed_by: str) -> Iterator[None]:
    """Around the imports of an extra's libraries: a missing one raises an ImportError
    that says which extra brings it, e.g. ``latentdb.integrations.langchain needs the
    'langchain' extra (langchain_core is missing): pip install 'latentdb[langchain]'``.

    Args:
        extra: The extra's name in ``pip install 'latentdb[<extra>]'``.
        needed_by: What needs it, as the message's subject (a module's name).

    Raises:
        ImportError: an import in the block failed (its own traceback is dropped: the
            message says all a user needs).
    """
    try:
        yield
    except ImportError as error:
        raise ImportError(
            f"{needed_by} needs the '{extra}' extra ({error.name} is missing): "
            f"pip install 'latentdb[{extra}]'"
        ) from None
