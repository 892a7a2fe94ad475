"""The worker's hottest statements (the claim, the ack) on asyncpg's own connection, under
SQLAlchemy's.

A statement stays a `TextClause` of its module; `Prepared` compiles it once for asyncpg
(`$1, $2, …`, one number per parameter name) and `fetch`/`execute` send it with asyncpg's own
calls, skipping SQLAlchemy's per-statement layers (its execution context, the adapter's hop
through a greenlet, its result rows): about a tenth of a worker's CPU at 1x100
(docs/performance.md). asyncpg keeps the prepared statement per connection in its statement
cache, or prepares it unnamed every time when `statement_cache_size=0` (PgBouncer's
transaction mode, `sqlatasks.poolers`).

Only on a connection in AUTOCOMMIT (the worker's engine), where each statement is its own
transaction and SQLAlchemy has none to begin first; any other connection (`testing`, the
supervisor's rescue in a transaction) goes through `conn.execute`, as before. Errors are raised
as SQLAlchemy's execution would raise them: a `DBAPIError` whose `orig` is the driver's
exception, its SQLSTATE found by `errors.sqlstate`, so `except SQLAlchemyError` and
`errors.discards_connection` hold as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]  # (SQLAlchemy's, untyped)
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement, and its text as asyncpg takes it: `names[i]` is parameter `$i+1`."""

    clause: TextClause
    text: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, clause: TextClause) -> Prepared:
        compiled = clause.compile(dialect=_DIALECT)
        return cls(clause, compiled.string, tuple(compiled.positiontup or ()))

    def arguments(self, parameters: Mapping[str, Any]) -> list[Any]:
        return [parameters[name] for name in self.names]


async def _driver(conn: AsyncConnection) -> Any:
    """asyncpg's connection under `conn` if it is in AUTOCOMMIT, else None."""
    if conn.dialect.driver != "asyncpg":
        return None
    raw = await conn.get_raw_connection()
    if getattr(raw.dbapi_connection, "autocommit", False) is not True:
        return None
    return raw.driver_connection


async def fetch(
    conn: AsyncConnection, statement: Prepared, parameters: Mapping[str, Any]
) -> Sequence[Sequence[Any]]:
    """The rows `statement` returns, as sequences in its RETURNING order."""
    driver = await _driver(conn)
    if driver is None:
        return (await conn.execute(statement.clause, dict(parameters))).all()
    arguments = statement.arguments(parameters)
    try:
        rows: list[Any] = await driver.fetch(statement.text, *arguments)
    except _DRIVER_ERRORS as error:
        raise DBAPIError(statement.text, arguments, error) from error
    return rows


async def execute(conn: AsyncConnection, statement: Prepared, parameters: Mapping[str, Any]) -> int:
    """Run `statement`; the number of rows it changed."""
    driver = await _driver(conn)
    if driver is None:
        return int((await conn.execute(statement.clause, dict(parameters))).rowcount)
    arguments = statement.arguments(parameters)
    try:
        status: str = await driver.execute(statement.text, *arguments)
    except _DRIVER_ERRORS as error:
        raise DBAPIError(statement.text, arguments, error) from error
    return int(status.rpartition(" ")[2])  # "DELETE 5"
