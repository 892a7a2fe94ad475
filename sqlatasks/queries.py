"""Every statement sqlatasks issues, one function each.

Lease rules that every write here follows: a claim writes a fresh `lease_token`, and every
later write about a claimed task (ack, fail, release) names that token, so a late write from a
worker that lost its lease changes nothing. All times are the database's `now()`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.elements import ColumnElement, TextClause

from sqlatasks.models import CANCEL_CHANNEL, PERIODIC_TABLE_NAME, TABLE_NAME

COPY_COLUMNS = ("task_name", "queue", "priority", "max_attempts", "payload")


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A row this worker holds under `lease_token` until its lease runs out."""

    id: int
    task_name: str
    queue: str
    payload: str
    attempts: int
    """Attempts including this one."""
    max_attempts: int | None
    lease_token: uuid.UUID


@dataclass(frozen=True, slots=True)
class Failure:
    id: int
    lease_token: uuid.UUID
    error: str
    retry_in: float | None
    """Seconds until due again; None parks the task as failed."""


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
    now = (await conn.execute(text("SELECT now()"))).scalar_one()
    scheduled_at = run_at
    if delay_seconds is not None:
        scheduled_at = now + timedelta(seconds=delay_seconds)
    columns = COPY_COLUMNS if scheduled_at is None else (*COPY_COLUMNS, "scheduled_at")
    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        TABLE_NAME, records=records(scheduled_at), columns=columns
    )


@dataclass(frozen=True, slots=True)
class KeyedRow:
    payload: str
    """JSON text."""
    unique_key: str | None


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
    rows: Sequence[KeyedRow],
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
    keys = [r.unique_key for r in rows]
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
            "payloads": [r.payload for r in rows],
            "keys": keys,
        },
    )
    return int(result.scalar_one())


def _claim(queue_filter: str) -> TextClause:
    return text(f"""
WITH due AS MATERIALIZED (
    -- MATERIALIZED: run the locking SELECT once; inlined, the planner may re-run it per
    -- joined row and lock more rows than LIMIT.
    SELECT id FROM {TABLE_NAME}
    WHERE failed_at IS NULL                     -- the claim index is partial on this
      AND scheduled_at <= now()
      AND (locked_until IS NULL OR locked_until < now())   -- free, or its lease expired
      {queue_filter}
    ORDER BY priority DESC, scheduled_at, id    -- the claim index order: no sort
    LIMIT :limit
    FOR UPDATE SKIP LOCKED                      -- concurrent claimers take disjoint rows
)
UPDATE {TABLE_NAME} AS t
SET attempts = t.attempts + 1,
    locked_until = now() + make_interval(secs => :lease),
    locked_by = :worker,
    lease_token = :token
FROM due
WHERE t.id = due.id
-- payload as text: pydantic parses and validates it in one pass, no json.loads first
RETURNING t.id, t.task_name, t.queue, t.payload::text AS payload, t.attempts, t.max_attempts
""")


# Two statements, not one with "cardinality(:queues) = 0 OR queue = ANY(:queues)": measured,
# that OR made the prepared claim about five times slower (its generic plan cannot drop it).
_CLAIM_ANY_QUEUE = _claim("")
_CLAIM_QUEUES = _claim("AND queue = ANY(CAST(:queues AS text[]))")


async def task_claim_plan(conn: AsyncConnection, *, queues: Sequence[str]) -> str:
    """EXPLAIN of the claim statement for `queues`: how PostgreSQL will find due tasks."""
    claim = _CLAIM_QUEUES if queues else _CLAIM_ANY_QUEUE
    parameters = {"limit": 10, "lease": 60.0, "worker": "explain", "token": uuid.uuid4()}
    explain = text(f"EXPLAIN {claim.text}")
    result = await conn.execute(explain, {**parameters, "queues": list(queues)})
    return "\n".join(result.scalars())


async def task_claim(
    conn: AsyncConnection,
    *,
    queues: Sequence[str],
    limit: int,
    lease_seconds: float,
    worker_id: str,
    token: uuid.UUID,
) -> list[ClaimedTask]:
    """Lease up to `limit` due tasks in one statement, oldest first within each priority,
    under `token` (fresh for every claim)."""
    parameters = {"limit": limit, "lease": lease_seconds, "worker": worker_id, "token": token}
    if queues:
        result = await conn.execute(_CLAIM_QUEUES, {**parameters, "queues": list(queues)})
    else:
        result = await conn.execute(_CLAIM_ANY_QUEUE, parameters)
    return [
        ClaimedTask(
            id=row.id,
            task_name=row.task_name,
            queue=row.queue,
            payload=row.payload,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            lease_token=token,
        )
        for row in result
    ]


_ACK = text(f"""
DELETE FROM {TABLE_NAME} AS t
USING unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[])) AS done(id, token)
WHERE t.id = done.id AND t.lease_token = done.token
""")


async def task_ack(conn: AsyncConnection, done: Sequence[tuple[int, uuid.UUID]]) -> int:
    """Delete finished tasks still held under the given leases; returns rows deleted."""
    result = await conn.execute(_ACK, {"ids": [i for i, _ in done], "tokens": [t for _, t in done]})
    return result.rowcount


_FINISH = text(f"""
DELETE FROM {TABLE_NAME}
-- the token, not locked_until: a lease that ran out but passed to no one is still ours, and a
-- claim by another worker changes the token (or skips this row once the DELETE has locked it)
WHERE id = :id AND lease_token = :token
""")


async def task_finish(conn: AsyncConnection, task_id: int, token: uuid.UUID) -> bool:
    """Delete a session task's row in the task's own transaction, if `token` still holds its
    lease; False means another claim took it, and the transaction must roll back."""
    result = await conn.execute(_FINISH, {"id": task_id, "token": token})
    return result.rowcount == 1


_FAIL = text(f"""
UPDATE {TABLE_NAME} AS t
SET locked_until = NULL,
    locked_by = NULL,
    lease_token = NULL,
    last_error = failed.error,
    -- a NULL delay parks the task: kept for inspection, never claimed again by itself
    failed_at = CASE WHEN failed.delay IS NULL THEN now() END,
    scheduled_at = now() + make_interval(secs => coalesce(failed.delay, 0))
FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[]),
            CAST(:errors AS text[]), CAST(:delays AS float8[]))
     AS failed(id, token, error, delay)
WHERE t.id = failed.id AND t.lease_token = failed.token
""")


async def task_fail(conn: AsyncConnection, failures: Sequence[Failure]) -> int:
    """Record failed attempts: due again after their delay, or parked; returns rows changed."""
    result = await conn.execute(
        _FAIL,
        {
            "ids": [f.id for f in failures],
            "tokens": [f.lease_token for f in failures],
            "errors": [f.error for f in failures],
            "delays": [f.retry_in for f in failures],
        },
    )
    return result.rowcount


_RELEASE = text(f"""
UPDATE {TABLE_NAME} AS t
SET locked_until = NULL,
    locked_by = NULL,
    lease_token = NULL,
    attempts = t.attempts - 1      -- an interrupted attempt is not a failure
FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[])) AS held(id, token)
WHERE t.id = held.id AND t.lease_token = held.token
""")


_UNCLAIM = text(f"""
UPDATE {TABLE_NAME}
SET locked_until = NULL, locked_by = NULL, lease_token = NULL, attempts = attempts - 1
WHERE lease_token = ANY(CAST(:tokens AS uuid[]))
""")


async def task_unclaim(conn: AsyncConnection, tokens: Sequence[uuid.UUID]) -> int:
    """Give back whatever claims under `tokens` leased (a claim whose answer was lost may still
    have committed), due at once and with the attempt uncounted."""
    return (await conn.execute(_UNCLAIM, {"tokens": list(tokens)})).rowcount


async def task_release(conn: AsyncConnection, held: Sequence[tuple[int, uuid.UUID]]) -> int:
    """Give back leased tasks unrun, due at once and with the attempt uncounted."""
    result = await conn.execute(
        _RELEASE, {"ids": [i for i, _ in held], "tokens": [t for _, t in held]}
    )
    return result.rowcount


_RESCUE = text(f"""
UPDATE {TABLE_NAME}
SET locked_until = NULL,
    locked_by = NULL,
    lease_token = NULL,
    last_error = :error,
    -- the attempt counts: a task that kills its worker must not spin, and parks at its limit
    failed_at = CASE WHEN attempts >= max_attempts THEN now() END,
    scheduled_at = now() + make_interval(secs => :delay)
WHERE locked_by = :worker
""")


_SNOOZE = text(f"""
UPDATE {TABLE_NAME} AS t
SET locked_until = NULL,
    locked_by = NULL,
    lease_token = NULL,
    attempts = t.attempts - 1,     -- asked to run later: not a failed attempt
    scheduled_at = now() + make_interval(secs => later.after)
FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[]), CAST(:afters AS float8[]))
     AS later(id, token, after)
WHERE t.id = later.id AND t.lease_token = later.token
""")


async def task_snooze(conn: AsyncConnection, later: Sequence[tuple[int, uuid.UUID, float]]) -> int:
    """Make leased tasks due again after their delays, the attempt uncounted."""
    result = await conn.execute(
        _SNOOZE,
        {
            "ids": [i for i, _, _ in later],
            "tokens": [t for _, t, _ in later],
            "afters": [a for _, _, a in later],
        },
    )
    return result.rowcount


async def task_rescue(conn: AsyncConnection, *, worker_id: str, delay: float, error: str) -> int:
    """Fail every task leased by a worker known to be dead, without waiting for its leases."""
    result = await conn.execute(_RESCUE, {"worker": worker_id, "delay": delay, "error": error})
    return result.rowcount


_LIST = text(f"""
SELECT payload::text FROM {TABLE_NAME}
WHERE task_name = :name AND failed_at IS NULL
ORDER BY priority DESC, scheduled_at, id
""")


async def task_payloads(conn: AsyncConnection, task_name: str) -> list[str]:
    """Payloads (JSON text) of the live tasks named `task_name`, in claim order."""
    return list((await conn.execute(_LIST, {"name": task_name})).scalars())


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    due: int
    scheduled: int
    running: int
    failed: int
    oldest_due_seconds: float | None
    """Age of the oldest due task (how long it has waited past its due time)."""


_STATS = text(f"""
SELECT queue,
       count(*) FILTER (WHERE failed_at IS NULL AND scheduled_at <= now()
                        AND (locked_until IS NULL OR locked_until < now())) AS due,
       count(*) FILTER (WHERE failed_at IS NULL AND scheduled_at > now()
                        AND locked_until IS NULL) AS scheduled,
       count(*) FILTER (WHERE failed_at IS NULL AND locked_until >= now()) AS running,
       count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed,
       extract(epoch FROM now() - min(scheduled_at) FILTER (
           WHERE failed_at IS NULL AND scheduled_at <= now()
             AND (locked_until IS NULL OR locked_until < now())))::float8 AS oldest_due_seconds
FROM {TABLE_NAME}
GROUP BY queue
ORDER BY queue
""")


async def queue_stats(conn: AsyncConnection) -> list[QueueStats]:
    return [QueueStats(*row) for row in await conn.execute(_STATS)]


@dataclass(frozen=True, slots=True)
class FailedTask:
    id: int
    task_name: str
    queue: str
    attempts: int
    failed_at: datetime
    last_error: str | None


_FAILED = text(f"""
SELECT id, task_name, queue, attempts, failed_at, last_error FROM {TABLE_NAME}
WHERE failed_at IS NOT NULL
  AND (CAST(:queue AS text) IS NULL OR queue = :queue)
  AND (CAST(:task_name AS text) IS NULL OR task_name = :task_name)
ORDER BY failed_at DESC, id DESC
LIMIT :limit
""")


async def failed_list(
    conn: AsyncConnection, *, queue: str | None, task_name: str | None, limit: int
) -> list[FailedTask]:
    found = await conn.execute(_FAILED, {"queue": queue, "task_name": task_name, "limit": limit})
    return [FailedTask(*row) for row in found]


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
DELETE FROM {TABLE_NAME}
WHERE id = :id AND (locked_until IS NULL OR locked_until < now())   -- not while it runs
""")


_CANCEL_RUNNING = text(f"""
SELECT pg_notify('{CANCEL_CHANNEL}', id::text)    -- sent when the caller commits
FROM {TABLE_NAME}
WHERE id = :id AND locked_until >= now()
""")


async def task_cancel(
    conn: AsyncConnection, task_id: int
) -> Literal["deleted", "cancelling", "missing"]:
    """Delete a task that is not running; ask the worker running it to interrupt it (by
    NOTIFY, on commit), which then deletes it."""
    if (await conn.execute(_CANCEL, {"id": task_id})).rowcount:
        return "deleted"
    if (await conn.execute(_CANCEL_RUNNING, {"id": task_id})).first() is not None:
        return "cancelling"
    return "missing"


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the database says about one schedule; cron and last_slot None if it has no row."""

    name: str
    cron: str | None
    last_slot: datetime | None


_PERIODIC_STATE = text(f"""
SELECT s.name, p.cron, p.last_slot, now() AS now
FROM unnest(CAST(:names AS text[])) AS s(name)
LEFT JOIN {PERIODIC_TABLE_NAME} AS p USING (name)   -- a row even for unseen schedules: now()
""")


async def periodic_state(
    conn: AsyncConnection, names: Sequence[str]
) -> tuple[datetime, list[ScheduleState]]:
    """The database's `now()` and the recorded state of the named schedules."""
    rows = (await conn.execute(_PERIODIC_STATE, {"names": list(names)})).all()
    now = rows[0].now if rows else (await conn.execute(text("SELECT now()"))).scalar_one()
    return now, [ScheduleState(row.name, row.cron, row.last_slot) for row in rows]


_PERIODIC_SEAT = text(f"""
INSERT INTO {PERIODIC_TABLE_NAME} AS p (name, cron, last_slot)
VALUES (:name, :cron, :slot)
ON CONFLICT (name) DO UPDATE
SET cron = excluded.cron, last_slot = excluded.last_slot
-- only a changed expression re-seats the row; racing runners with the same one change nothing
WHERE p.cron <> excluded.cron
""")


async def periodic_seat(conn: AsyncConnection, *, name: str, cron: str, slot: datetime) -> bool:
    """Record a schedule seen for the first time (or with a new cron expression) as having
    fired `slot`, without enqueueing anything; True if this call wrote the row."""
    result = await conn.execute(_PERIODIC_SEAT, {"name": name, "cron": cron, "slot": slot})
    return bool(result.rowcount)


_PERIODIC_FIRE = text(f"""
WITH fired AS (
    -- The row lock decides the race: a concurrent firer of the same slot waits here, then
    -- re-checks last_slot against the winner's committed value and updates nothing.
    UPDATE {PERIODIC_TABLE_NAME}
    SET last_slot = :slot
    WHERE name = :name AND cron = :cron AND last_slot < :slot
    RETURNING name
)
INSERT INTO {TABLE_NAME} (task_name, payload, queue, priority, max_attempts)
SELECT :task_name, CAST(:payload AS jsonb), :queue, :priority, :max_attempts
FROM fired                                  -- no row fired, no task
RETURNING id
""")


async def periodic_fire(
    conn: AsyncConnection,
    *,
    name: str,
    cron: str,
    slot: datetime,
    task_name: str,
    payload: str,
    queue: str,
    priority: int,
    max_attempts: int | None,
) -> int | None:
    """Move the schedule's `last_slot` up to `slot` and enqueue its task, in one statement;
    the new task's id, or None if the slot had been fired already (or the cron changed)."""
    result = await conn.execute(
        _PERIODIC_FIRE,
        {
            "name": name,
            "cron": cron,
            "slot": slot,
            "task_name": task_name,
            "payload": payload,
            "queue": queue,
            "priority": priority,
            "max_attempts": max_attempts,
        },
    )
    return result.scalar_one_or_none()


async def connection_name(conn: AsyncConnection, name: str) -> None:
    """Label the session in pg_stat_activity (application_name), for operators and tests."""
    await conn.execute(text("SELECT set_config('application_name', :name, false)"), {"name": name})


async def database_check(conn: AsyncConnection) -> bool:
    """Whether the queue table exists (the database answered if this returns at all)."""
    found = await conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": TABLE_NAME})
    return bool(found.scalar_one())
