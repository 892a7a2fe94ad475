"""The worker's claim: lease due tasks in one statement, renew the leases of running ones (and
write their progress under those leases), give back a claim whose answer was lost.

A claim writes a fresh lease token to every row it takes; see `sqlatasks.sql` for the lease
rules that every later write follows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause

from sqlatasks import poolers, rows
from sqlatasks.models import KEY_ADMITS_FUNCTION, QUEUE_ROOM_FUNCTION, QUEUES_TABLE_NAME, TABLE_NAME
from sqlatasks.sql import driver


def _claim(queue_filter: str, limit: str = ":limit") -> TextClause:
    return text(f"""
-- lease up to :limit due tasks under a fresh token, in claim order
WITH due AS MATERIALIZED (
    -- MATERIALIZED: run the locking SELECT once; inlined, the planner may re-run it per
    -- joined row and lock more rows than LIMIT.
    SELECT id FROM (
        SELECT id, concurrency_key, concurrency_limit FROM {TABLE_NAME}
        WHERE failed_at IS NULL                     -- the claim index is partial on this
          AND scheduled_at <= now()
          AND (locked_until IS NULL OR locked_until < now())   -- free, or its lease expired
          {queue_filter}
        ORDER BY priority DESC, scheduled_at, id    -- the claim index order: no sort
        OFFSET 0    -- a fence: the key check below must not be pushed under the ORDER BY
        FOR UPDATE SKIP LOCKED                      -- concurrent claimers take disjoint rows
    ) AS ordered
    -- A keyed row only while its key has room (v5 `sqlatasks_key_admits`), checked row by row
    -- in claim order as the LIMIT pulls them (never on rows past it, whatever the plan), and
    -- after the row lock: a full key is skipped, not waited on, so it blocks no other row.
    -- Unkeyed rows never call the function.
    WHERE concurrency_key IS NULL
       OR {KEY_ADMITS_FUNCTION}(concurrency_key, concurrency_limit, :token)
    LIMIT {limit}
)
UPDATE {TABLE_NAME} AS t
SET attempts = t.attempts + 1,
    locked_until = now() + make_interval(secs => :lease),
    locked_by = :worker,
    lease_token = :token
FROM due
WHERE t.id = due.id
-- payload as text: pydantic parses and validates it in one pass, no json.loads first;
-- trace_context as text: parsed only by the tracing middleware, when there is one
RETURNING t.id, t.task_name, t.queue, t.payload::text AS payload, t.attempts, t.max_attempts,
          t.trace_context::text AS trace_context
""")


# Two statements, not one with "cardinality(:queues) = 0 OR queue = ANY(:queues)": measured,
# that OR made the prepared claim about five times slower (its generic plan cannot drop it).
_CLAIM_ANY_QUEUE = _claim("")
_CLAIM_QUEUES = _claim("AND queue = ANY(CAST(:queues AS text[]))")
# Every queue but those with settings (claimed one by one, below), by a worker of all queues.
_CLAIM_EXCEPT = _claim("AND queue <> ALL(CAST(:excluded AS text[]))")
# One queue with settings: no more than its room (v5 `sqlatasks_queue_room`: paused, running
# across every runner, starts per second), computed once, before the scan, under its row lock.
_CLAIM_LIMITED = _claim(
    "AND queue = CAST(:queue AS text)",
    limit=f"least(:limit, {QUEUE_ROOM_FUNCTION}(CAST(:queue AS text), :limit))",
)


# Sent on the driver's connection (sqlatasks.sql.driver): the claim is the worker's hottest
# statement.
_PREPARED = {c: driver.Prepared.of(c) for c in (_CLAIM_ANY_QUEUE, _CLAIM_QUEUES, _CLAIM_EXCEPT)}
_PREPARED[_CLAIM_LIMITED] = driver.Prepared.of(_CLAIM_LIMITED)


def _statement(
    queues: Sequence[str], excluded: Sequence[str], limited: str | None
) -> driver.Prepared:
    if limited is not None:
        return _PREPARED[_CLAIM_LIMITED]
    if queues:
        return _PREPARED[_CLAIM_QUEUES]
    return _PREPARED[_CLAIM_EXCEPT if excluded else _CLAIM_ANY_QUEUE]


_EACH_CLAIM_PLANNED = text("SELECT set_config('plan_cache_mode', 'force_custom_plan', false)")


async def plan_each_claim(conn: AsyncConnection) -> None:
    """Make the session plan each claim for the table as it is now (`plan_cache_mode =
    force_custom_plan`), never from a plan it cached earlier.

    After five executions of a prepared statement, PostgreSQL may keep one generic plan for
    it when that plan's estimate is no worse than the custom ones'. An idle worker claims an
    empty queue over and over, and on an empty table the generic plan is a sequential scan
    and a sort of every row: kept, a claim of 100 after a burst of 100,000 tasks took 3 s
    instead of a few ms (measured on PostgreSQL 15, `EXPLAIN ANALYZE EXECUTE`), until an
    `ANALYZE` invalidated it. A custom plan costs 0.1-0.65 ms of planning per claim (on two
    machines, docs/performance.md). Not sent through a pooler in transaction mode (statement
    cache off): there every statement is prepared unnamed, planned for its own parameters,
    and a session setting would stay on a server connection that other clients get next."""
    if not poolers.statement_cache_off(conn.engine.url):
        await conn.execute(_EACH_CLAIM_PLANNED)


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
    excluded: Sequence[str] = (),
    limited: str | None = None,
) -> list[rows.ClaimedTask]:
    """Lease up to `limit` due tasks in one statement, oldest first within each priority,
    under `token` (fresh for every claim).

    From `queues` (empty: every queue but `excluded`), or with `limited`, from that one queue
    within the room its settings leave. A keyed task is taken only while fewer than its limit
    of tasks with its key hold a lease, whoever holds them."""
    parameters: dict[str, object] = {
        "limit": limit,
        "lease": lease_seconds,
        "worker": worker_id,
        "token": token,
    }
    if limited is not None:
        parameters["queue"] = limited
    elif queues:
        parameters["queues"] = list(queues)
    elif excluded:
        parameters["excluded"] = list(excluded)
    result = await driver.fetch(conn, _statement(queues, excluded, limited), parameters)
    # Unpacked by position (the RETURNING list's order), not by name: cheaper per row.
    return [
        rows.ClaimedTask(id_, name, queue, payload, attempts, max_attempts, token, trace)
        for id_, name, queue, payload, attempts, max_attempts, trace in result
    ]


_UNDO = text(f"""
-- a claim whose answer was lost may still have committed: give back whatever it leased
UPDATE {TABLE_NAME}
SET locked_until = NULL, locked_by = NULL, lease_token = NULL, attempts = attempts - 1
WHERE lease_token = ANY(CAST(:tokens AS uuid[]))
""")


async def claim_undo(conn: AsyncConnection, tokens: Sequence[uuid.UUID]) -> int:
    """Give back whatever claims under `tokens` leased, due at once and with the attempt
    uncounted; harmless for a claim that never committed (no row has its token)."""
    return (await conn.execute(_UNDO, {"tokens": list(tokens)})).rowcount


_RENEW = text(f"""
-- extend the leases still held under these (id, token) pairs; tell renewed and busy apart
WITH held AS (
    SELECT t.id, t.lease_token
    FROM {TABLE_NAME} AS t
    JOIN unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[])) AS ours(id, token)
      -- by token: a lease that passed to another claim has a new token, never renewed
      ON t.id = ours.id AND t.lease_token = ours.token
), free AS MATERIALIZED (
    SELECT t.id FROM {TABLE_NAME} AS t JOIN held ON t.id = held.id
    WHERE t.lease_token = held.lease_token      -- re-checked on the latest row version
    -- SKIP LOCKED: a session task's own transaction holds its row from its DELETE to its
    -- COMMIT; waiting for it would hold up the renewal of every other task of the worker.
    FOR UPDATE OF t SKIP LOCKED
), renewed AS (
    UPDATE {TABLE_NAME} AS t
    SET locked_until = now() + make_interval(secs => :lease)
    FROM free
    WHERE t.id = free.id
    RETURNING t.id
)
SELECT held.id, renewed.id IS NOT NULL AS renewed
FROM held LEFT JOIN renewed ON renewed.id = held.id
""")


async def task_renew(
    conn: AsyncConnection, held: Sequence[tuple[int, uuid.UUID]], lease_seconds: float
) -> tuple[set[int], set[int]]:
    """Renew the leases of `held` (id, token) to `lease_seconds` from now, in one statement.

    Returns the ids (renewed, busy): busy rows are locked by another transaction (a session
    task finishing, an operator) and were left as they are. A task in neither is gone: it
    finished, or its lease passed to another claim. (Ids, not tokens: the tasks of one claim
    share its token.)
    """
    parameters = {
        "ids": [i for i, _ in held],
        "tokens": [t for _, t in held],
        "lease": lease_seconds,
    }
    renewed: set[int] = set()
    busy: set[int] = set()
    for task_id, was_renewed in await conn.execute(_RENEW, parameters):
        (renewed if was_renewed else busy).add(task_id)
    return renewed, busy


_PROGRESS = text(f"""
-- the latest progress of running tasks, each written only under the lease that reported it
WITH ours AS (
    SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS uuid[]),
                         CAST(:values AS text[]), CAST(:ages AS float8[]))
           AS ours(id, token, value, age)
), held AS (
    SELECT t.id FROM {TABLE_NAME} AS t
    -- by token: an attempt whose lease passed to another claim writes nothing
    JOIN ours ON t.id = ours.id AND t.lease_token = ours.token
), free AS MATERIALIZED (
    SELECT t.id FROM {TABLE_NAME} AS t JOIN ours ON t.id = ours.id
    WHERE t.lease_token = ours.token            -- re-checked on the latest row version
    -- SKIP LOCKED, as the renewal: never wait for a session task's finishing transaction
    FOR UPDATE OF t SKIP LOCKED
), written AS (
    UPDATE {TABLE_NAME} AS t
    SET progress = jsonb_build_object(
        'value', CAST(ours.value AS jsonb),
        -- when the task reported it (the worker's count of seconds since), not when written
        'reported_at', now() - make_interval(secs => ours.age),
        'attempt', t.attempts)
    FROM free JOIN ours ON ours.id = free.id
    WHERE t.id = free.id
    RETURNING t.id
)
SELECT held.id, written.id IS NOT NULL AS written
FROM held LEFT JOIN written ON written.id = held.id
""")


async def task_progress(
    conn: AsyncConnection, reports: Sequence[tuple[int, uuid.UUID, str, float]]
) -> tuple[set[int], set[int]]:
    """Write each (id, token, JSON text, seconds since it was reported) as its task's
    progress, in one statement, where `token` still holds the task's lease.

    Returns the ids (written, busy), as `task_renew` does: busy rows are locked by another
    transaction and were left as they are; a task in neither is gone (finished, or its lease
    passed to another claim).
    """
    parameters = {
        "ids": [r[0] for r in reports],
        "tokens": [r[1] for r in reports],
        "values": [r[2] for r in reports],
        "ages": [r[3] for r in reports],
    }
    written: set[int] = set()
    busy: set[int] = set()
    for task_id, was_written in await conn.execute(_PROGRESS, parameters):
        (written if was_written else busy).add(task_id)
    return written, busy


_HELD_BY = text(f"""
-- the leases of one worker, known to be dead: what it was running
SELECT id, task_name, queue, payload::text AS payload, attempts, max_attempts, lease_token
FROM {TABLE_NAME}
WHERE locked_by = :worker AND lease_token IS NOT NULL
""")


async def task_held_by(conn: AsyncConnection, worker_id: str) -> list[rows.ClaimedTask]:
    """The tasks leased by `worker_id`, with their lease tokens."""
    return [rows.ClaimedTask(*row) for row in await conn.execute(_HELD_BY, {"worker": worker_id})]


_SETTINGS = text(f"""
-- every queue's settings (a handful of rows), re-read by each worker once per idle sleep
SELECT name, paused, max_running, per_second FROM {QUEUES_TABLE_NAME} ORDER BY name
""")


async def queue_settings(conn: AsyncConnection) -> list[rows.QueueSettings]:
    """The settings of every queue that has some, by name."""
    return [rows.QueueSettings(*row) for row in await conn.execute(_SETTINGS)]
