"""The scheduler: one loop per runner (in worker 0) that fires the slots of periodic schedules.

Every tick reads the database's `now()` and each schedule's row, then per schedule:

- no row, or a row for another cron expression: record the latest slot as if fired, and
  enqueue nothing (a new or changed schedule first runs at its next slot);
- `last_slot` older than the latest slot at or before `now()`: fire that one slot — move
  `last_slot` up to it and enqueue the task, in one statement. Only the latest slot is ever
  fired, however many passed since `last_slot`: no burst after downtime.

Every tick also prunes kept finished tasks past their `keep_until`, and the throughput
rollup's minutes past `throughput.KEEP`, in batches of PRUNE_BATCH rows and at most
PRUNE_ROUNDS batches of each per tick, so that a backlog is worked off without holding the
loop: each table stays bounded by what it gains within its retention time plus one tick.

Any number of runners may tick at once: the row lock lets one win each slot, the others'
statements update nothing. Ticks follow the next slot, at most `check_interval` apart, so a
local clock that drifts from the database's costs at most one interval of lateness.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from functools import partial

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sqlatasks import errors, rows, throughput
from sqlatasks.backoff import Backoff
from sqlatasks.connection import HeldConnection
from sqlatasks.registry import Schedule
from sqlatasks.sql import outcomes
from sqlatasks.sql import periodic as sql
from sqlatasks.sql import throughput as rollup_sql

log = logging.getLogger(__name__)

PRUNE_BATCH = 1000
"""Kept tasks deleted per statement: short row locks and a bounded WAL burst."""
PRUNE_ROUNDS = 10
MIN_WAIT = 0.05
"""Seconds at least between ticks, so that a slot just due is not polled in a tight loop."""


async def run(
    engine: AsyncEngine, schedules: Sequence[Schedule], *, check_interval: float, name: str
) -> None:
    """Tick until cancelled; a database error costs a log line and a retry with backoff."""
    connection = HeldConnection(engine, name)
    log.info("scheduling %s", ", ".join(f"{s.name} ({s.cron})" for s in schedules) or "nothing")
    backoff = Backoff(first=min(1.0, check_interval), most=30.0)
    try:
        while True:
            try:
                wait = await tick(await connection.get(), schedules, check_interval)
                backoff.reset()
            except (SQLAlchemyError, OSError) as exc:
                wait = backoff.next()
                log.warning(
                    "scheduler tick failed (%s); retrying in %.1f s", errors.one_line(exc), wait
                )
                await connection.close()
            await anyio.sleep(wait)
    finally:
        await connection.close()


async def tick(
    conn: AsyncConnection, schedules: Sequence[Schedule], check_interval: float
) -> float:
    """Seat new schedules, fire due slots and prune kept tasks once; the seconds until the
    next tick."""
    await prune(conn)
    now, states = await sql.periodic_state(conn, [s.name for s in schedules])
    by_name = {state.name: state for state in states}
    for schedule in schedules:
        await _visit(conn, schedule, by_name[schedule.name], now)
    log.debug("checked %d schedules", len(schedules))
    soonest = min(s.next_slot(now) for s in schedules) if schedules else None
    wait = check_interval if soonest is None else (soonest - now).total_seconds()
    return max(MIN_WAIT, min(check_interval, wait))


async def prune(conn: AsyncConnection) -> int:
    """Delete kept tasks past their time, and the throughput rollup's minutes older than
    `throughput.KEEP`, in bounded batches; how many rows."""
    kept = partial(outcomes.finished_prune, conn, PRUNE_BATCH)
    rollup = partial(rollup_sql.throughput_prune, conn, keep=throughput.KEEP, batch=PRUNE_BATCH)
    pruned = 0
    for what, delete in [("kept tasks", kept), ("throughput rows", rollup)]:
        count = 0
        with anyio.CancelScope(shield=True):  # one statement at a time, never cut half-way
            for _ in range(PRUNE_ROUNDS):
                deleted = await delete()
                count += deleted
                if deleted < PRUNE_BATCH:
                    break
        if count:
            log.debug("pruned %d %s", count, what)
        pruned += count
    return pruned


async def _visit(
    conn: AsyncConnection, schedule: Schedule, state: rows.ScheduleState, now: datetime
) -> None:
    latest = schedule.latest_slot(now)
    # Each write is one statement, never cancelled half-way: either it happened or it did not.
    with anyio.CancelScope(shield=True):
        if state.cron != schedule.cron:
            if await sql.periodic_seat(conn, name=schedule.name, cron=schedule.cron, slot=latest):
                log.info(
                    "schedule %s (%s) registered; first run at %s",
                    schedule.name,
                    schedule.cron,
                    schedule.next_slot(now).isoformat(),
                )
            return
        if state.last_slot is None or state.last_slot >= latest:
            return
        task = schedule.task
        task_id = await sql.periodic_fire(
            conn,
            name=schedule.name,
            cron=schedule.cron,
            slot=latest,
            task_name=task.name,
            payload=schedule.payload,
            queue=task.queue,
            priority=task.priority,
            max_attempts=task.max_attempts,
        )
    if task_id is None:
        log.debug("schedule %s slot %s was fired by another runner", schedule.name, latest)
    else:
        log.info("schedule %s fired slot %s: task %d", schedule.name, latest.isoformat(), task_id)
