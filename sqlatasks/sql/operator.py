"""The operator's statements: look at the queue, deal with parked tasks, cancel a task.

Each runs in the caller's transaction; nothing here commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from sqlatasks import rows
from sqlatasks.models import CANCEL_CHANNEL, FINISHED_TABLE_NAME, QUEUES_TABLE_NAME, TABLE_NAME

_LIST = text(f"""
-- one task's live payloads, in claim order (sqlatasks.testing.enqueued)
SELECT payload::text FROM {TABLE_NAME}
WHERE task_name = :name AND failed_at IS NULL
ORDER BY priority DESC, scheduled_at, id
""")


async def task_payloads(conn: AsyncConnection, task_name: str) -> list[str]:
    """Payloads (JSON text) of the live tasks named `task_name`, in claim order."""
    return list((await conn.execute(_LIST, {"name": task_name})).scalars())


_STATS = text(f"""
-- per queue, tasks by state (a full scan: the table holds live work only)
SELECT queue,
       count(*) FILTER (WHERE failed_at IS NULL AND scheduled_at <= now()
                        AND (locked_until IS NULL OR locked_until < now())) AS due,
       count(*) FILTER (WHERE failed_at IS NULL AND scheduled_at > now()
                        AND locked_until IS NULL) AS scheduled,
       count(*) FILTER (WHERE failed_at IS NULL AND locked_until >= now()) AS running,
       count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed,
       extract(epoch FROM now() - min(scheduled_at) FILTER (
           WHERE failed_at IS NULL AND scheduled_at <= now()
             AND (locked_until IS NULL OR locked_until < now())))::float8 AS oldest_due_seconds,
       -- given back by a runner that did not know them (execution.Deferred): still waiting
       count(*) FILTER (WHERE failed_at IS NULL AND last_error LIKE 'TaskUnknown:%'
                        AND (locked_until IS NULL OR locked_until < now())) AS unknown
FROM {TABLE_NAME}
GROUP BY queue
ORDER BY queue
""")


async def queue_stats(conn: AsyncConnection) -> list[rows.QueueStats]:
    return [rows.QueueStats(*row) for row in await conn.execute(_STATS)]


_FAILED = text(f"""
-- parked tasks, newest failure first
SELECT id, task_name, queue, attempts, failed_at, last_error FROM {TABLE_NAME}
WHERE failed_at IS NOT NULL
  AND (CAST(:queue AS text) IS NULL OR queue = :queue)
  AND (CAST(:task_name AS text) IS NULL OR task_name = :task_name)
ORDER BY failed_at DESC, id DESC
LIMIT :limit
""")


async def failed_list(
    conn: AsyncConnection, *, queue: str | None, task_name: str | None, limit: int
) -> list[rows.FailedTask]:
    found = await conn.execute(_FAILED, {"queue": queue, "task_name": task_name, "limit": limit})
    return [rows.FailedTask(*row) for row in found]


_RETRY_FAILED_LOCK_KEYS = text(f"""
-- The unique-key trigger's lock, per key among the tasks to retry (in key order, so two
-- retries lock alike): no enqueue of these keys can commit between this and the UPDATE.
SELECT pg_advisory_xact_lock(CAST('{TABLE_NAME}'::regclass AS oid)::integer, hashtext(key))
FROM (
    SELECT DISTINCT unique_key AS key FROM {TABLE_NAME}
    WHERE failed_at IS NOT NULL AND unique_key IS NOT NULL
      AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(:ids))
    ORDER BY 1
) AS keys
""")
_RETRY_FAILED = text(f"""
UPDATE {TABLE_NAME} AS t
SET failed_at = NULL, attempts = 0, scheduled_at = now(),   -- a fresh start, max_attempts anew
    duplicate_of = NULL
WHERE failed_at IS NOT NULL AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(:ids))
  -- A keyed task is retried only if its key is free, and only the oldest of the parked tasks
  -- sharing a key; the rest stay parked. (Run after the locks: a fresh snapshot sees every
  -- task that holds a key now.)
  AND (t.unique_key IS NULL OR (
      NOT EXISTS (SELECT FROM {TABLE_NAME} AS live
                  WHERE live.unique_key = t.unique_key AND live.failed_at IS NULL)
      AND t.id = (SELECT min(same.id) FROM {TABLE_NAME} AS same
                  WHERE same.unique_key = t.unique_key AND same.failed_at IS NOT NULL
                    AND (CAST(:ids AS bigint[]) IS NULL OR same.id = ANY(:ids)))))
""")
_DELETE_FAILED = text(f"""
-- parked tasks removed for good
DELETE FROM {TABLE_NAME}
WHERE failed_at IS NOT NULL AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(:ids))
""")


async def failed_retry(conn: AsyncConnection, ids: Sequence[int] | None) -> int:
    """Make parked tasks due again (all of them when `ids` is None), except keyed tasks whose
    key another task holds; returns how many were retried."""
    parameters = {"ids": None if ids is None else list(ids)}
    await conn.execute(_RETRY_FAILED_LOCK_KEYS, parameters)
    return (await conn.execute(_RETRY_FAILED, parameters)).rowcount


async def failed_delete(conn: AsyncConnection, ids: Sequence[int] | None) -> int:
    """Delete parked tasks (all of them when `ids` is None)."""
    result = await conn.execute(_DELETE_FAILED, {"ids": None if ids is None else list(ids)})
    return result.rowcount


_CANCEL = text(f"""
-- cancel a task: delete its row whatever its state, keep it as cancelled if asked, and tell
-- the worker running it (if any)
WITH gone AS (
    -- Deleted even while it runs: the row is all a claim can take, so no attempt of this
    -- task starts again, whatever its running attempt does next (fail, time out, lose its
    -- worker); that attempt's outcome matches no row and writes nothing.
    DELETE FROM {TABLE_NAME}
    WHERE id = :id
    RETURNING id, task_name, queue, payload, attempts, max_attempts, last_error, unique_key,
              locked_by, created_at, lease_token IS NOT NULL AS held,
              coalesce(locked_until >= now(), false) AS running
), kept AS (
    -- retention: the caller's `keep`, else the task's own @task(keep=) (names and seconds
    -- passed in), else none; its trigger wakes wait_for()
    INSERT INTO {FINISHED_TABLE_NAME} (id, task_name, queue, state, payload, attempts,
        max_attempts, last_error, unique_key, worker, created_at, keep_until)
    SELECT g.id, g.task_name, g.queue, 'cancelled', g.payload, g.attempts, g.max_attempts,
           g.last_error, g.unique_key, g.locked_by, g.created_at,
           now() + make_interval(secs => coalesce(CAST(:keep AS float8), k.keep))
    FROM gone AS g
    LEFT JOIN unnest(CAST(:names AS text[]), CAST(:keeps AS float8[])) AS k(name, keep)
           ON k.name = g.task_name
    WHERE coalesce(CAST(:keep AS float8), k.keep, 0) > 0
)
SELECT gone.running
FROM gone
-- held, even past its lease: a worker may still be running it
LEFT JOIN LATERAL (SELECT pg_notify('{CANCEL_CHANNEL}', gone.id::text) WHERE gone.held) AS told
    ON true                                       -- the NOTIFY is sent when the caller commits
""")


async def task_cancel(
    conn: AsyncConnection,
    task_id: int,
    *,
    keep: float | None = None,
    task_keeps: Mapping[str, float] | None = None,
) -> Literal["deleted", "cancelling", "missing"]:
    """Delete the task in one statement: "deleted" if it was not running, "cancelling" if a
    worker held it under a valid lease (that worker is told, by NOTIFY on commit, to interrupt
    it), "missing" only if no row with this id existed. Either way, once the caller commits,
    no attempt of the task starts again. The task is kept as cancelled for `keep` seconds,
    or else for `task_keeps[its name]`, or not at all."""
    keeps = dict(task_keeps or {})
    parameters = {"id": task_id, "keep": keep, "names": list(keeps), "keeps": list(keeps.values())}
    running = (await conn.execute(_CANCEL, parameters)).scalar_one_or_none()
    if running is None:
        return "missing"
    return "cancelling" if running else "deleted"


_PAUSE = text(f"""
-- pause or resume a queue, for every runner at its next claim
INSERT INTO {QUEUES_TABLE_NAME} AS q (name, paused) VALUES (:name, :paused)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused
""")
_LIMITS = text(f"""
-- a queue's limits across every runner (NULL: none)
INSERT INTO {QUEUES_TABLE_NAME} AS q (name, max_running, per_second)
VALUES (:name, :max_running, :per_second)
ON CONFLICT (name) DO UPDATE
SET max_running = excluded.max_running, per_second = excluded.per_second,
    next_start = CASE WHEN q.per_second IS NOT DISTINCT FROM excluded.per_second
                      THEN q.next_start END      -- a new rate starts afresh
""")
_FORGET = text(f"""
-- a queue with nothing left to say goes back to the plain claim
DELETE FROM {QUEUES_TABLE_NAME}
WHERE name = :name AND NOT paused AND max_running IS NULL AND per_second IS NULL
""")


async def queue_pause(conn: AsyncConnection, name: str, *, paused: bool) -> None:
    await conn.execute(_PAUSE, {"name": name, "paused": paused})
    await conn.execute(_FORGET, {"name": name})


async def queue_limit(
    conn: AsyncConnection, name: str, *, max_running: int | None, per_second: float | None
) -> None:
    parameters = {"name": name, "max_running": max_running, "per_second": per_second}
    await conn.execute(_LIMITS, parameters)
    await conn.execute(_FORGET, {"name": name})
