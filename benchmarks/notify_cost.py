"""`notify_cost`: what the wake-up NOTIFY costs single enqueues under 16 concurrent committers.

16 raw asyncpg connections each commit one-row INSERT transactions into the queue table as
fast as they can, once with the insert trigger (one NOTIFY per statement, delivered at
commit, which PostgreSQL serialises on a global lock) and once with the trigger disabled —
the baseline. Raw asyncpg, so that the server-side cost is not hidden behind client work.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks import database, measure
from sqlatasks.models import TABLE_NAME

COMMITTERS = 16
PER_COMMITTER, QUICK_PER_COMMITTER = 300, 50
ROUNDS, QUICK_ROUNDS = 3, 1
_INSERT = f"INSERT INTO {TABLE_NAME} (task_name, payload) VALUES ('m:f', '{{}}')"
TRIGGER = "sqlatasks_tasks_notify"


async def run(url: str, quick: bool) -> list[measure.Row]:
    per = QUICK_PER_COMMITTER if quick else PER_COMMITTER
    engine = create_async_engine(url)
    connections = [await database.raw_connection(url) for _ in range(COMMITTERS)]
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for round_number in range(QUICK_ROUNDS if quick else ROUNDS):
            for notify in (True, False) if round_number % 2 == 0 else (False, True):
                await _trigger(engine, enabled=notify)
                await database.truncate(engine)
                start = time.perf_counter()
                await asyncio.gather(*(_commit(conn, per) for conn in connections))
                times[notify].append(time.perf_counter() - start)
    finally:
        await _trigger(engine, enabled=True)
        await database.truncate(engine)
        for conn in connections:
            await conn.close()
        await engine.dispose()
    without = f"{COMMITTERS} committers, trigger disabled (no NOTIFY)"
    return [
        measure.Row(without, per * COMMITTERS, tuple(times[False])),
        measure.Row(
            f"{COMMITTERS} committers, NOTIFY per insert (the default)",
            per * COMMITTERS,
            tuple(times[True]),
            baselines=(without,),
        ),
    ]


async def _commit(conn: object, count: int) -> None:
    for _ in range(count):
        async with conn.transaction():  # type: ignore[attr-defined]
            await conn.execute(_INSERT)  # type: ignore[attr-defined]


async def _trigger(engine: object, *, enabled: bool) -> None:
    action = "ENABLE" if enabled else "DISABLE"
    async with engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(text(f"ALTER TABLE {TABLE_NAME} {action} TRIGGER {TRIGGER}"))
