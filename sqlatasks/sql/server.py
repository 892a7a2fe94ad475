"""Statements any role issues: label a connection, check the schema, read the clock."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from sqlatasks import models
from sqlatasks.models import TABLE_NAME

_SET_NAME = text("SELECT set_config('application_name', :name, false)")
_SCHEMA = text(
    "-- does the queue table exist, and which schema version does its comment record?\n"
    "SELECT to_regclass(:name) IS NOT NULL, obj_description(to_regclass(:name), 'pg_class')"
)
_NOW = text("SELECT now()")


async def connection_name(conn: AsyncConnection, name: str) -> None:
    """Label the session in pg_stat_activity (application_name), for operators and tests."""
    await conn.execute(_SET_NAME, {"name": name})


async def schema_version(conn: AsyncConnection) -> int | None:
    """The schema version the queue table records in its comment (what `alembic upgrade`
    wrote: see sqlatasks.migrations); 0 if it records none, None if there is no queue table."""
    exists, comment = (await conn.execute(_SCHEMA, {"name": TABLE_NAME})).one()
    return models.schema_version(comment) if exists else None


def schema_version_sync(conn: Connection) -> int | None:
    """`schema_version` on a synchronous connection."""
    exists, comment = conn.execute(_SCHEMA, {"name": TABLE_NAME}).one()
    return models.schema_version(comment) if exists else None


async def database_now(conn: AsyncConnection) -> datetime:
    """The database's clock: the start of the current transaction (`now()`)."""
    return (await conn.execute(_NOW)).scalar_one()  # type: ignore[no-any-return]
