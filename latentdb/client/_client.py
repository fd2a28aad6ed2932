"""A Database over HTTP: the embedded API's methods and results, answered by a server.

``latentdb.connect("http://host:8750", api_key=...)`` returns a :class:`RemoteDatabase`.
It is a :class:`~latentdb.Database` (and its collections are
:class:`~latentdb.Collection` objects) with the same methods, signatures, result types
and exception classes; only what cannot cross a network differs:

- ``progress=`` callbacks of ``add``/``upsert``/``update`` are called once, when the
  server has embedded everything; a migration's ``progress`` is called as the client
  polls it.
- ``migrate`` always runs on the server, in the background; ``background=False`` and
  :meth:`Migration.wait` poll it until it ends.
- Images are sent as their encoded bytes: a file path is read here, a PIL image is
  encoded as PNG.
- ``scroll`` reads one page per request, following a cursor the server keeps for 10
  minutes between pages.
- A handle got by a collection's name follows that name (a migration that renames
  ``docs`` to ``docs-v1`` sends it to the new ``docs``); the embedded one keeps to the
  renamed collection.
"""

from __future__ import annotations

import copy
import io
import json
import os
import ssl
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from latentdb.api import (
    Collection,
    CollectionSettings,
    Database,
    FloatMatrix,
    GetRequest,
    GetResult,
    IndexSpec,
    IndexStatus,
    Migration,
    MigrationRequest,
    QueryRequest,
    QueryResult,
    RecallReport,
    SpaceComparison,
    SpaceMap,
    SpaceReport,
    Where,
    WriteRequest,
)
from latentdb.client._migration import RemoteMigration
from latentdb.client._wire import (
    VECTOR_HEADER,
    VectorFormat,
    encode_array,
    error_class,
    get_result_from_wire,
    index_status_from_wire,
    migration_status_from_wire,
    query_result_from_wire,
    recall_report_from_wire,
    space_from_wire,
)
from latentdb.errors import (
    DatabaseClosedError,
    EmbedderError,
    InvalidArgumentError,
    TransportError,
)
from latentdb.space import LatentSpace, as_vector_batch

if TYPE_CHECKING:
    import httpx

    from latentdb.store import SqlFilter


__all__ = ["API_KEY_ENV", "RemoteCollection", "RemoteDatabase"]

# The client reads its key from here when connect() is given none.
API_KEY_ENV = "LATENTDB_API_KEY"
# Methods whose request may be sent twice with the effect of once (RFC 9110, 9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays and scalars, tuples and mappings made JSON-ready."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class RemoteDatabase(Database):
    """A latentdb server, used through the :class:`Database` interface.

    Open one with ``latentdb.connect(url, api_key=...)``.

    Attributes:
        url: The server's base URL.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        vector_format: VectorFormat = "binary",
        verify: bool | str = True,
    ) -> None:
        """Connect, and check that a latentdb server answers at ``url``.

        Raises:
            TransportError: nothing answers, or not as a latentdb server.
            InvalidArgumentError: a vector format other than "binary" or "json".
        """
        try:
            import httpx
        except ImportError:  # pragma: no cover - installed in development
            raise ImportError(
                "latentdb.connect(url) needs httpx: pip install 'latentdb[client]'"
            ) from None
        if vector_format not in ("binary", "json"):
            raise InvalidArgumentError(
                f"vector_format must be 'binary' or 'json'; got {vector_format!r}"
            )
        self.url = url.rstrip("/")
        self.vector_format: VectorFormat = vector_format
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {VECTOR_HEADER: vector_format, "Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http: httpx.Client | None = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0 if timeout is None else timeout),
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
        )
        self._call("GET", "/healthz")

    # -- transport -----------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """One request; the server's error re-raised as its latentdb class.

        A request that may safely be sent twice (``idempotent``; by default GET, PUT and
        DELETE) is sent once more when the connection breaks under it: a keep-alive
        connection the server closed is found broken only when it is used.

        Raises:
            DatabaseClosedError: after :meth:`close`.
            TransportError: the server cannot be reached or answered garbage.
            LatentDBError: the error the server's engine raised, as the same class.
        """
        import httpx

        http = self._http
        if http is None:
            raise DatabaseClosedError(f"the connection to {self.url} is closed")
        content = None if body is None else json.dumps(_plain(body)).encode()
        tries = 2 if (method in _IDEMPOTENT if idempotent is None else idempotent) else 1
        for tried in range(1, tries + 1):
            try:
                response = http.request(method, path, content=content, params=params)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                if tried < tries:
                    continue  # the connection broke: once more, on a new one
                raise TransportError(
                    f"the connection to the latentdb server at {self.url} broke during "
                    f"{method} {path}"
                    + ("" if tries > 1 else " (not sent again: it may have been applied)")
                ) from None
            except httpx.HTTPError as error:
                raise TransportError(
                    f"cannot reach the latentdb server at {self.url}: {error}"
                ) from None
        try:
            data = response.json()
        except ValueError:
            raise TransportError(
                f"{method} {self.url}{path} answered {response.status_code} with something "
                f"that is not JSON: {response.text[:200]!r}"
            ) from None
        if response.is_success:
            return data
        if not isinstance(data, dict) or "code" not in data:
            raise TransportError(
                f"{method} {self.url}{path} answered {response.status_code} without a "
                f"latentdb error: {response.text[:200]!r}"
            )
        raised = error_class(data["code"])(str(data.get("message", "")))
        if raised.status != response.status_code:
            raised.status = response.status_code
        raise raised

    def vectors(self, value: object, *, directions: bool = False) -> object:
        """Vectors as they travel: binary when numeric and that form is chosen, else
        plain lists (anything non-numeric goes as it is, for the server to name).

        Args:
            directions: Only each row's direction matters (a normalized space): float64
                rows past float32's range are scaled into it first, as the engine does.
        """
        if value is None:
            return None
        try:
            array = np.asarray(value)
        except ValueError:  # ragged: the engine says so
            return _plain(value)
        if array.dtype.kind not in "iuf":
            return _plain(value)
        if directions and array.dtype.kind == "f" and array.dtype.itemsize > 4:
            array = as_vector_batch(array, directions=True)
        if self.vector_format == "json":
            return array.tolist()
        with np.errstate(over="ignore"):  # past float32's range: inf, refused by the engine
            return encode_array(array.astype(np.float32), "binary")

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; collections obtained from it stop working."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def __repr__(self) -> str:
        return f"RemoteDatabase({self.url!r})"

    def _create_collection(self, name: str, settings: CollectionSettings) -> Collection:
        return self._create(name, settings, get_or_create=False)

    def _get_or_create_collection(self, name: str, settings: CollectionSettings) -> Collection:
        return self._create(name, settings, get_or_create=True)  # decided on the server

    def _create(
        self, name: str, settings: CollectionSettings, *, get_or_create: bool
    ) -> Collection:
        index = settings.index
        info = self._call(
            "POST",
            "/v1/collections",
            {
                "name": name,
                "dimension": settings.dimension,
                "metric": settings.metric,
                "embedder": settings.embedder,
                "model": settings.model,
                "index": index.to_dict() if isinstance(index, IndexSpec) else index,
                "recall_target": settings.recall_target,
                "reduce": settings.reduce,
                "require_model": settings.require_model,
                "get_or_create": get_or_create,
            },
        )
        return RemoteCollection(self, name, info)

    def _get_collection(self, name: str) -> Collection:
        return RemoteCollection(self, name, self._call("GET", _path(name)))

    def _list_collections(self) -> list[str]:
        names: list[str] = self._call("GET", "/v1/collections")
        return names

    def _delete_collection(self, name: str) -> None:
        self._call("DELETE", _path(name))

    # -- aliases -------------------------------------------------------------------

    def _create_alias(self, alias: str, collection: str) -> None:
        self._call("POST", "/v1/aliases", {"alias": alias, "collection": collection})

    def _switch_alias(self, alias: str, collection: str) -> None:
        self._call("PUT", f"/v1/aliases/{quote(alias, safe='')}", {"collection": collection})

    def _delete_alias(self, alias: str) -> None:
        self._call("DELETE", f"/v1/aliases/{quote(alias, safe='')}")

    def _list_aliases(self) -> dict[str, str]:
        aliases: dict[str, str] = self._call("GET", "/v1/aliases")
        return aliases

    # -- migrations ----------------------------------------------------------------

    def _migrate(self, name: str, request: MigrationRequest) -> Migration:
        # It runs on the server; background=False polls it until it ends, calling
        # progress(copied, total) as it moves.
        body = {
            "name": name,
            "embedder": request.embedder,
            "reduce": request.reduce,
            "new_name": request.new_name,
        }
        reply = self._call("POST", "/v1/migrations", body)
        migration = RemoteMigration(self, reply["id"], migration_status_from_wire(reply["status"]))
        if not request.background:
            migration._follow(None, request.progress)
        return migration

    def _list_migrations(self) -> list[Migration]:
        return [
            RemoteMigration(self, item["id"], migration_status_from_wire(item["status"]))
            for item in self._call("GET", "/v1/migrations")
        ]

    # -- understanding spaces ------------------------------------------------------

    def _compare(self, a: str, b: str, *, sample: int, k: int) -> SpaceComparison:
        # Measured on the server, which holds both collections' vectors.
        body = {"a": a, "b": b, "sample": sample, "k": k}
        reply = self._call("POST", "/v1/compare", body, idempotent=True)
        return SpaceComparison.from_dict(reply)


def _path(name: str) -> str:
    return f"/v1/collections/{quote(str(name), safe='')}"


class RemoteCollection(Collection):
    """A collection on a latentdb server, with :class:`Collection`'s methods.

    Got from :meth:`RemoteDatabase.get_collection` and friends, never built directly.
    """

    def __init__(self, database: RemoteDatabase, address: str, info: Mapping[str, Any]) -> None:
        self._remote = database
        self._path = _path(address)
        self._info = info
        self._alias = info.get("alias")
        self._follows = self._alias is not None  # read again at each use

    def _fresh(self) -> Mapping[str, Any]:
        """What the server says of the collection now (through an alias: its target)."""
        if self._follows:
            self._info = self._remote._call("GET", self._path)
        return self._info

    def _for_call(self) -> RemoteCollection:
        # Through an alias, the target is read once for the whole call, not once for
        # each of the space, model and embedder that its checks and its request read.
        if not self._follows:
            return self
        pinned = copy.copy(self)
        pinned._info, pinned._follows = self._fresh(), False
        return pinned

    @property
    def name(self) -> str:
        name: str = self._fresh()["name"]
        return name

    @property
    def alias(self) -> str | None:
        return self._alias

    @property
    def space(self) -> LatentSpace:
        return space_from_wire(self._fresh()["space"])

    @property
    def embedder(self) -> str | None:
        embedder: str | None = self._fresh()["embedder"]
        return embedder

    @property
    def recall_target(self) -> float:
        self._info = self._remote._call("GET", self._path)  # another client may set it
        return float(self._info["recall_target"])

    @property
    def require_model(self) -> bool:
        # False from a server older than the setting, which checks model= only when given.
        return self._fresh().get("require_model") is True

    def _dimension(self) -> int:
        return int(self._fresh()["space"]["dimension"])

    def _set_recall_target(self, target: float) -> None:
        self._remote._call("PUT", f"{self._path}/recall_target", {"target": target})

    def _clear_recorded_queries(self) -> int:
        reply = self._remote._call("DELETE", f"{self._path}/recorded_queries", idempotent=True)
        return int(reply["cleared"])

    def _optimize(self) -> None:
        self._remote._call("POST", f"{self._path}/optimize", idempotent=True)

    def _index_status(self) -> IndexStatus:
        return index_status_from_wire(self._remote._call("GET", f"{self._path}/index"))

    def _evaluate(
        self, queries: object, matrix: FloatMatrix | None, *, k: int, sample: int
    ) -> RecallReport:
        body = {"queries": self._remote.vectors(queries), "k": k, "sample": sample}
        return recall_report_from_wire(
            self._remote._call("POST", f"{self._path}/evaluate", body, idempotent=True)
        )

    def _analyze(self, *, sample: int, k: int) -> SpaceReport:
        body = {"sample": sample, "k": k}
        return SpaceReport.from_dict(
            self._remote._call("POST", f"{self._path}/analyze", body, idempotent=True)
        )

    def _map(
        self, *, method: str, sample: int, where: Where | None, filters: SqlFilter | None
    ) -> SpaceMap:
        body = {"method": method, "sample": sample, "where": _plain(where)}
        return SpaceMap.from_dict(
            self._remote._call("POST", f"{self._path}/map", body, idempotent=True)
        )

    def _count(self) -> int:
        return int(self._remote._call("GET", f"{self._path}/count")["count"])

    # -- writes --------------------------------------------------------------------

    def _write(self, request: WriteRequest) -> None:
        body = {
            "ids": request.ids,
            "vectors": self._remote.vectors(request.vectors, directions=self.space.normalized),
            "documents": request.documents,
            "metadatas": request.metadatas,
            "model": request.model,
            "images": _images(request.images),
        }
        self._remote._call(_WRITE_METHODS[request.mode], f"{self._path}/records", body)
        if request.progress is not None and request.embeds:
            request.progress(request.size)  # the server embedded them all

    def _delete(self, request: GetRequest) -> int:
        body = {
            "ids": request.ids,
            "where": request.where,
            "where_document": request.where_document,
        }
        return int(self._remote._call("POST", f"{self._path}/delete", body)["deleted"])

    # -- reads ---------------------------------------------------------------------

    def _get(self, request: GetRequest) -> GetResult:
        body = {
            "ids": request.ids,
            "where": request.where,
            "limit": request.limit,
            "offset": request.offset,
            "include": sorted(request.fields),
            "where_document": request.where_document,
        }
        data = self._remote._call("POST", f"{self._path}/get", body, idempotent=True)
        return get_result_from_wire(data, self._dimension())

    def _scroll(self, request: GetRequest) -> Iterator[GetResult]:
        body: dict[str, Any] = {
            "batch": request.limit,
            "where": request.where,
            "where_document": request.where_document,
            "include": sorted(request.fields),
            "after": None,
        }
        dimension = self._dimension()
        while True:  # one request per page
            data = self._remote._call("POST", f"{self._path}/scroll", body)
            if data["page"] is None:
                return
            yield get_result_from_wire(data["page"], dimension)
            body = {"after": data["after"]}

    def _query(self, request: QueryRequest) -> QueryResult:
        vectors = request.vectors
        body = {
            "vectors": None
            if vectors is None
            else self._remote.vectors(vectors, directions=self.space.normalized),
            "texts": request.texts,
            "k": request.k,
            "where": request.where,
            "include": sorted(request.fields),
            "exact": request.exact,
            "model": request.model,
            "params": request.params,
            "images": _images(request.images),
            "explain": request.explain,
            "where_document": request.where_document,
            "hybrid": request.hybrid,
            "hybrid_weights": list(request.weights),
        }
        data = self._remote._call("POST", f"{self._path}/query", body, idempotent=True)
        return query_result_from_wire(data, self._dimension())


# The HTTP method of each kind of write.
_WRITE_METHODS = {"add": "POST", "upsert": "PUT", "update": "PATCH"}


def _images(images: object) -> object:
    """Images as base64 of their encoded bytes: files read here, PIL images as PNG."""
    if images is None or isinstance(images, str | bytes) or not isinstance(images, Sequence):
        return images  # not a list: the engine says what it wants
    import base64

    from PIL import Image

    encoded = []
    for position, image in enumerate(images):
        if isinstance(image, str | os.PathLike):
            try:
                data = Path(image).read_bytes()
            except OSError as error:
                raise EmbedderError(
                    f"image at position {position}: {image} cannot be read ({error})"
                ) from None
        elif isinstance(image, bytes):
            data = image
        elif isinstance(image, Image.Image):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            data = buffer.getvalue()
        else:
            raise EmbedderError(
                f"image at position {position}: expected a file path, encoded bytes or a PIL "
                f"image; got {type(image).__name__}"
            )
        encoded.append(base64.b64encode(data).decode("ascii"))
    return encoded
