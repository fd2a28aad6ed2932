"""Migrations: re-embedding a collection into a new version in the background, their
status, and stopping them."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import SkipValidation

from latentdb.api import Database, Migration, MigrationStatus, version_names
from latentdb.errors import NotFoundError
from latentdb.server._access import Access, Authorized
from latentdb.server._models import Body, argument
from latentdb.server._openapi import responses
from latentdb.server._plumbing import AnsweringRoute, json_response, scrub
from latentdb.server._replies import MigrationEntry, MigrationReply, SpaceComparisonReply

__all__ = ["router"]


class MigrateBody(Body):
    """Arguments of ``migrate`` (always in the background on the server)."""

    name: SkipValidation[str]
    embedder: SkipValidation[str | None] = argument(Database.migrate, "embedder")
    reduce: SkipValidation[int | None] = argument(Database.migrate, "reduce")
    new_name: SkipValidation[str | None] = argument(Database.migrate, "new_name")


class PreviewBody(Body):
    """Arguments of ``Migration.preview``."""

    sample: SkipValidation[int] = argument(Migration.preview, "sample")
    k: SkipValidation[int] = argument(Migration.preview, "k")


router = APIRouter(prefix="/v1/migrations", tags=["migrations"], route_class=AnsweringRoute)


def _status(access: Access, status: MigrationStatus) -> dict[str, Any]:
    wire = dataclasses.asdict(status)
    if wire["error"] is not None:
        wire["error"] = scrub(wire["error"], access.database)
    return wire


def _reply(access: Access, migration: Migration, *, running: bool) -> Response:
    status = _status(access, migration.status())
    return json_response({"id": migration.id, "running": running, "status": status})


def _find(access: Access, migration_id: int, *, write: bool) -> Migration:
    # The key first, the lookup after: without a valid key, every id gets the same
    # 401, so no answer tells which ids exist (issue 15, defect 6). A migration of a
    # name the key may not use is as absent to it as in list_migrations.
    access.check(write=write)
    for migration in access.database.list_migrations():
        if migration.id != migration_id:
            continue
        status = migration.status()
        if access.allows(status.alias):
            if write:  # stopping it leaves its target part filled
                access.check(*sorted({status.alias, status.target}), write=True)
            return migration
        break
    raise NotFoundError(f"no migration {migration_id}")


def migration_names(database: Database, name: object, new_name: object) -> set[str]:
    """Every name ``migrate(name, new_name=)`` creates, renames or writes: ``name``,
    the new collection and, when ``name`` is a collection rather than an alias, the
    name it is retired under (``docs`` -> ``docs-v1``); a resumed run's target."""
    names = {str(name)} | ({str(new_name)} if new_name is not None else set())
    if not isinstance(name, str):
        return names  # the engine names what is wrong
    aliases = database.list_aliases()
    collections = set(database.list_collections())
    if name not in aliases and name not in collections:
        return names  # the engine says it is not found
    source = aliases.get(name, name)
    retired, default_new = version_names(
        source, lambda candidate: candidate in aliases or candidate in collections
    )
    if name not in aliases:
        names.add(retired)
    for migration in database.list_migrations():
        status = migration.status()
        if status.alias == name and status.state == "running":
            return names | {status.target}  # resumed: new_name is not used
    return names | {default_new if new_name is None else str(new_name)}


@router.post(
    "",
    summary="migrate (in the background)",
    response_model=MigrationReply,
    responses=responses(404, 409),
)
def migrate(body: MigrateBody, access: Authorized) -> Response:
    access.check(str(body.name), write=True)
    if access.key is not None and access.key.collections is not None:
        # A key for some names must hold every name the migration touches, or it
        # could create and rename collections outside them (issue 15, defect 5).
        names = migration_names(access.database, body.name, body.new_name)
        access.check(*sorted(names), write=True)
    migration = access.database.migrate(
        body.name,
        embedder=body.embedder,
        reduce=body.reduce,
        new_name=body.new_name,
        background=True,
    )
    return _reply(access, migration, running=True)


@router.get(
    "", summary="list_migrations", response_model=list[MigrationEntry], responses=responses()
)
def list_migrations(access: Authorized) -> Response:
    access.check(write=False)
    replies = []
    for migration in access.database.list_migrations():
        status = migration.status()
        if access.allows(status.alias):
            replies.append({"id": migration.id, "status": _status(access, status)})
    return json_response(replies)


@router.get(
    "/{migration_id}",
    summary="Migration status; ?wait=SECONDS waits for a background run to end",
    response_model=MigrationReply,
    responses=responses(404),
)
def migration_status(
    migration_id: int,
    access: Authorized,
    wait: float = Query(0.0, ge=0.0, allow_inf_nan=False, description="At most 30 s."),
) -> Response:
    migration = _find(access, migration_id, write=False)
    try:
        migration.wait(min(wait, 30.0))
    except TimeoutError:
        return _reply(access, migration, running=True)
    except Exception:  # the run failed: status().error says how
        pass
    return _reply(access, migration, running=False)


@router.post(
    "/{migration_id}/stop",
    summary="Migration.stop",
    response_model=MigrationReply,
    responses=responses(404, write=True),
)
def stop_migration(migration_id: int, access: Authorized) -> Response:
    migration = _find(access, migration_id, write=True)
    migration.stop()
    return _reply(access, migration, running=False)


@router.post(
    "/{migration_id}/preview",
    summary="Migration.preview",
    response_model=SpaceComparisonReply,
    responses=responses(404),
)
def preview_migration(migration_id: int, body: PreviewBody, access: Authorized) -> Response:
    migration = _find(access, migration_id, write=False)
    status = migration.status()
    access.check(status.source, status.target, write=False)  # it reads both
    comparison = migration.preview(sample=body.sample, k=body.k)
    return json_response(comparison.to_dict())
