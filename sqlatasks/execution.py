"""Running one claimed task, to an Outcome value.

The steps: find the task (only registered code, imported only from allowed packages), validate
its payload, run it under its time limit, and say what happened. The completer writes it.
Only a session task touches the database here, through the transaction it is given, which
also deletes its row (`Committed`): see sqlatasks.transactions.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import attempts, errors, registry
from sqlatasks.context import TaskRun, running
from sqlatasks.rows import ClaimedTask, Keep
from sqlatasks.tasks import Task
from sqlatasks.transactions import RunInTransaction

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Completed:
    """The task returned: delete its row (moved to the finished tasks when `kept`)."""

    task: ClaimedTask
    kept: Keep | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The attempt failed: due again in `retry_in` seconds, or parked when that is None."""

    task: ClaimedTask
    error: str
    retry_in: float | None


@dataclass(frozen=True, slots=True)
class Released:
    """The attempt was interrupted by shutdown: give the task back, the attempt uncounted."""

    task: ClaimedTask


@dataclass(frozen=True, slots=True)
class Snoozed:
    """The task raised Snooze: due again in `after` seconds, the attempt not counted."""

    task: ClaimedTask
    after: float


@dataclass(frozen=True, slots=True)
class Deferred:
    """No runner here knows the task (errors.TaskUnknown): give it back unrun, the attempt
    uncounted, due again in `after` seconds, with `error` (why) kept in last_error."""

    task: ClaimedTask
    error: str
    after: float


@dataclass(frozen=True, slots=True)
class Cancelled:
    """An operator cancelled the running task. The cancel deleted its row already (see
    `sql.operator.task_cancel`): nothing is left to write."""

    task: ClaimedTask


@dataclass(frozen=True, slots=True)
class Committed:
    """A session task returned, and its transaction committed its writes with the deletion of
    its row: nothing is left to write."""

    task: ClaimedTask


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """A session task returned, but its lease had passed to another claim: its transaction
    rolled back, and the row belongs to that claim. Nothing to write."""

    task: ClaimedTask


Outcome = Completed | Failed | Released | Snoozed | Deferred | Cancelled | Committed | LeaseLost
WRITTEN_ELSEWHERE = (Committed, LeaseLost, Cancelled)
"""Outcomes whose row the completer must not touch."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What applies when a task does not say otherwise."""

    task_timeout: float
    retry_delay: float
    allowed_imports: Sequence[str]
    keep: float = 0.0
    """Seconds a finished task is kept when its @task does not say (--keep)."""


async def execute(
    claimed: ClaimedTask,
    limits: Limits,
    transactions: RunInTransaction,
    on_start: Callable[[float], None] | None = None,
) -> Outcome:
    """Run `claimed` and return its outcome; only shutdown's cancellation escapes.

    The steps: refuse an attempt past the limit, resolve the task and its payload, run it
    under its time limit, and turn what happened into an Outcome. A session task runs through
    `transactions`. `on_start(deadline)` is told when the task's time runs out (anyio's
    clock), just before it runs.
    """
    if attempts.lost_before(claimed.attempts, claimed.max_attempts):
        # Claimed again after a lease ran out (its worker died mid-attempt): never run past
        # the limit.
        return Failed(claimed, error="WorkerLost: its last attempt never finished", retry_in=None)
    resolved = _resolve(claimed, limits)
    if isinstance(resolved, Failed | Deferred):
        return resolved
    task, payload = resolved
    limit = attempts.time_limit(task.policy, limits.task_timeout)
    ends = anyio.current_time() + limit
    if on_start is not None:
        on_start(ends)
    ran = await _perform(claimed, task, payload, transactions, ends, _keeping(task, limits))
    # First: a commit that went through is final, even if the deadline passed while it ran.
    if ran.committed is not None:
        return Committed(claimed) if ran.committed else LeaseLost(claimed)
    if ran.timed_out:
        return failure(claimed, task, limits, f"TimeoutError: exceeded its {limit:g} s limit")
    if isinstance(ran.raised, errors.Snooze):
        return Snoozed(claimed, after=ran.raised.after)
    if ran.raised is not None:
        return failure(claimed, task, limits, errors.describe(ran.raised, with_traceback=True))
    return Completed(claimed, ran.returned if isinstance(ran.returned, Keep) else None)


def _keeping(task: Task[Any], limits: Limits) -> Callable[[Any, float], Keep | None]:
    """What to keep of a finished run of `task`, given its return value and its start (anyio's
    clock): nothing (None) when it is not kept, so the hot path writes what it always did."""
    seconds = task.keep if task.keep is not None else limits.keep
    if not seconds:
        return lambda _value, _started: None

    def keep(value: Any, started: float) -> Keep:
        try:
            result = task.dump_result(value)
        except Exception as exc:  # pydantic's serialization error, or a model's own
            log.warning("task %s: its result is not kept (%s)", task.name, errors.one_line(exc))
            result = None
        return Keep(seconds, result, anyio.current_time() - started)

    return keep


_told: set[str] = set()
"""Names of tasks this worker met and did not know, already logged: one line per name."""


def _resolve(claimed: ClaimedTask, limits: Limits) -> tuple[Task[Any], Any] | Failed | Deferred:
    """The task and its validated payload. A task no runner here knows waits for one that does
    (Deferred); one it must never run, or whose payload is bad, is parked: running it again
    would fail the same way, so it waits for a person to look at it."""
    try:
        task = registry.resolve(claimed.task_name, limits.allowed_imports)
        return task, task.load(claimed.payload)
    except errors.TaskUnknown as exc:
        if claimed.task_name not in _told:
            _told.add(claimed.task_name)
            log.warning(
                "%s: giving such tasks back, due again in %g s, for a runner that knows them "
                "(said once per task name)",
                exc,
                attempts.UNKNOWN_TASK_WAIT,
            )
        return Deferred(claimed, error=errors.describe(exc), after=attempts.UNKNOWN_TASK_WAIT)
    except (errors.TaskNotRegistered, errors.PayloadError) as exc:
        return Failed(claimed, error=errors.describe(exc), retry_in=None)
    except BaseException as exc:  # a model validator that raised something odd: the same
        if cancelled_by_us(exc):
            raise
        return Failed(claimed, error=errors.describe(exc, with_traceback=True), retry_in=None)


@dataclass(frozen=True, slots=True)
class _Ran:
    committed: bool | None
    """A session task's transaction: committed, or its lease was lost; None for others."""
    raised: BaseException | None
    timed_out: bool
    returned: Keep | None
    """What to keep of a run that returned, when the task is kept."""


async def _perform(
    claimed: ClaimedTask,
    task: Task[Any],
    payload: Any,
    transactions: RunInTransaction,
    deadline: float,
    keep: Callable[[Any, float], Keep | None],
) -> _Ran:
    run = TaskRun(
        id=claimed.id,
        task_name=claimed.task_name,
        queue=claimed.queue,
        attempt=claimed.attempts,
        max_attempts=claimed.max_attempts,
        lease_token=claimed.lease_token,
    )
    committed: bool | None = None
    raised: BaseException | None = None
    returned: Keep | None = None
    started = anyio.current_time()

    async def in_session(session: AsyncSession) -> Keep | None:
        # Kept in the task's own transaction: the result commits with its writes, or not at all.
        return keep(await task(payload, session), started)

    with anyio.CancelScope(deadline=deadline) as scope, running(run):
        try:
            if task.wants_session:
                committed = await transactions(claimed, in_session)
            else:
                returned = keep(await task(payload), started)
        except BaseException as exc:
            if cancelled_by_us(exc):
                raise  # our deadline (caught by its scope), an operator's cancel, or shutdown
            # Anything else fails this attempt only, not the worker: SystemExit,
            # KeyboardInterrupt, and a cancellation none of our scopes issued (a future
            # cancelled elsewhere, an explicit raise).
            raised = exc
            _forget_native_cancel(exc)
    # cancel_called, not cancelled_caught: a task that swallowed its cancellation and
    # returned still ran past its limit, and counts as a failure.
    return _Ran(committed, raised, timed_out=scope.cancel_called, returned=returned)


def cancelled_by_us(exc: BaseException) -> bool:
    """Whether `exc` is a cancellation that a scope enclosing this task issued: the attempt's
    deadline, an operator's cancel, or shutdown. A cancellation raised while none of them is
    cancelled is the task's own doing, and fails its attempt like any other exception."""
    # current_effective_deadline() is -inf exactly when a scope around us (up to the nearest
    # shield) has been cancelled: cancel_called on our own scopes, wherever they live.
    return (
        isinstance(exc, anyio.get_cancelled_exc_class())
        and anyio.current_effective_deadline() == -math.inf
    )


def _forget_native_cancel(exc: BaseException) -> None:
    """A task that cancelled its own asyncio task (`current_task().cancel()`) and let the
    error out leaves a cancellation request counted on the worker's task: withdraw it, or
    anyio would take a later cancel of ours (a deadline) for a native one and not catch it."""
    if not isinstance(exc, asyncio.CancelledError):
        return
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not running on asyncio
        return
    if task is not None and task.cancelling():
        task.uncancel()


def failure(claimed: ClaimedTask, task: Task[Any] | None, limits: Limits, error: str) -> Failed:
    """A failed attempt: due again after the task's own retry delay, or parked at its limit.
    Also the outcome of an attempt whose worker died (the supervisor's rescue); `task` is
    None when the name is not known there, and the runner's defaults apply."""
    policy = task.policy if task is not None else attempts.RetryPolicy()
    delay = attempts.after_failure(
        policy, claimed.attempts, claimed.max_attempts, limits.retry_delay
    )
    return Failed(claimed, error=error, retry_in=delay)
