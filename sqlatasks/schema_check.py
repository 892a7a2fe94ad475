"""Whether the database's queue tables are the ones this sqlatasks needs: one rule, one line.

Asked by the runner's start-up, every `sqlatasks` command, `/readyz`, `sqlatasks health`,
`enqueue_many` (on the error a missing column or table gives), and by the application itself
through `check_schema` — at its own start-up, since `session.add(enqueue(...))` is flushed by
the application's session, where sqlatasks sees no error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from sqlatasks import errors, models
from sqlatasks.sql import server

MIGRATE = "run `sqlatasks migrate` (or `alembic upgrade head`, with your alembic history)"
MISSING_OBJECT_STATES = frozenset({"42P01", "42703", "42883"})
"""SQLSTATEs of a statement naming what the database does not have (undefined_table,
undefined_column, undefined_function: PostgreSQL's Appendix A): a schema behind the code."""


def version_problem(version: int | None) -> str | None:
    """What is wrong with a queue table at `version` (`server.schema_version`: None for no
    table) for this sqlatasks, as one line naming the fix; None when it will do. An older
    schema fails every claim and, worse, every enqueue() in the application; a newer one
    (migrated ahead of a rolling deploy) will do: migrations add, not remove."""
    if version is None:
        return (
            f"the queue table {models.TABLE_NAME} does not exist: check --schema "
            f"(SQLATASKS_SCHEMA), or {MIGRATE}"
        )
    if version < models.SCHEMA_VERSION:
        found = f"schema version {version}" if version else "no schema version in its comment"
        return (
            f"the queue table {models.TABLE_NAME} is at {found}, this sqlatasks needs "
            f"{models.SCHEMA_VERSION}: {MIGRATE}"
        )
    return None


async def check_schema(bind: AsyncEngine | AsyncConnection | AsyncSession) -> int:
    """The schema version of the database behind `bind`; raises SchemaError, with the one line
    naming the fix, when the queue table is missing or older than this sqlatasks.

    For an application's start-up (a FastAPI lifespan): `session.add(enqueue(...))` against a
    database behind fails in the application's own flush, with PostgreSQL's "column … does
    not exist", where sqlatasks sees nothing. `check_schema_sync` for a synchronous bind.
    """
    if isinstance(bind, AsyncEngine):
        async with bind.connect() as conn:
            version = await server.schema_version(conn)
    elif isinstance(bind, AsyncSession):
        version = await server.schema_version(await bind.connection())
    elif isinstance(bind, AsyncConnection):
        version = await server.schema_version(bind)
    else:
        raise TypeError(
            f"check_schema() takes an async engine, connection or session, not "
            f"{type(bind).__name__}: use check_schema_sync()"
        )
    return _checked(version)


def check_schema_sync(bind: Engine | Connection | Session) -> int:
    """`check_schema` for a synchronous engine, connection or session (Flask, scripts)."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return _checked(server.schema_version_sync(conn))
    conn = bind.connection() if isinstance(bind, Session) else bind
    return _checked(server.schema_version_sync(conn))


def _checked(version: int | None) -> int:
    problem = version_problem(version)
    if problem is not None:
        raise errors.SchemaError(problem)
    assert version is not None
    return version


@contextmanager
def named_when_behind() -> Iterator[None]:
    """Raise SchemaError (from the original) for an error of the database lacking a table,
    column or function that sqlatasks's statements inside name; anything else as it is."""
    try:
        yield
    except Exception as exc:
        schema = behind(exc)
        if schema is None:
            raise
        raise schema from exc


def behind(exc: BaseException) -> errors.SchemaError | None:
    """A SchemaError for `exc` when it is the database lacking something this sqlatasks's
    statement names (a schema behind the code), else None."""
    if errors.sqlstate(exc) not in MISSING_OBJECT_STATES:
        return None
    return errors.SchemaError(
        f"the database's sqlatasks schema is older than this sqlatasks (version "
        f"{models.SCHEMA_VERSION}): {MIGRATE} — the database said: {errors.one_line(exc)}"
    )
