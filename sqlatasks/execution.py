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
from functools import partial
from typing import Any

import anyio

from sqlatasks import attempts, errors, registry
from sqlatasks.context import TaskRun, running
from sqlatasks.rows import ClaimedTask
from sqlatasks.tasks import Task
from sqlatasks.transactions import RunInTransaction

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Completed:
    """The task returned: delete its row."""

    task: ClaimedTask


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


Outcome = Completed | Failed | Released | Snoozed | Cancelled | Committed | LeaseLost
WRITTEN_ELSEWHERE = (Committed, LeaseLost, Cancelled)
"""Outcomes whose row the completer must not touch."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What applies when a task does not say otherwise."""

    task_timeout: float
    retry_delay: float
    timeout_cap: float
    """No attempt runs longer than this: the lease of the claim was sized for it."""
    allowed_imports: Sequence[str]


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
    if isinstance(resolved, Failed):
        return resolved
    task, payload = resolved
    limit = _time_limit(claimed, task, limits)
    ends = anyio.current_time() + limit
    if on_start is not None:
        on_start(ends)
    ran = await _perform(claimed, task, payload, transactions, ends)
    # First: a commit that went through is final, even if the deadline passed while it ran.
    if ran.committed is not None:
        return Committed(claimed) if ran.committed else LeaseLost(claimed)
    if ran.timed_out:
        error = f"TimeoutError: exceeded its {limit:g} s limit"
        return failure(claimed, task, limits, error, raised=TimeoutError)
    if isinstance(ran.raised, errors.Snooze):
        return Snoozed(claimed, after=ran.raised.after)
    if ran.raised is not None:
        error = errors.describe(ran.raised, with_traceback=True)
        return failure(claimed, task, limits, error, raised=type(ran.raised))
    return Completed(claimed)


def _resolve(claimed: ClaimedTask, limits: Limits) -> tuple[Task[Any], Any] | Failed:
    """The task and its validated payload; a failure that parks the task if either is bad:
    running it again would fail the same way, so it waits for a person to look at it."""
    try:
        task = registry.resolve(claimed.task_name, limits.allowed_imports)
        return task, task.load(claimed.payload)
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


async def _perform(
    claimed: ClaimedTask,
    task: Task[Any],
    payload: Any,
    transactions: RunInTransaction,
    deadline: float,
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
    with anyio.CancelScope(deadline=deadline) as scope, running(run):
        try:
            if task.wants_session:
                committed = await transactions(claimed, partial(task, payload))
            else:
                await task(payload)
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
    return _Ran(committed, raised, timed_out=scope.cancel_called)


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


def _time_limit(claimed: ClaimedTask, task: Task[Any], limits: Limits) -> float:
    limit = attempts.time_limit(task.policy, limits.task_timeout, limits.timeout_cap)
    if task.timeout is not None and task.timeout > limit:
        # A task first met by a lazy import, with a longer timeout than any the runner knew
        # when it claimed it: its lease covers only `limit`. Later claims know the task.
        log.warning(
            "task %d %s runs with a %g s limit, not its %g s timeout: it was claimed before "
            "its module was imported; add that module to --import",
            claimed.id,
            claimed.task_name,
            limit,
            task.timeout,
        )
    return limit


def failure(
    claimed: ClaimedTask,
    task: Task[Any] | None,
    limits: Limits,
    error: str,
    raised: type[BaseException] | None = None,
) -> Failed:
    """A failed attempt: due again after the task's own retry delay, or parked at its limit
    or by its retry filters (`raised`: the type of what the attempt raised). Also the outcome
    of an attempt whose worker died (the supervisor's rescue); `task` is None when the name is
    not known there, and the runner's defaults apply."""
    policy = task.policy if task is not None else attempts.RetryPolicy()
    delay = attempts.after_failure(
        policy, claimed.attempts, claimed.max_attempts, limits.retry_delay, raised
    )
    return Failed(claimed, error=error, retry_in=delay)
