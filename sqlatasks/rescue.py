"""The rescue of a dead worker's tasks: settle its leases at once, by the attempt rules.

The supervisor calls `rescue` when it knows a worker is dead (it exited, or was killed), rather
than leave its tasks until their leases expire. What becomes of each task is the executor's own
rule (`execution.failure`), written through the completer's `write_outcomes`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks import completer, errors, execution, outcomes, registry
from sqlatasks.rows import ClaimedTask
from sqlatasks.sql import claim
from sqlatasks.tasks import Task


async def rescue(
    engine: AsyncEngine,
    worker_id: str,
    overdue: Collection[int] | None,
    limits: execution.Limits,
    *,
    innocent: Collection[int] = (),
) -> int:
    """Settle every task `worker_id` still holds; the number of rows written.

    `overdue`: the tasks the worker named as overrunning their limit (ignoring their
    cancellation) when it stopped beating, so that it would be killed. Those are charged the
    attempt, each by its own task's retry rules; its other tasks did nothing wrong and are
    given back uncounted. None (the worker died for a reason it could not name: SIGKILL, OOM,
    a blocked event loop) charges every task it held, but those in `innocent`: tasks the
    worker's last beat showed within their time limit when it was killed as hung, which cannot
    be what blocked its loop — unless that leaves no task to blame, then all are charged (a
    task must never spin uncounted). Raises what the database raises."""
    async with engine.begin() as conn:
        held = await claim.task_held_by(conn, worker_id)
        if overdue is None and innocent:
            suspects = {task.id for task in held} - set(innocent)
            overdue = suspects or None
        outcomes = [_settle(task, worker_id, overdue, limits) for task in held]
        return await completer.write_outcomes(conn, outcomes)


def _settle(
    task: ClaimedTask,
    worker_id: str,
    overdue: Collection[int] | None,
    limits: execution.Limits,
) -> outcomes.Outcome:
    if overdue is None:
        error = f"WorkerLost: worker {worker_id} died while running it"
    elif task.id in overdue:
        error = (
            f"TimeoutError: it ran past its time limit and ignored its cancellation (or blocked "
            f"its event loop), so its "
            f"worker {worker_id} was killed"
        )
    else:
        return outcomes.Released(task)
    return execution.failure(task, _known(task.task_name, limits), limits, error)


def _known(task_name: str, limits: execution.Limits) -> Task[Any] | None:
    """The registered task of that name (lazily imported if allowed), else None: the runner's
    defaults apply."""
    try:
        return registry.resolve(task_name, limits.allowed_imports)
    except errors.TaskNotRegistered:
        return None
