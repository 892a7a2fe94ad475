"""Putting tasks on the queue from the application's own session.

Neither function commits. The tasks become visible to workers only when the caller commits;
if the transaction (or the savepoint they were added in) rolls back, they never existed.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pydantic
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from sqlatasks import queries, registry, tasks
from sqlatasks.models import QueuedTask

PayloadT = TypeVar("PayloadT", bound=pydantic.BaseModel)
Delay = timedelta | float | int


def enqueue(
    fn: tasks.Task[PayloadT] | str,
    payload: PayloadT | Mapping[str, Any],
    *,
    queue: str | None = None,
    priority: int | None = None,
    delay: Delay | None = None,
    run_at: datetime | None = None,
) -> QueuedTask:
    """A new queue row for `fn(payload)`, for the caller to `session.add()`.

    The payload is validated here; a wrong model or invalid values raise PayloadError before
    anything reaches the database. `delay` counts from the database's clock at insert time
    (the transaction's `now()`); `run_at` must be timezone-aware.
    """
    task = _task(fn)
    row = QueuedTask(
        task_name=task.name,
        payload=task.dump(payload),
        queue=_queue(task, queue),
        priority=_priority(task, priority),
        max_attempts=task.max_attempts,
    )
    scheduled_at = _scheduled_at(delay, run_at)
    if scheduled_at is not None:
        row.scheduled_at = scheduled_at
    return row


async def enqueue_many(
    session: AsyncSession,
    fn: tasks.Task[PayloadT] | str,
    payloads: Iterable[PayloadT | Mapping[str, Any]],
    *,
    queue: str | None = None,
    priority: int | None = None,
    delay: Delay | None = None,
    run_at: datetime | None = None,
) -> int:
    """Insert one task per payload in the session's transaction by COPY; returns the count.

    `payloads` may be any iterable, a generator included: rows stream to the server as they
    are produced, so a batch is never held in memory whole. A payload that fails validation
    raises PayloadError and aborts the COPY; the caller's transaction decides the rest.
    """
    task = _task(fn)
    queue_name, prio = _queue(task, queue), _priority(task, priority)
    seconds = _delay_seconds(delay, run_at)
    fixed: tuple[Any, ...] = (task.name, queue_name, prio, task.max_attempts)
    count = 0

    async def records(scheduled_at: datetime | None) -> AsyncIterator[tuple[Any, ...]]:
        nonlocal count
        tail = () if scheduled_at is None else (scheduled_at,)
        for payload in payloads:
            count += 1
            yield (*fixed, task.dump(payload), *tail)

    await queries.task_copy(session, records, delay_seconds=seconds, run_at=run_at)
    return count


def _task(fn: tasks.Task[Any] | str) -> tasks.Task[Any]:
    if isinstance(fn, tasks.Task):
        return fn
    if isinstance(fn, str):
        return registry.get(fn)
    raise TypeError(f"enqueue() takes a @task or a registered task name, not {fn!r}")


def _queue(task: tasks.Task[Any], queue: str | None) -> str:
    if queue is None:
        return task.queue
    if not isinstance(queue, str) or not queue:
        raise ValueError("queue must be a non-empty string")
    return queue


def _priority(task: tasks.Task[Any], priority: int | None) -> int:
    if priority is None:
        return task.priority
    if not isinstance(priority, int) or priority not in tasks.PRIORITY_RANGE:
        raise ValueError("priority must be an integer in [-32768, 32767]")
    return priority


def _delay_seconds(delay: Delay | None, run_at: datetime | None) -> float | None:
    if delay is not None and run_at is not None:
        raise ValueError("give delay or run_at, not both")
    if run_at is not None and (run_at.tzinfo is None or run_at.utcoffset() is None):
        raise ValueError("run_at must be timezone-aware, e.g. datetime.now(timezone.utc)")
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ValueError("delay must be zero or a positive number of seconds")
    return seconds


def _scheduled_at(
    delay: Delay | None, run_at: datetime | None
) -> datetime | ColumnElement[datetime] | None:
    seconds = _delay_seconds(delay, run_at)
    if seconds is not None:
        return queries.database_now_plus(seconds)
    return run_at
