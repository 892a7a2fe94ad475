"""Statements any role issues: label a connection, check the schema, read the clock."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from sqlatasks.models import TABLE_NAME

_SET_NAME = text("SELECT set_config('application_name', :name, false)")
_TABLE_EXISTS = text("SELECT to_regclass(:name) IS NOT NULL")
_NOW = text("SELECT now()")


async def connection_name(conn: AsyncConnection, name: str) -> None:
    """Label the session in pg_stat_activity (application_name), for operators and tests."""
    await conn.execute(_SET_NAME, {"name": name})


async def database_check(conn: AsyncConnection) -> bool:
    """Whether the queue table exists (the database answered if this returns at all)."""
    found = await conn.execute(_TABLE_EXISTS, {"name": TABLE_NAME})
    return bool(found.scalar_one())


async def database_now(conn: AsyncConnection) -> datetime:
    """The database's clock: the start of the current transaction (`now()`)."""
    return (await conn.execute(_NOW)).scalar_one()  # type: ignore[no-any-return]
