"""The HTTP API's routes, a FastAPI router per resource.

Each route translates JSON to one call of the :class:`~latentdb.api.Database` or
:class:`~latentdb.api.Collection` interface and its result back; the implementation
behind it does every check, so its errors are the same over HTTP as in process.
"""

from latentdb.server._routes import (
    aliases,
    analysis,
    collections,
    migrations,
    queries,
    records,
    service,
)

__all__ = ["OPEN", "ROUTERS"]

# Answered without an API key (OPEN_PATHS).
OPEN = (service.health,)
# Every other route: a server that wants keys documents 401 and 403 on each.
ROUTERS = (
    service.metrics,
    collections.router,
    aliases.router,
    migrations.router,
    records.router,
    queries.router,
    analysis.router,
    analysis.compare_router,
)
