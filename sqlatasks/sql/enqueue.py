"""The producer's statements: insert tasks in the application's own transaction.

Nothing here commits: the caller's transaction decides whether the tasks ever exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from sqlatasks import rows
from sqlatasks.models import TABLE_NAME
from sqlatasks.sql import server

COPY_COLUMNS = ("task_name", "queue", "priority", "max_attempts", "payload")


def database_now_plus(seconds: float) -> ColumnElement[datetime]:
    """`now() + seconds`, evaluated by the database when the row is inserted."""
    return func.now() + timedelta(seconds=seconds)


async def task_copy(
    session: AsyncSession,
    records: Callable[[datetime | None], AsyncIterator[tuple[Any, ...]]],
    *,
    delay_seconds: float | None,
    run_at: datetime | None,
) -> None:
    """COPY rows (COPY_COLUMNS, then scheduled_at if delayed) in the session's transaction."""
    conn = await session.connection()
    # Run a statement first: the asyncpg adapter sends BEGIN lazily, and a COPY issued on the
    # raw connection before it would run outside the caller's transaction and survive rollback.
    now = await server.database_now(conn)
    scheduled_at = run_at
    if delay_seconds is not None:
        scheduled_at = now + timedelta(seconds=delay_seconds)
    columns = COPY_COLUMNS if scheduled_at is None else (*COPY_COLUMNS, "scheduled_at")
    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        TABLE_NAME, records=records(scheduled_at), columns=columns
    )


_INSERT_KEYED = text(f"""
WITH added AS (
    INSERT INTO {TABLE_NAME} (task_name, queue, priority, max_attempts, scheduled_at,
                              payload, unique_key, on_duplicate)
    SELECT :task_name, :queue, :priority, :max_attempts,
           coalesce(CAST(:run_at AS timestamptz),
                    now() + make_interval(secs => coalesce(CAST(:delay AS float8), 0))),
           CAST(row.payload AS jsonb), row.unique_key,
           CASE WHEN row.unique_key IS NOT NULL THEN CAST(:on_duplicate AS text) END
    -- ORDINALITY + ORDER BY: rows go in as given, so the first of a batch's duplicates wins
    FROM unnest(CAST(:payloads AS text[]), CAST(:keys AS text[]))
         WITH ORDINALITY AS row(payload, unique_key, n)
    ORDER BY row.n
    -- the insert trigger sets duplicate_of; a skipped duplicate is deleted after, yet returned
    RETURNING duplicate_of
)
SELECT count(*) FILTER (WHERE duplicate_of IS NULL) FROM added
""")


_LOCK_KEYS = text(f"""
-- The locks the unique-key trigger takes row by row, taken first in one order (by the lock's
-- own number): two batches with keys in opposite orders would otherwise deadlock.
SELECT pg_advisory_xact_lock(CAST(CAST('{TABLE_NAME}' AS regclass) AS oid)::integer, h)
FROM (SELECT DISTINCT hashtext(k) AS h
      FROM unnest(CAST(:keys AS text[])) AS k WHERE k IS NOT NULL) AS locks
ORDER BY h
""")


async def task_insert_keyed(
    session: AsyncSession,
    keyed: Sequence[rows.KeyedRow],
    *,
    task_name: str,
    queue: str,
    priority: int,
    max_attempts: int | None,
    delay_seconds: float | None,
    run_at: datetime | None,
    on_duplicate: str,
) -> int:
    """Insert rows that may carry unique keys, in order, in the session's transaction; returns
    how many were added (not duplicates). A delay counts from the transaction's `now()`."""
    conn = await session.connection()
    keys = [r.unique_key for r in keyed]
    await conn.execute(_LOCK_KEYS, {"keys": keys})
    result = await conn.execute(
        _INSERT_KEYED,
        {
            "task_name": task_name,
            "queue": queue,
            "priority": priority,
            "max_attempts": max_attempts,
            "run_at": run_at,
            "delay": delay_seconds,
            "on_duplicate": on_duplicate,
            "payloads": [r.payload for r in keyed],
            "keys": keys,
        },
    )
    return int(result.scalar_one())
