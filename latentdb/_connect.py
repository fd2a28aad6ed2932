"""connect(): a folder opens the embedded engine, a URL a server's client."""

from __future__ import annotations

import os
from typing import Literal

from latentdb.api import Database
from latentdb.errors import InvalidArgumentError

__all__ = ["connect"]


def connect(
    target: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    timeout: float | None = None,
    vector_format: Literal["binary", "json"] = "binary",
    verify: bool | str = True,
) -> Database:
    """Open (or create) the database in a folder, or connect to a latentdb server.

    Args:
        target: A folder (created with its parents if missing), or a server's URL,
            ``http://host:port`` or ``https://...``.
        api_key: The server's API key (default: the ``LATENTDB_API_KEY`` variable).
        timeout: Seconds to wait for a server's reply (default: no limit, as a call
            in process has none; connecting gives up after 10 s).
        vector_format: How vectors travel to and from a server: ``"binary"`` (base64
            float32, the default) or ``"json"`` (lists of numbers).
        verify: For https: verify the server's certificate (True), not (False), or
            the path of a CA bundle to verify it with.

    Returns:
        A :class:`Database`, usable as a context manager; for a URL, a
        :class:`~latentdb.client.RemoteDatabase` with the same methods and results.

    Raises:
        TransportError: no latentdb server answers at the URL.
        InvalidArgumentError: server options given with a folder.
    """
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        from latentdb.client import RemoteDatabase

        return RemoteDatabase(
            target, api_key=api_key, timeout=timeout, vector_format=vector_format, verify=verify
        )
    if api_key is not None:
        raise InvalidArgumentError(
            f"api_key= is for a server URL (http://...); {str(target)!r} is a folder"
        )
    from latentdb.engine import EmbeddedDatabase

    return EmbeddedDatabase(target)
