"""What an operator does with the queue: look at it, and deal with failed tasks.

Every function takes the application's `AsyncSession` and works in its transaction: nothing is
committed here; given a synchronous `Session`, each raises TypeError at the call. The command
line (`python -m sqlatasks status | failed | retry | cancel | purge`) calls the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import registry, sessions
from sqlatasks.rows import FailedTask, QueueStats
from sqlatasks.sql import operator as sql

__all__ = [
    "FailedTask",
    "QueueStats",
    "cancel",
    "delete_failed",
    "failed_tasks",
    "queue_stats",
    "retry_failed",
]


@sessions.async_only
async def queue_stats(session: AsyncSession) -> list[QueueStats]:
    """Per queue: due, scheduled, running and failed counts, the oldest due task's wait, and
    how many tasks wait for a runner that knows them (`unknown`: given back by a runner
    without their module; see docs/runner.md)."""
    return await sql.queue_stats(await session.connection())


@sessions.async_only
async def failed_tasks(
    session: AsyncSession,
    *,
    queue: str | None = None,
    task_name: str | None = None,
    limit: int = 100,
) -> list[FailedTask]:
    """Parked tasks, newest failure first."""
    return await sql.failed_list(
        await session.connection(), queue=queue, task_name=task_name, limit=limit
    )


@sessions.async_only
async def retry_failed(session: AsyncSession, ids: Sequence[int] | Literal["all"]) -> int:
    """Make parked tasks due now, with their attempts reset; the number retried.

    A parked task with a unique key is retried only if no live task holds its key (and of
    several parked tasks sharing a key, only the oldest); the others stay parked. Never raises
    for a taken key."""
    return await sql.failed_retry(await session.connection(), None if ids == "all" else ids)


@sessions.async_only
async def delete_failed(session: AsyncSession, ids: Sequence[int] | Literal["all"]) -> int:
    """Delete parked tasks; the number deleted."""
    return await sql.failed_delete(await session.connection(), None if ids == "all" else ids)


@sessions.async_only
async def cancel(
    session: AsyncSession, task_id: int, *, keep: float | None = None
) -> Literal["deleted", "cancelling", "missing"]:
    """Cancel a task: delete its row, whatever its state. "deleted" if it was queued,
    scheduled or parked; "cancelling" if it was running: when the session commits, its worker
    is told (NOTIFY) to interrupt it. "missing" only if no task has this id.

    Once the session commits, no attempt of the task starts again: a running attempt that
    fails, times out or loses its worker afterwards writes nothing. Interrupting the running
    attempt is cooperative: a worker that misses the notice (its LISTEN connection is down)
    lets that attempt run to its end.

    Kept as `cancelled` for `get_task` and `wait_for` (docs/status.md) for `keep` seconds;
    by default for the task's own `@task(keep=)` when this process has imported the task,
    else not kept."""
    task_keeps = {t.name: t.keep for t in registry.all_tasks() if t.keep}
    return await sql.task_cancel(
        await session.connection(), task_id, keep=keep, task_keeps=task_keeps
    )
