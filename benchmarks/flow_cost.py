"""`flow_cost`: what flow control (schema v5) costs the claim, in one run.

The same backlog of no-op tasks is drained by W connections, each looping "claim up to C with
sqlatasks' own claim statement (`sql.claim.task_claim`), then ack them" until nothing is left,
in four variants that take turns round by round:

- before v5: the claim statement as it was before flow control, on the same tasks (the
  baseline);
- plain: no task has a key, no queue has settings: today's claim on the path every
  application without keys takes;
- 1,000 keys: every task has one of 1,000 concurrency keys, limit 1 each: the claim calls
  the key check (advisory lock, running count) per keyed row it meets;
- one hot key: every task has the same key, limit 1: the worst case, where the claim scans
  past the key's waiting rows (reported, not held to the target);
- global limit: the queue has `max_running` set high enough never to bind: the claim of a
  queue with settings (its row lock, the running count of the queue).

The fill (enqueue_many) is not timed; the drain is.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

from benchmarks import database, measure
from benchmarks.noop import Nothing, noop
from sqlatasks import enqueue, operations
from sqlatasks.models import TABLE_NAME
from sqlatasks.sql import claim, outcomes

TASKS, QUICK_TASKS = 20_000, 2_000
HOT_TASKS, QUICK_HOT_TASKS = 500, 100
ROUNDS, QUICK_ROUNDS = 3, 1
CONNECTIONS, BATCH = 2, 50
KEYS = 1000

BEFORE = "claim+ack, the claim statement before v5"
PLAIN = "claim+ack, no keys, no queue settings"
KEYED = f"claim+ack, {KEYS} concurrency keys (limit 1 each)"
HOT = "claim+ack, one concurrency key for every task (limit 1)"
LIMITED = "claim+ack, queue with max_running set (never binding)"


async def run(url: str, quick: bool) -> list[measure.Row]:
    tasks = QUICK_TASKS if quick else TASKS
    hot_tasks = QUICK_HOT_TASKS if quick else HOT_TASKS
    engine = create_async_engine(url)
    seconds: dict[str, list[float]] = {BEFORE: [], PLAIN: [], KEYED: [], HOT: [], LIMITED: []}
    try:
        for _ in range(QUICK_ROUNDS if quick else ROUNDS):
            for name, count, keys, limited in [
                (BEFORE, tasks, 0, False),
                (PLAIN, tasks, 0, False),
                (KEYED, tasks, KEYS, False),
                (LIMITED, tasks, 0, True),
                (HOT, hot_tasks, 1, False),
            ]:
                await _reset(engine, limited=limited)
                await _fill(engine, count, keys)
                seconds[name].append(await _drain(engine, limited=limited, old=name == BEFORE))
                if left := await _left(engine):
                    raise SystemExit(f"benchmarks: flow_cost left {left} tasks in {name!r}")
    finally:
        await _reset(engine, limited=False)
        await engine.dispose()
    return [
        measure.Row(BEFORE, tasks, tuple(seconds[BEFORE])),
        measure.Row(PLAIN, tasks, tuple(seconds[PLAIN]), (BEFORE,)),
        measure.Row(KEYED, tasks, tuple(seconds[KEYED]), (BEFORE,)),
        measure.Row(LIMITED, tasks, tuple(seconds[LIMITED]), (BEFORE,)),
        measure.Row(HOT, hot_tasks, tuple(seconds[HOT]), (BEFORE,)),
    ]


async def _reset(engine: AsyncEngine, *, limited: bool) -> None:
    await database.truncate(engine)
    async with async_sessionmaker(engine)() as session, session.begin():
        await operations.set_queue_limits(
            session, "default", max_running=10**6 if limited else None
        )


async def _fill(engine: AsyncEngine, tasks: int, keys: int) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        for start in range(0, tasks, 1000):
            session.add_all(
                enqueue(noop, Nothing(i=i), concurrency_key=f"k{i % keys}" if keys else None)
                for i in range(start, min(tasks, start + 1000))
            )


# The claim statement of schema v3, verbatim but for the lease arithmetic's parameters.
_BEFORE_V4 = text(f"""
WITH due AS MATERIALIZED (
    SELECT id FROM {TABLE_NAME}
    WHERE failed_at IS NULL
      AND scheduled_at <= now()
      AND (locked_until IS NULL OR locked_until < now())
    ORDER BY priority DESC, scheduled_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE {TABLE_NAME} AS t
SET attempts = t.attempts + 1,
    locked_until = now() + make_interval(secs => :lease),
    locked_by = :worker,
    lease_token = :token
FROM due
WHERE t.id = due.id
RETURNING t.id, t.task_name, t.queue, t.payload::text AS payload, t.attempts, t.max_attempts
""")


async def _claim(
    conn: AsyncConnection, token: uuid.UUID, *, limited: bool, old: bool
) -> list[tuple[int, uuid.UUID]]:
    if old:
        parameters = {"limit": BATCH, "lease": 60.0, "worker": "bench", "token": token}
        return [(row.id, token) for row in await conn.execute(_BEFORE_V4, parameters)]
    claimed = await claim.task_claim(
        conn,
        queues=(),
        limited="default" if limited else None,
        limit=BATCH,
        lease_seconds=60,
        worker_id="bench",
        token=token,
    )
    return [(c.id, token) for c in claimed]


async def _drain(engine: AsyncEngine, *, limited: bool, old: bool = False) -> float:
    async def loop() -> None:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            while True:
                claimed = await _claim(conn, uuid.uuid4(), limited=limited, old=old)
                if claimed:
                    await outcomes.task_ack(conn, claimed)
                elif not await _count(conn):
                    return
                else:  # the other loop holds what is left (a key's running task)
                    await asyncio.sleep(0.001)

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(CONNECTIONS)))
    return time.perf_counter() - start


async def _left(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return await _count(conn)


async def _count(conn: AsyncConnection) -> int:
    return int((await conn.execute(text(f"SELECT count(*) FROM {TABLE_NAME}"))).scalar_one())
