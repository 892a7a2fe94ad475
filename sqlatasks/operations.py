"""What an operator does with the queue: look at it, and deal with failed tasks.

Every function takes the application's `AsyncSession` and works in its transaction: nothing is
committed here; given a synchronous `Session`, each raises TypeError at the call. The command
line (`python -m sqlatasks status | failed | retry | cancel | purge | pause | resume | limit |
queues`) calls the same functions.

Queue settings (pause, limits) bind every runner from the caller's commit on: each worker
re-reads them once per idle sleep, and the database checks the limits at every claim
(docs/flow-control.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import definition, errors, registry, sessions
from sqlatasks.rows import FailedTask, QueueSettings, QueueStats
from sqlatasks.sql import claim as sql_claim
from sqlatasks.sql import operator as sql

__all__ = [
    "FailedTask",
    "QueueSettings",
    "QueueStats",
    "cancel",
    "delete_failed",
    "failed_tasks",
    "pause_queue",
    "queue_settings",
    "queue_stats",
    "resume_queue",
    "retry_failed",
    "set_queue_limits",
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
    for a taken key. InvalidOption for an id no task can have (outside PostgreSQL's bigint)."""
    if ids != "all":
        definition.checked_task_ids(*ids, where="retry_failed()")
    return await sql.failed_retry(await session.connection(), None if ids == "all" else ids)


@sessions.async_only
async def delete_failed(session: AsyncSession, ids: Sequence[int] | Literal["all"]) -> int:
    """Delete parked tasks; the number deleted. InvalidOption for an id no task can have."""
    if ids != "all":
        definition.checked_task_ids(*ids, where="delete_failed()")
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
    else not kept. InvalidOption for an id no task can have (outside PostgreSQL's bigint)."""
    definition.checked_task_ids(task_id, where="cancel()")
    task_keeps = {t.name: t.keep for t in registry.all_tasks() if t.keep}
    return await sql.task_cancel(
        await session.connection(), task_id, keep=keep, task_keeps=task_keeps
    )


@sessions.async_only
async def pause_queue(session: AsyncSession, queue: str) -> None:
    """Start no task of `queue` from the commit on, in any runner (within one idle sleep);
    tasks already running finish, and enqueueing goes on."""
    await sql.queue_pause(await session.connection(), _queue(queue), paused=True)


@sessions.async_only
async def resume_queue(session: AsyncSession, queue: str) -> None:
    """Undo `pause_queue`: the queue's tasks start again, within its limits."""
    await sql.queue_pause(await session.connection(), _queue(queue), paused=False)


@sessions.async_only
async def set_queue_limits(
    session: AsyncSession,
    queue: str,
    *,
    max_running: int | None = None,
    per_second: float | None = None,
) -> None:
    """At most `max_running` tasks of `queue` running at once and at most `per_second` starts
    per second, across every runner; None lifts that limit. Replaces the queue's previous
    limits; the per-worker `--queue NAME=LIMIT` caps still apply on top."""
    if max_running is not None and (
        not isinstance(max_running, int) or isinstance(max_running, bool) or max_running < 0
    ):
        raise errors.InvalidOption(
            option="max_running", problem=f"max_running must be 0 or more, not {max_running!r}"
        )
    if per_second is not None:
        problem = definition.seconds_problem("per_second", per_second, zero_ok=False)
        if problem:
            raise errors.InvalidOption(
                option="per_second",
                problem=f"per_second must be a positive number of starts, not {per_second!r}",
            )
    await sql.queue_limit(
        await session.connection(),
        _queue(queue),
        max_running=max_running,
        per_second=None if per_second is None else float(per_second),
    )


@sessions.async_only
async def queue_settings(session: AsyncSession) -> list[QueueSettings]:
    """Every queue that is paused or limited, by name."""
    return await sql_claim.queue_settings(await session.connection())


def _queue(queue: str) -> str:
    problem = definition.queue_problem(queue)
    if problem:
        raise errors.InvalidOption(option="queue", problem=problem)
    return queue
