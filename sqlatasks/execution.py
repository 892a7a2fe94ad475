"""Running one claimed task, to an Outcome value.

The steps: find the task (only registered code, imported only from allowed packages), validate
its payload, run it under its time limit, and say what happened. The completer writes it.
Only a session task touches the database here, through the transaction it is given, which
also deletes its row (`Committed`): see sqlatasks.transactions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import attempts, cancellation, errors, hooks, logs, registry, reporting
from sqlatasks.context import TaskRun, isolated
from sqlatasks.outcomes import (
    Committed,
    Completed,
    Deferred,
    Failed,
    LeaseLost,
    Outcome,
    Snoozed,
)
from sqlatasks.rows import ClaimedTask, Keep
from sqlatasks.tasks import Task
from sqlatasks.transactions import RunInTransaction

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    """What applies when a task does not say otherwise."""

    task_timeout: float
    retry_delay: float
    allowed_imports: Sequence[str]
    keep: float = 0.0
    """Seconds a finished task is kept when its @task does not say (--keep)."""


class Control(Protocol):
    """What cancels a task run by a worker (`leases.Lease`): the caller cancels the task by
    cancelling an enclosing scope of its own, and says so here."""

    @property
    def cancel_called(self) -> bool: ...


@overload
async def execute(
    claimed: ClaimedTask,
    limits: Limits,
    transactions: RunInTransaction,
    on_start: Callable[[float], None] | None = None,
    control: None = None,
    on_report: Callable[[str], None] | None = None,
) -> Outcome: ...


@overload
async def execute(
    claimed: ClaimedTask,
    limits: Limits,
    transactions: RunInTransaction,
    on_start: Callable[[float], None] | None,
    control: Control,
    on_report: Callable[[str], None] | None = None,
) -> Outcome | None: ...


async def execute(
    claimed: ClaimedTask,
    limits: Limits,
    transactions: RunInTransaction,
    on_start: Callable[[float], None] | None = None,
    control: Control | None = None,
    on_report: Callable[[str], None] | None = None,
) -> Outcome | None:
    """Run `claimed` and return its outcome; only shutdown's cancellation escapes.

    The steps: refuse an attempt past the limit, resolve the task and its payload, run it
    under its time limit, and turn what happened into an Outcome. A session task runs through
    `transactions`. `on_start(deadline)` is told when the task's time runs out (anyio's
    clock), just before it runs; `on_report(json_text)` takes its progress reports
    (`TaskRun.on_report`). Every outcome is logged (DEBUG; a failure at WARNING or
    ERROR by the dispatcher) and reported to the hooks' end, retry and park events.

    `control`: the worker's lease (one per task for every cause: its time limit, its lease,
    an operator's cancel). The caller cancels the task by cancelling a scope around this call
    (its execution slot's) and sets `control.cancel_called`; a cancellation while that is not
    set (shutdown) propagates. None makes a cancel scope here, with the time limit as its
    deadline, and the outcome is never None. With a `control`, None means the caller
    cancelled the task for another cause than its time limit (a lost lease, an operator's
    cancel) and the task ended in that cancellation: nothing is reported, the caller says
    what became of it.
    """
    started = time.perf_counter()
    outcome = await _steps(claimed, limits, transactions, on_start, control, on_report)
    if outcome is not None:
        reporting.report(outcome, time.perf_counter() - started)
    return outcome


async def _steps(
    claimed: ClaimedTask,
    limits: Limits,
    transactions: RunInTransaction,
    on_start: Callable[[float], None] | None,
    control: Control | None,
    on_report: Callable[[str], None] | None,
) -> Outcome | None:
    if attempts.lost_before(claimed.attempts, claimed.max_attempts):
        # Claimed again after a lease ran out (its worker died mid-attempt): never run past
        # the limit.
        return Failed(claimed, error="WorkerLost: its last attempt never finished", retry_in=None)
    resolved = _resolve(claimed, limits)
    if isinstance(resolved, Failed | Deferred):
        return resolved
    task, payload = resolved
    limit = attempts.time_limit(task.policy, limits.task_timeout)
    now = cancellation.clock()  # once per task
    ends = now + limit
    if on_start is not None:
        on_start(ends)
    keep = _keeping(task, limits, now)
    ran = await _perform(claimed, task, payload, transactions, control, ends, keep, on_report)
    # First: a commit that went through is final, even if the deadline passed while it ran.
    if ran.committed is not None:
        return Committed(claimed) if ran.committed else LeaseLost(claimed)
    if ran.interrupted:
        return None
    if ran.timed_out:
        error = f"TimeoutError: exceeded its {limit:g} s limit"
        return failure(claimed, task, limits, error, raised=TimeoutError)
    if isinstance(ran.raised, errors.Snooze):
        return Snoozed(claimed, after=ran.raised.after)
    if ran.raised is not None:
        error = errors.describe(ran.raised, with_traceback=True)
        return failure(claimed, task, limits, error, raised=type(ran.raised))
    return Completed(claimed, ran.returned if isinstance(ran.returned, Keep) else None)


def _keeping(task: Task[Any], limits: Limits, started: float) -> Callable[[Any], Keep | None]:
    """What to keep of a finished run of `task` started at `started` (anyio's clock), given its
    return value: nothing (None) when it is not kept, so the hot path writes what it always
    did."""
    seconds = task.keep if task.keep is not None else limits.keep
    if not seconds:
        return lambda _value: None

    def keep(value: Any) -> Keep:
        try:
            result = task.dump_result(value)
        except Exception as exc:  # pydantic's serialization error, or a model's own
            log.warning("task %s: its result is not kept (%s)", task.name, errors.one_line(exc))
            result = None
        return Keep(seconds, result, cancellation.clock() - started)

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
        if cancellation.ours(exc):
            raise
        return Failed(claimed, error=errors.describe(exc, with_traceback=True), retry_in=None)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs more, per task
class _Ran:
    committed: bool | None
    """A session task's transaction: committed, or its lease was lost; None for others."""
    raised: BaseException | None
    timed_out: bool
    interrupted: bool
    """The scope was cancelled for another cause than the time limit, and that ended the task."""
    returned: Keep | None
    """What to keep of a run that returned, when the task is kept."""


async def _perform(
    claimed: ClaimedTask,
    task: Task[Any],
    payload: Any,
    transactions: RunInTransaction,
    control: Control | None,
    deadline: float,
    keep: Callable[[Any], Keep | None],
    on_report: Callable[[str], None] | None,
) -> _Ran:
    run = TaskRun(
        id=claimed.id,
        task_name=claimed.task_name,
        queue=claimed.queue,
        attempt=claimed.attempts,
        max_attempts=claimed.max_attempts,
        lease_token=claimed.lease_token,
        on_report=on_report,
        trace_context=claimed.trace_context,
        deadline=deadline,
    )
    committed: bool | None = None
    raised: BaseException | None = None
    returned: Keep | None = None

    async def in_session(session: AsyncSession) -> Keep | None:
        # Kept in the task's own transaction: the result commits with its writes, or not at all.
        return keep(await task(payload, session))

    async def call() -> None:
        nonlocal committed, returned
        if task.wants_session:
            committed = await transactions(claimed, in_session)
        else:
            returned = keep(await task(payload))

    # In a fresh copy of the slot's context, where current_task() is `run`: a ContextVar the
    # task (or a middleware) sets is not seen by the slot's next task.
    step = isolated(_run_step(run, call), run)
    if control is None:
        scope = control = cancellation.new_scope(deadline)
        with scope:
            raised = await step
        ended_in_cancel = scope.cancelled_caught
    else:
        raised, ended_in_cancel = await _under(control, step)
    if not control.cancel_called:  # the hot path: no clock read
        return _Ran(committed, raised, timed_out=False, interrupted=False, returned=returned)
    # The time limit fired if the clock is past it. Not only when the task ended in the
    # cancellation: a task that swallowed it and returned still ran past its limit, and counts
    # as a failure. Another cause (the caller's) counts only if the task ended in it.
    timed_out = cancellation.clock() >= deadline
    interrupted = not timed_out and ended_in_cancel
    return _Ran(committed, raised, timed_out, interrupted, returned)


async def _under(
    control: Control, step: Coroutine[Any, Any, BaseException | None]
) -> tuple[BaseException | None, bool]:
    """Await `step` where the caller cancels it through a scope of its own and `control`:
    (what it returned, whether it ended in that cancellation). Shutdown's cancellation
    (`control` not cancelled) propagates."""
    try:
        return await step, False
    except anyio.get_cancelled_exc_class():
        if not control.cancel_called:
            raise  # not the caller's cancel of this task (shutdown): not ours to end here
        # The caller's scope is cancelled: it must be left before anything is awaited (anyio
        # would cancel that too); the caller does so, once it has the outcome.
        return None, True


async def _run_step(run: TaskRun, call: hooks.CallNext) -> BaseException | None:
    """Call the task inside the hooks' middleware; what it raised, else None.

    Our own cancellations (the deadline, caught by its scope; an operator's cancel; shutdown)
    propagate; anything else the task raises fails the attempt, not the worker
    (`cancellation.ours`).
    """
    logs.reassert()  # a module imported lazily may have reset the logging configuration
    if hooks.wanted("start"):  # no event built per task for no one
        hooks.emit(hooks.Event("start", run.task_name, run.queue, run.id, run.attempt))
    return await hooks.around(run, call)


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
