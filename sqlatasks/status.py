"""What became of a task: `get_task`, `get_task_by_key`, `kept_counts`.

The way an application shows its users how their task is doing. A task is visible while it is
in the queue (scheduled, queued, running, failed); after it completes or is cancelled, only if
it was kept (`@task(keep=...)` or the runner's --keep), until its time runs out. None means
nothing is known: never enqueued (or not yet committed), or finished and not kept.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pydantic
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from sqlatasks import definition, errors, registry, sessions
from sqlatasks.rows import KeptCount, Progress, TaskInfo
from sqlatasks.sql import status as sql

__all__ = ["KeptCount", "Progress", "TaskInfo", "get_task", "get_task_by_key", "kept_counts"]


@sessions.async_only
async def get_task(
    session: AsyncSession, task_id: int, *, payload: bool = False
) -> TaskInfo | None:
    """The task's state, attempts, last error, times, worker, last progress and (when kept)
    result; None when nothing is known of it. The payload only with `payload=True`.
    InvalidOption for an id no task can have (not an int, or outside PostgreSQL's bigint)."""
    return await read(await session.connection(), task_id, payload=payload)


@sessions.async_only
async def get_task_by_key(
    session: AsyncSession, unique_key: str, *, payload: bool = False
) -> TaskInfo | None:
    """`get_task` of the newest task enqueued with `unique_key` (live, parked or kept); a
    duplicate that was refused is not one."""
    row = await sql.task_get_by_key(await session.connection(), unique_key, payload=payload)
    return None if row is None else _info(row)


@sessions.async_only
async def kept_counts(session: AsyncSession) -> list[KeptCount]:
    """Per queue: kept completed and cancelled tasks, and the age of the oldest."""
    return list(await sql.kept_counts(await session.connection()))


async def read(conn: AsyncConnection, task_id: int, *, payload: bool = False) -> TaskInfo | None:
    """`get_task` on a connection (for `wait_for`, which has no session of the caller's)."""
    definition.checked_task_ids(task_id, where="get_task()")
    row = await sql.task_get(conn, task_id, payload=payload)
    return None if row is None else _info(row)


def _info(row: Row[Any]) -> TaskInfo:
    fields = row._asdict()
    fields["enqueued_at"] = fields.pop("created_at")
    fields["result"] = _result(fields["task_name"], fields["result"])
    fields["payload"] = None if fields["payload"] is None else json.loads(fields["payload"])
    fields["progress"] = _progress(fields["progress"])
    return TaskInfo(**fields)


def _progress(text: str | None) -> Progress | None:
    """The stored progress object (schema version 7) as a record."""
    if text is None:
        return None
    stored = json.loads(text)
    try:
        return Progress(
            value=stored["value"],
            reported_at=datetime.fromisoformat(stored["reported_at"]),
            attempt=int(stored["attempt"]),
        )
    except (TypeError, KeyError, ValueError):
        # Not what a worker writes (the column was edited by hand): shown as it is, not an
        # error for `get_task`, `sqlatasks show` or the dashboard.
        return Progress(value=stored, reported_at=None, attempt=None)


def _result(task_name: str, text: str | None) -> Any:
    """A stored result as its task's return type when the task is registered here (a typed
    model for a model), else as decoded JSON."""
    if text is None:
        return None
    try:
        task = registry.get(task_name)
    except errors.TaskNotRegistered:
        return json.loads(text)
    try:
        return task.load_result(text)
    except pydantic.ValidationError:  # stored before its return type changed: as it was
        return json.loads(text)
