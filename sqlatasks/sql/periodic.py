"""The scheduler's statements: read schedules' state, seat new ones, fire a slot.

A slot is fired by one statement that moves `last_slot` up and inserts the task, so the row
lock lets exactly one runner win each slot (docs/periodic.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from sqlatasks import rows
from sqlatasks.models import PERIODIC_TABLE_NAME, TABLE_NAME
from sqlatasks.sql import server

_PERIODIC_STATE = text(f"""
-- each named schedule's recorded cron and last slot, and the database clock
SELECT s.name, p.cron, p.last_slot, now() AS now
FROM unnest(CAST(:names AS text[])) AS s(name)
LEFT JOIN {PERIODIC_TABLE_NAME} AS p USING (name)   -- a row even for unseen schedules: now()
""")


async def periodic_state(
    conn: AsyncConnection, names: Sequence[str]
) -> tuple[datetime, list[rows.ScheduleState]]:
    """The database's `now()` and the recorded state of the named schedules."""
    found = (await conn.execute(_PERIODIC_STATE, {"names": list(names)})).all()
    now = found[0].now if found else await server.database_now(conn)
    return now, [rows.ScheduleState(row.name, row.cron, row.last_slot) for row in found]


_PERIODIC_SEAT = text(f"""
-- a schedule seen for the first time (or with a new expression) starts at its latest slot
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
