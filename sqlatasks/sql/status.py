"""Reading what became of a task: the queue row, else the kept finished row.

Each runs in the caller's transaction and writes nothing. The state is derived from the row at
the database's `now()`, the same rules the claim and `queue_stats` use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from sqlatasks import rows
from sqlatasks.models import FINISHED_TABLE_NAME, TABLE_NAME

# Both tables, the same columns; a task is in one of them at most (its move is one statement).
_BOTH = f"""
SELECT id,
       CASE WHEN failed_at IS NOT NULL THEN 'failed'
            WHEN locked_until >= now() THEN 'running'
            WHEN scheduled_at > now() THEN 'scheduled'
            ELSE 'queued' END AS state,
       task_name, queue, attempts, max_attempts, last_error, unique_key, created_at,
       scheduled_at, NULL::timestamptz AS started_at, failed_at AS finished_at,
       CASE WHEN locked_until >= now() THEN locked_by END AS worker,
       NULL::text AS result, CASE WHEN CAST(:payload AS boolean) THEN payload::text END AS payload,
       progress::text AS progress
FROM {TABLE_NAME}
WHERE {{queue_where}}
UNION ALL
SELECT id, state, task_name, queue, attempts, max_attempts, last_error, unique_key,
       created_at, NULL, started_at, finished_at, worker, result::text,
       CASE WHEN CAST(:payload AS boolean) THEN payload::text END, progress::text
FROM {FINISHED_TABLE_NAME}
WHERE {{finished_where}}
"""

_GET = text(
    "-- one task by id, live or kept\n"
    + _BOTH.format(queue_where="id = :id", finished_where="id = :id")
)

_GET_BY_KEY = text(
    "-- the newest task that held a unique key, live, parked or kept (not a duplicate refused)\n"
    + _BOTH.format(
        queue_where="unique_key = :key AND duplicate_of IS NULL",
        finished_where="unique_key = :key",
    )
    + "ORDER BY id DESC LIMIT 1"
)


async def task_get(conn: AsyncConnection, task_id: int, *, payload: bool) -> Row[Any] | None:
    """The task's row as `rows.TaskInfo`'s fields, result, payload and progress as JSON text;
    or None."""
    return (await conn.execute(_GET, {"id": task_id, "payload": payload})).first()


async def task_get_by_key(conn: AsyncConnection, key: str, *, payload: bool) -> Row[Any] | None:
    """`task_get` of the newest task enqueued with `key` (the one with the highest id)."""
    return (await conn.execute(_GET_BY_KEY, {"key": key, "payload": payload})).first()


_KEPT = text(f"""
-- kept finished tasks per queue (the pruning keeps the table to one retention time of work)
SELECT queue,
       count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       extract(epoch FROM now() - min(finished_at))::float8 AS oldest_seconds
FROM {FINISHED_TABLE_NAME}
GROUP BY queue
ORDER BY queue
""")


async def kept_counts(conn: AsyncConnection) -> Sequence[rows.KeptCount]:
    return [rows.KeptCount(*row) for row in await conn.execute(_KEPT)]
