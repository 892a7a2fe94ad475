"""A claimed task's outcome, written by the completer (and a session task's own commit).

Every statement names the lease token of the claim it answers: a worker that lost its lease
(paused, cut off, too slow) writes nothing. Each takes a batch, one row per task.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from sqlatasks import rows
from sqlatasks.models import FINISHED_CHANNEL, FINISHED_TABLE_NAME, TABLE_NAME
from sqlatasks.sql import driver

_ACK = text(f"""
-- finished (or cancelled) tasks leave the queue
DELETE FROM {TABLE_NAME} AS t
USING unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[])) AS done(id, token)
WHERE t.id = done.id AND t.lease_token = done.token
""")


_ACK_PREPARED = driver.Prepared.of(_ACK)  # sent on the driver's connection: the hottest write


async def task_ack(conn: AsyncConnection, done: Sequence[tuple[int, uuid.UUID]]) -> int:
    """Delete finished tasks still held under the given leases; returns rows deleted."""
    parameters = {"ids": [i for i, _ in done], "tokens": [t for _, t in done]}
    return await driver.execute(conn, _ACK_PREPARED, parameters)


_FINISH = text(f"""
-- a session task's row, deleted in the task's own transaction
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


# The columns a kept task carries from its queue row to the finished-tasks table.
_KEPT_INSERT = f"""
INSERT INTO {FINISHED_TABLE_NAME} (id, task_name, queue, state, payload, result, attempts,
    max_attempts, last_error, unique_key, worker, created_at, started_at, keep_until, progress)
SELECT id, task_name, queue, state, payload, CAST(result AS jsonb), attempts, max_attempts,
       last_error, unique_key, locked_by, created_at,
       now() - make_interval(secs => ran_for), now() + make_interval(secs => keep), progress
FROM done
"""
_DONE_COLUMNS = """t.id, t.task_name, t.queue, t.payload, t.attempts, t.max_attempts,
       t.last_error, t.unique_key, t.locked_by, t.created_at, t.progress"""

_ACK_KEPT = text(f"""
-- finished (or cancelled) tasks that are kept: out of the queue, into the finished table, in
-- one statement (its trigger NOTIFYs their ids for wait_for)
WITH done AS (
    DELETE FROM {TABLE_NAME} AS t
    USING unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[]), CAST(:states AS text[]),
                 CAST(:results AS text[]), CAST(:keeps AS float8[]), CAST(:ran AS float8[]))
          AS k(id, token, state, result, keep, ran_for)
    WHERE t.id = k.id AND t.lease_token = k.token
    RETURNING {_DONE_COLUMNS}, k.state, k.result, k.keep, k.ran_for
)
{_KEPT_INSERT}
""")


async def task_ack_kept(conn: AsyncConnection, done: Sequence[rows.Finished]) -> int:
    """Move finished tasks still held under the given leases to the finished-tasks table;
    returns rows moved."""
    result = await conn.execute(
        _ACK_KEPT,
        {
            "ids": [f.id for f in done],
            "tokens": [f.lease_token for f in done],
            "states": [f.state for f in done],
            "results": [f.keep.result for f in done],
            "keeps": [f.keep.seconds for f in done],
            "ran": [f.keep.ran_for for f in done],
        },
    )
    return result.rowcount


_FINISH_KEPT = text(f"""
-- a kept session task's row, moved to the finished table in the task's own transaction
WITH done AS (
    DELETE FROM {TABLE_NAME} AS t
    WHERE t.id = :id AND t.lease_token = :token     -- still ours: see task_finish
    RETURNING {_DONE_COLUMNS}, 'completed' AS state, CAST(:result AS text) AS result,
              CAST(:keep AS float8) AS keep, CAST(:ran AS float8) AS ran_for
)
{_KEPT_INSERT}
""")


async def task_finish_kept(
    conn: AsyncConnection, task_id: int, token: uuid.UUID, keep: rows.Keep
) -> bool:
    """`task_finish` for a kept task: its row and result go to the finished-tasks table, and
    commit (or roll back) with the task's writes."""
    result = await conn.execute(
        _FINISH_KEPT,
        {
            "id": task_id,
            "token": token,
            "result": keep.result,
            "keep": keep.seconds,
            "ran": keep.ran_for,
        },
    )
    return result.rowcount == 1


_PARKED_NOTIFY = text(f"""
-- wake wait_for() on parked tasks (the finished table's trigger does it for kept ones)
SELECT pg_notify('{FINISHED_CHANNEL}', CAST(:ids AS text))
""")


async def parked_notify(conn: AsyncConnection, ids: Sequence[int]) -> None:
    """Tell waiters that these tasks were just parked (sent when the statement commits)."""
    for start in range(0, len(ids), 300):  # a payload holds under 8000 bytes
        await conn.execute(_PARKED_NOTIFY, {"ids": ",".join(map(str, ids[start : start + 300]))})


_PRUNE = text(f"""
-- kept tasks past their time, oldest first, a bounded batch per statement
DELETE FROM {FINISHED_TABLE_NAME}
WHERE id IN (SELECT id FROM {FINISHED_TABLE_NAME} WHERE keep_until < now()
             ORDER BY keep_until LIMIT :batch)
""")


async def finished_prune(conn: AsyncConnection, batch: int) -> int:
    """Delete up to `batch` kept tasks whose time has passed; returns how many."""
    return (await conn.execute(_PRUNE, {"batch": batch})).rowcount


_FAIL = text(f"""
-- failed attempts: due again after their delay, or parked
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


async def task_fail(conn: AsyncConnection, failures: Sequence[rows.Failure]) -> int:
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
-- interrupted by shutdown: back in the queue at once
UPDATE {TABLE_NAME} AS t
SET locked_until = NULL,
    locked_by = NULL,
    lease_token = NULL,
    attempts = t.attempts - 1      -- an interrupted attempt is not a failure
FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[])) AS held(id, token)
WHERE t.id = held.id AND t.lease_token = held.token
""")


async def task_release(conn: AsyncConnection, held: Sequence[tuple[int, uuid.UUID]]) -> int:
    """Give back leased tasks unrun, due at once and with the attempt uncounted."""
    result = await conn.execute(
        _RELEASE, {"ids": [i for i, _ in held], "tokens": [t for _, t in held]}
    )
    return result.rowcount


_SNOOZE = text(f"""
-- the task raised Snooze: due again later, no failure recorded
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


_DEFER = text(f"""
-- no runner here knows the task: back in the queue later, unrun, for a runner that knows it
UPDATE {TABLE_NAME} AS t
SET locked_until = NULL,
    locked_by = NULL,
    lease_token = NULL,
    attempts = t.attempts - 1,     -- not run, so not an attempt
    last_error = later.why,        -- what `status` counts as waiting for a runner
    scheduled_at = now() + make_interval(secs => later.after)
FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[]),
            CAST(:whys AS text[]), CAST(:afters AS float8[]))
     AS later(id, token, why, after)
WHERE t.id = later.id AND t.lease_token = later.token
""")


async def task_defer(conn: AsyncConnection, later: Sequence[rows.Failure]) -> int:
    """Give back leased tasks unrun, due again after `retry_in` seconds with `error` as their
    last_error and the attempt uncounted; returns rows changed."""
    result = await conn.execute(
        _DEFER,
        {
            "ids": [d.id for d in later],
            "tokens": [d.lease_token for d in later],
            "whys": [d.error for d in later],
            "afters": [d.retry_in for d in later],
        },
    )
    return result.rowcount
