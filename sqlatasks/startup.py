"""The runner's start-up check: the database answers, lets this runner in, and holds the queue
table at the schema version this sqlatasks needs.

Waiting helps only when the server is down or unreachable; everything else stops the runner at
once with one line naming the fix (docs/runner.md, "Start-up").
"""

from __future__ import annotations

import logging

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks import errors, models, schema_check
from sqlatasks.backoff import Backoff
from sqlatasks.sql import server

log = logging.getLogger(__name__)

BURST_DATABASE_WAIT = 30.0
"""Seconds a `--burst` runner waits for an unreachable database before it exits 1 (a batch
job must end); a service runner waits for as long as it takes."""
CONNECT_TIMEOUT = 10.0
"""Seconds the supervisor waits for one connection attempt (a host that drops packets)."""


async def wait_for_database(engine: AsyncEngine, *, give_up_after: float | None = None) -> None:
    """Return once the database answers and its queue table is at the schema version this
    sqlatasks needs; log one line per failed attempt and retry with backoff while the server
    is down or unreachable (transient, for a service).

    Raises ConfigurationError (the runner prints it as one line and exits 1) at once when
    waiting cannot help: no queue table, an older schema version, a role, password or database
    that the server refuses. With `give_up_after` (seconds: `--burst`), also once the database
    has been unreachable that long.
    """
    backoff = Backoff(first=1.0, most=30.0)
    started = anyio.current_time()
    while True:
        try:
            async with engine.connect() as conn:
                version = await server.schema_version(conn)
            break
        except (SQLAlchemyError, OSError) as exc:
            if errors.not_transient(exc):
                raise errors.ConfigurationError(
                    f"the database refuses this runner: {errors.one_line(exc)}"
                ) from exc
            delay = backoff.next()
            if give_up_after is not None and anyio.current_time() - started > give_up_after:
                raise errors.ConfigurationError(
                    f"database unreachable for {give_up_after:g} s ({errors.one_line(exc)}); "
                    "giving up (--burst)"
                ) from exc
            log.error("database unreachable (%s); retrying in %g s", errors.one_line(exc), delay)
            await anyio.sleep(delay)
    _check_schema(version)


def _check_schema(version: int | None) -> None:
    """Stop the runner (ConfigurationError) for a schema it cannot use; warn of a newer one."""
    needed = models.SCHEMA_VERSION
    problem = schema_check.version_problem(version)
    if problem is not None:
        raise errors.ConfigurationError(problem)
    assert version is not None
    if version > needed:
        log.warning(
            "the queue table is at schema version %d, newer than this sqlatasks knows (%d): "
            "upgrade sqlatasks",
            version,
            needed,
        )
