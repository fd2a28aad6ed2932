"""One interface, three transports: the engine, the HTTP client and the sharded
collection implement the abstract classes of :mod:`latentdb.api`, none subclasses
another, and none changes a public signature it inherits (the sharded database may add
keywords after the interface's)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from latentdb.api import Collection, Database, Migration
from latentdb.client import RemoteCollection, RemoteDatabase, RemoteMigration
from latentdb.distributed import ShardedCollection, ShardedDatabase
from latentdb.engine import EmbeddedCollection, EmbeddedDatabase, EmbeddedMigration

IMPLEMENTATIONS = {
    Database: (EmbeddedDatabase, RemoteDatabase, ShardedDatabase),
    Collection: (EmbeddedCollection, RemoteCollection, ShardedCollection),
    Migration: (EmbeddedMigration, RemoteMigration),
}
CASES = [(base, cls) for base, classes in IMPLEMENTATIONS.items() for cls in classes]


def _parameters(member: Any) -> list[tuple[str, Any, Any, Any]]:
    function = member.fget if isinstance(member, property) else member
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in inspect.signature(function).parameters.values()
    ]


def _public(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in vars(cls).items()
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    }


@pytest.mark.parametrize(("base", "cls"), CASES, ids=lambda c: c.__name__)
def test_each_transport_implements_the_whole_interface(base: type, cls: type) -> None:
    assert issubclass(cls, base)
    assert not inspect.isabstract(cls), sorted(getattr(cls, "__abstractmethods__", ()))
    # Directly: no implementation is built on another one.
    others = {c for classes in IMPLEMENTATIONS.values() for c in classes} - {cls}
    assert not any(issubclass(cls, other) for other in others)


@pytest.mark.parametrize(("base", "cls"), CASES, ids=lambda c: c.__name__)
def test_no_transport_changes_a_public_signature(base: type, cls: type) -> None:
    for name, member in _public(base).items():
        own = vars(cls).get(name)
        if own is None:
            continue  # the interface's own method: the one signature there is
        theirs, mine = _parameters(member), _parameters(own)
        if cls is ShardedDatabase:  # shards= and replicas= come after the interface's
            mine = mine[: len(theirs)]
        assert [p[:3] for p in mine] == [p[:3] for p in theirs], f"{cls.__name__}.{name}"


def test_collection_methods_are_written_once() -> None:
    """Every public Collection method lives in the interface; the implementations give
    only the properties that say where their records are, and the hooks."""
    for cls in IMPLEMENTATIONS[Collection]:
        methods = {n for n, m in _public(cls).items() if not isinstance(m, property)}
        extra = {"page_after"} if cls is EmbeddedCollection else set()
        assert methods <= extra, f"{cls.__name__} overrides {sorted(methods - extra)}"
