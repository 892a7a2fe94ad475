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
from sqlatasks.models import TABLE_NAME

_ACK = text(f"""
-- finished (or cancelled) tasks leave the queue
DELETE FROM {TABLE_NAME} AS t
USING unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[])) AS done(id, token)
WHERE t.id = done.id AND t.lease_token = done.token
""")


async def task_ack(conn: AsyncConnection, done: Sequence[tuple[int, uuid.UUID]]) -> int:
    """Delete finished tasks still held under the given leases; returns rows deleted."""
    result = await conn.execute(_ACK, {"ids": [i for i, _ in done], "tokens": [t for _, t in done]})
    return result.rowcount


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
