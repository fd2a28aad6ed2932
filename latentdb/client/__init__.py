"""The HTTP client: a :class:`~latentdb.Database` whose calls a latentdb server answers.

Use ``latentdb.connect("http://host:8750", api_key=...)``; see :class:`RemoteDatabase`.
Needs httpx (the ``client`` extra).
"""

from latentdb.client._client import API_KEY_ENV, RemoteCollection, RemoteDatabase, RemoteMigration

__all__ = ["API_KEY_ENV", "RemoteCollection", "RemoteDatabase", "RemoteMigration"]
