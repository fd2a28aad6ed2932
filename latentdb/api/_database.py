"""Database: the promise every transport keeps, written once, and the checks of a
collection's settings that each implementation applies the same way."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from latentdb._closeable import Closeable
from latentdb.analysis import SpaceComparison
from latentdb.api._migration import Migration, MigrationProgress
from latentdb.api._validation import (
    MAX_DIMENSION,
    MAX_K,
    check_callable,
    check_collection_name,
    check_flag,
    check_name,
    check_non_negative,
    check_text,
)
from latentdb.embed import get_embedder
from latentdb.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    DimensionMismatchError,
    InvalidArgumentError,
    ModelMismatchError,
)
from latentdb.index import EXACT_KIND, IndexSpec, ann_kind_names
from latentdb.space import METRICS, LatentSpace, Metric

if TYPE_CHECKING:
    from latentdb.api._collection import Collection

__all__ = [
    "DEFAULT_RECALL_TARGET",
    "EXTERNAL",
    "EXTERNAL_MODEL",
    "CollectionSettings",
    "Database",
    "MigrationRequest",
    "check_recall_target",
    "check_require_model",
    "check_same_space",
    "collection_requires_model",
    "collection_space",
    "reduced_space",
]

# The model name of a collection whose vectors come from outside, when none is given.
EXTERNAL_MODEL = "external"
# The embedder name of a collection whose vectors users bring (stored as None).
EXTERNAL = "external"
# Recall@10 that approximate search is tuned to reach unless a collection says otherwise.
DEFAULT_RECALL_TARGET = 0.95


def check_recall_target(value: object) -> float:
    """A recall target: a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise InvalidArgumentError(f"recall_target must be a number in (0, 1]; got {value!r}")
    return float(value)


def check_require_model(value: object, embedder: str | None, model: str | None) -> bool:
    """``create_collection``'s ``require_model=``: a bool, and when True for a
    collection without an embedder, a ``model=`` naming its vectors' model (writes
    must then name it; "external", the name of no model, would check nothing).

    Raises:
        InvalidArgumentError: not a bool, or no model named.
    """
    required = check_flag(value, "require_model")
    if required and embedder is None and model is None:
        raise InvalidArgumentError(
            "a collection without an embedder needs model= naming the model its vectors "
            "come from (e.g. model='openai/text-embedding-3-small'): every write of "
            "vectors must then say model= the same, so that vectors of another model "
            "cannot slip in. To accept vectors without a model name, create it with "
            "require_model=False"
        )
    return required


def collection_requires_model(config: Mapping[str, object]) -> bool:
    """Whether a collection's stored config requires ``model=`` with vectors: collections
    created before the setting existed have none and keep accepting vectors without."""
    return config.get("require_model") is True


def reduced_space(space: LatentSpace, spec: IndexSpec, reduce: int | None) -> LatentSpace:
    """``space`` with ``create_collection``'s ``reduce=`` recorded (checked: an ANN index,
    and 1 <= reduce < dimension); unchanged when ``reduce`` is None."""
    if reduce is None:
        return space
    if spec.exact:
        raise InvalidArgumentError(
            f"reduce= needs an ANN index ({ann_kind_names()}): a "
            f"{EXACT_KIND} index scans the full vectors"
        )
    return replace(space, reduce=reduce)  # LatentSpace checks the value


def check_same_space(
    name: str,
    existing: tuple[LatentSpace, str | None],
    wanted: tuple[LatentSpace, str | None],
    reduce: int | None,
) -> None:
    """``get_or_create_collection``'s check that an existing collection's (space,
    embedder) is the one asked for (and its reduction, when ``reduce`` is given).

    Raises:
        CollectionExistsError: naming each difference.
    """
    (have, have_embedder), (want, want_embedder) = existing, wanted
    differences = [
        f"{label} {theirs!r} (asked {mine!r})"
        for label, theirs, mine in (
            ("embedder", have_embedder, want_embedder),
            ("model", have.model, want.model),
            ("dimension", have.dimension, want.dimension),
            ("metric", have.metric, want.metric),
            ("reduce", have.reduce, have.reduce if reduce is None else reduce),
        )
        if theirs != mine
    ]
    if differences:
        raise CollectionExistsError(
            f"collection {name!r} exists with a different latent space: " + ", ".join(differences)
        )


def collection_space(
    dimension: int | None,
    metric: str,
    embedder: str | None,
    model: str | None,
) -> tuple[LatentSpace, str | None]:
    """The latent space (and the embedder name, None for outside vectors) that
    ``create_collection``'s arguments ask for; the embedder is loaded to learn its
    model, fingerprint and dimension.

    Raises:
        InvalidArgumentError, DimensionMismatchError, ModelMismatchError,
        EmbedderError: as :meth:`Database.create_collection` says.
    """
    if not isinstance(metric, str) or metric not in METRICS:
        raise InvalidArgumentError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    if dimension is not None:
        check_non_negative(dimension, "dimension", minimum=1, maximum=MAX_DIMENSION)
    check_text(embedder, "embedder", optional=True)
    check_text(model, "model", optional=True)
    if embedder is None or embedder == "external":
        if dimension is None:
            raise InvalidArgumentError(
                "a collection without an embedder needs dimension= (the width of the "
                "vectors you will add)"
            )
        space = LatentSpace(
            model=model or EXTERNAL_MODEL,
            fingerprint=None,
            dimension=dimension,
            metric=metric,
            normalized=metric == "cosine",
        )
        return space, None
    encoder = get_embedder(embedder)
    if dimension is not None and dimension != encoder.dimension:
        raise DimensionMismatchError(
            f"embedder {embedder!r} makes vectors of dimension {encoder.dimension}; "
            f"got dimension={dimension}"
        )
    if model is not None and model != encoder.model:
        raise ModelMismatchError(
            f"embedder {embedder!r} is model {encoder.model!r}; got model={model!r}"
        )
    space = LatentSpace(
        model=encoder.model,
        fingerprint=encoder.fingerprint,
        dimension=encoder.dimension,
        metric=metric,
        normalized=metric == "cosine",
    )
    return space, embedder


@dataclass(frozen=True)
class MigrationRequest:
    """A checked ``migrate`` (see there): all but the name."""

    embedder: str | None
    reduce: int | None
    new_name: str | None
    background: bool
    progress: MigrationProgress | None


@dataclass(frozen=True)
class CollectionSettings:
    """``create_collection``'s settings, as given (see there)."""

    dimension: int | None
    metric: str
    embedder: str | None
    model: str | None
    index: str | IndexSpec
    recall_target: float
    reduce: int | None
    require_model: bool

    def checked(self) -> tuple[LatentSpace, str | None, dict[str, Any]]:
        """The space, the embedder's name (None for outside vectors) and the stored
        config (index, recall target, require_model) they make; loads the embedder.

        Raises:
            InvalidArgumentError, DimensionMismatchError, ModelMismatchError,
            EmbedderError: as :meth:`Database.create_collection` says.
        """
        space, embedder = collection_space(self.dimension, self.metric, self.embedder, self.model)
        spec = IndexSpec.parse(self.index)
        space = reduced_space(space, spec, self.reduce)
        config = {
            "index": spec.to_dict(),
            "recall_target": check_recall_target(self.recall_target),
            "require_model": check_require_model(self.require_model, embedder, self.model),
        }
        return space, embedder, config


class Database(Closeable):
    """A latentdb database: collections of records, each bound to one latent space,
    and aliases that name them.

    Open one with :func:`latentdb.connect`: a folder gives the embedded engine, a URL
    a server's client; :func:`latentdb.distributed.connect` gives a sharded one. All
    three have these methods, with these arguments, results and errors.
    """

    @abc.abstractmethod
    def close(self) -> None:
        """Close the database; collections obtained from it stop working."""

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
    ) -> Collection:
        """Create a collection bound to one latent space.

        Args:
            name: 1-128 letters, digits, ``.``, ``_``, ``-``.
            dimension: Required when ``embedder`` is None; else taken from the embedder.
            metric: ``"cosine"`` (vectors stored unit length), ``"l2"`` or ``"ip"``.
            embedder: Registered embedder name (default ``"minilm"``), or None (or
                ``"external"``) when you bring your own vectors.
            model: With ``embedder=None``, names where the vectors come from (e.g.
                ``"openai/text-embedding-3-small"``); with an embedder, must match it.
            index: ``"auto"`` (exact while under 20,000 rows, then HNSW), ``"flat"``,
                ``"hnsw"``, ``"hnsw-sq8"``, ``"ivf"``, ``"ivf-pq"``, or an
                :class:`~latentdb.index.IndexSpec` with explicit build parameters.
            recall_target: The recall@10 that search parameters are tuned to reach.
            reduce: Index a PCA projection of the vectors to this many dimensions
                (learned from the rows when the first ANN segment is built; queries are
                projected the same way). The original vectors are kept: candidates are
                re-scored with them, so distances stay exact and the re-rank depth is
                tuned with the other knobs to reach ``recall_target``. Saves index
                memory and time per distance; :meth:`Collection.evaluate` shows what
                it costs in recall. Needs an ANN index (not ``"flat"``).
            require_model: Every write of vectors (``vectors=`` in ``add``,
                ``upsert`` and ``update``) must name their model with ``model=``, the
                collection's, so that vectors of another model can never slip in;
                a collection without an embedder then needs ``model=`` here. Texts
                and images the collection embeds itself need no ``model=``. False
                accepts vectors without a model name (a ``model=`` given is still
                checked). Fixed for the collection's life (see
                :attr:`Collection.require_model`).

        Returns:
            The new :class:`Collection`.

        Raises:
            CollectionExistsError: the name is taken.
            InvalidArgumentError: bad name, metric, dimension or ``reduce``; no
                ``model=`` for a collection without an embedder that requires it.
            DimensionMismatchError, ModelMismatchError: they contradict the embedder.
            EmbedderError: unknown embedder.
        """
        check_collection_name(name)
        return self._create_collection(
            name,
            CollectionSettings(
                dimension, metric, embedder, model, index, recall_target, reduce, require_model
            ),
        )

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
    ) -> Collection:
        """The collection called ``name``, created with these arguments if missing.

        An existing collection must be in the latent space asked for (and reduced to
        ``reduce`` dimensions, when that is given); its index settings and its
        ``require_model`` stay as they are (:attr:`Collection.require_model` says which).

        Raises:
            CollectionExistsError: it exists in another latent space than the one asked.
            and whatever :meth:`create_collection` raises.
        """
        check_collection_name(name)
        check_flag(require_model, "require_model")
        return self._get_or_create_collection(
            name,
            CollectionSettings(
                dimension, metric, embedder, model, index, recall_target, reduce, require_model
            ),
        )

    def get_collection(self, name: str) -> Collection:
        """The collection called ``name``, or the one the alias ``name`` points at.

        A collection got through an alias follows it: after :meth:`switch_alias` (here
        or in another process) its next call goes to the new collection.

        Raises:
            CollectionNotFoundError: no collection or alias has that name.
            InvalidArgumentError: ``name`` is not a string.
        """
        return self._get_collection(check_name(name))

    def list_collections(self) -> list[str]:
        """Names of every collection, sorted."""
        return self._list_collections()

    def delete_collection(self, name: str) -> None:
        """Delete a collection and all its records (a migration into it is cancelled).

        Raises:
            CollectionNotFoundError: there is none.
            InvalidArgumentError: ``name`` is an alias, an alias points at the
                collection, or a migration is re-embedding it; ``name`` is not a string.
        """
        self._delete_collection(check_name(name))

    def create_alias(self, alias: str, collection: str) -> None:
        """Make ``alias`` a second name of ``collection``, usable wherever a collection
        name is.

        Raises:
            CollectionExistsError: a collection or alias is already called ``alias``.
            CollectionNotFoundError: no collection called ``collection`` (an alias of
                an alias is refused too).
            InvalidArgumentError: a bad name.
        """
        check_collection_name(alias)
        self._create_alias(alias, check_name(collection, "collection"))

    def switch_alias(self, alias: str, collection: str) -> None:
        """Point an existing alias at another collection, atomically: every call after
        this one (in any process) reads the new collection, none sees a mix.

        Raises:
            CollectionNotFoundError: no such alias, or no collection ``collection``.
            InvalidArgumentError: a name is not a string.
        """
        check_name(alias, "alias")
        self._switch_alias(alias, check_name(collection, "collection"))

    def delete_alias(self, alias: str) -> None:
        """Remove an alias; its collection stays.

        Raises:
            CollectionNotFoundError: no such alias.
            InvalidArgumentError: ``alias`` is not a string.
        """
        self._delete_alias(check_name(alias, "alias"))

    def list_aliases(self) -> dict[str, str]:
        """Every alias and the name of the collection it points at, by alias."""
        return self._list_aliases()

    def migrate(
        self,
        name: str,
        *,
        embedder: str | None = None,
        reduce: int | None = None,
        new_name: str | None = None,
        background: bool = True,
        progress: MigrationProgress | None = None,
    ) -> Migration:
        """Re-embed every document of a collection with another embedder (or re-index
        its vectors as they are, with another ``reduce``) into a new collection, and
        switch ``name`` to it when the copy is complete and indexed.

        ``name`` is an alias or a collection. A collection ``docs`` is renamed
        ``docs-v1`` at the switch and ``docs`` becomes an alias of the new one (default
        name ``docs-v2``): code that reads ``docs`` needs no change. Until the switch,
        ``name`` reads the old version, and writes to it are carried over. Calling this
        again for a migration that was interrupted (even by a crash) resumes it.

        Args:
            name: The alias or collection to migrate.
            embedder: The new embedder (e.g. ``"sentence-transformers:/models/e5"``).
                None (or the collection's own): the vectors are copied, not re-embedded,
                so records without documents are fine; ``reduce`` must then change.
            reduce: The new collection's ``reduce=`` (see :meth:`create_collection`);
                None indexes it at full width.
            new_name: The new collection's name (default: the next ``-vN``).
            background: Run in a thread and return at once (``Migration.wait()``);
                False runs it here and returns when done.
            progress: ``progress(copied, total)`` after each batch.

        Returns:
            The :class:`Migration`.

        Raises:
            CollectionNotFoundError: no collection or alias ``name``.
            InvalidArgumentError: records without a document (they cannot be
                re-embedded; the count is given), nothing that would change (the same
                embedder and ``reduce``), a bad ``reduce``, the collection's embedder
                has drifted from its vectors (copying them would mix spaces), or another
                migration of ``name`` to a different target is running.
            EmbedderError, CollectionExistsError: bad embedder or ``new_name``.
        """
        check_name(name)
        check_text(embedder, "embedder", optional=True)
        if reduce is not None:
            check_non_negative(reduce, "reduce", minimum=1, maximum=MAX_DIMENSION)
        if new_name is not None:
            check_collection_name(new_name)
        background = check_flag(background, "background")
        check_callable(progress, "progress")
        return self._migrate(
            name, MigrationRequest(embedder, reduce, new_name, background, progress)
        )

    def list_migrations(self) -> list[Migration]:
        """Every migration of this database, running or done, oldest first."""
        return self._list_migrations()

    def compare(self, a: str, b: str, *, sample: int = 2000, k: int = 10) -> SpaceComparison:
        """How much the neighbourhoods of the same records change from collection ``a``
        to collection ``b``: e.g. a collection and its re-embedded version, before an
        alias switches to it (:meth:`Migration.preview` does this for a migration).

        Only the records both hold (by id) count. ``sample`` of them (fixed seed) are
        queries; each one's exact top-k among the shared records in ``a`` and in ``b``
        give the overlap@k and the verdict ("queries will see about 87% of the same
        top-10"). Also: the Spearman correlation of the distances, linear CKA and the
        residual of an orthogonal Procrustes fit of ``a`` onto ``b`` (the spaces' widths
        may differ), and the records whose neighbourhoods change most, with their
        documents. Every vector of both collections is read into this process (the
        server's, over HTTP). A bar on stderr shows the steps when it is a terminal.

        Args:
            a, b: The collections (or aliases) to compare.
            sample: Shared records used as queries (all of them when fewer).
            k: Neighbours per query.

        Returns:
            A :class:`~latentdb.analysis.SpaceComparison` (``str()`` gives markdown).

        Raises:
            CollectionNotFoundError: no collection or alias ``a`` or ``b``.
            InvalidArgumentError: no shared ids, or not more than k; sample or k
                under 1; a name that is not a string.
        """
        check_name(a, "a")
        check_name(b, "b")
        sample = check_non_negative(sample, "sample", minimum=1)
        k = check_non_negative(k, "k", minimum=1, maximum=MAX_K)
        return self._compare(a, b, sample=sample, k=k)

    # -- what each implementation provides -------------------------------------------

    @abc.abstractmethod
    def _create_collection(self, name: str, settings: CollectionSettings) -> Collection: ...

    def _get_or_create_collection(self, name: str, settings: CollectionSettings) -> Collection:
        """The collection ``name`` when its space is the one asked, else a new one."""
        return self._get_or_create(name, settings, lambda: self._create_collection(name, settings))

    def _get_or_create(
        self, name: str, settings: CollectionSettings, create: Callable[[], Collection]
    ) -> Collection:
        """``get_or_create_collection`` with the implementation's ``create``."""
        try:
            existing = self.get_collection(name)
        except CollectionNotFoundError:
            try:
                return create()
            except CollectionExistsError:  # another process created it meanwhile
                existing = self.get_collection(name)
        wanted = collection_space(
            settings.dimension, settings.metric, settings.embedder, settings.model
        )
        check_same_space(name, (existing.space, existing.embedder), wanted, settings.reduce)
        return existing

    @abc.abstractmethod
    def _get_collection(self, name: str) -> Collection: ...

    @abc.abstractmethod
    def _list_collections(self) -> list[str]: ...

    @abc.abstractmethod
    def _delete_collection(self, name: str) -> None: ...

    @abc.abstractmethod
    def _create_alias(self, alias: str, collection: str) -> None: ...

    @abc.abstractmethod
    def _switch_alias(self, alias: str, collection: str) -> None: ...

    @abc.abstractmethod
    def _delete_alias(self, alias: str) -> None: ...

    @abc.abstractmethod
    def _list_aliases(self) -> dict[str, str]: ...

    @abc.abstractmethod
    def _migrate(self, name: str, request: MigrationRequest) -> Migration: ...

    @abc.abstractmethod
    def _list_migrations(self) -> list[Migration]: ...

    def _compare(self, a: str, b: str, *, sample: int, k: int) -> SpaceComparison:
        """:meth:`compare`, measured in this process over both collections' vectors
        (the HTTP client asks its server instead)."""
        return self.get_collection(a)._compare_with(self.get_collection(b), sample=sample, k=k)
