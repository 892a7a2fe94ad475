"""Running one claimed task, to an Outcome value.

The steps: find the task (only registered code, imported only from allowed packages), validate
its payload, run it under its time limit, and say what happened. The completer writes it.
Only a session task touches the database here, through the transaction it is given, which
also deletes its row (`Committed`): see sqlatasks.transactions.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import anyio

from sqlatasks import errors, registry
from sqlatasks.context import TaskRun, running
from sqlatasks.queries import ClaimedTask
from sqlatasks.transactions import RunInTransaction

ERROR_TAIL = 4000
"""Characters of a failure's traceback kept in `last_error` (its end: where it was raised)."""


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
    """The task raised Retry: due again in `after` seconds, the attempt not counted."""

    task: ClaimedTask
    after: float


@dataclass(frozen=True, slots=True)
class Cancelled:
    """An operator cancelled the running task: delete its row, like a success."""

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
WRITTEN_ELSEWHERE = (Committed, LeaseLost)
"""Outcomes whose row the completer must not touch."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What applies when a task does not say otherwise."""

    task_timeout: float
    retry_delay: float
    timeout_cap: float
    """No attempt runs longer than this: the lease was sized for it."""
    allowed_imports: Sequence[str]


async def execute(
    claimed: ClaimedTask,
    limits: Limits,
    transactions: RunInTransaction,
    on_start: Callable[[float], None] | None = None,
) -> Outcome:
    """Run `claimed` and return its outcome; only shutdown's cancellation escapes.

    A session task runs through `transactions`. `on_start(deadline)` is told when the task's
    time runs out (anyio's clock), just before it runs.
    """
    if claimed.max_attempts is not None and claimed.attempts > claimed.max_attempts:
        # Claimed again after a lease ran out (its worker died mid-attempt): never run past
        # the limit.
        return Failed(claimed, error="WorkerLost: its last attempt never finished", retry_in=None)
    try:
        task = registry.resolve(claimed.task_name, limits.allowed_imports)
        payload = task.load(claimed.payload)
    except (errors.TaskNotRegistered, errors.PayloadError) as exc:
        # Running it again would fail the same way: park it for a person to look at.
        return Failed(claimed, error=_clean(f"{type(exc).__name__}: {exc}"), retry_in=None)
    except Exception as exc:  # a model validator that raised something odd: the same
        return Failed(claimed, error=describe(exc), retry_in=None)

    timeout = min(task.timeout or limits.task_timeout, limits.timeout_cap)
    raised: BaseException | None = None
    ends = anyio.current_time() + timeout
    if on_start is not None:
        on_start(ends)
    run = TaskRun(
        id=claimed.id,
        task_name=claimed.task_name,
        queue=claimed.queue,
        attempt=claimed.attempts,
        max_attempts=claimed.max_attempts,
        lease_token=claimed.lease_token,
    )
    committed: bool | None = None  # a session task's transaction: committed, or lease lost
    with anyio.CancelScope(deadline=ends) as deadline, running(run):
        try:
            if task.wants_session:
                committed = await transactions(claimed, partial(task, payload))
            else:
                await task(payload)
        except anyio.get_cancelled_exc_class():
            raise  # our deadline (caught by its scope) or shutdown (propagates)
        except BaseException as exc:
            # SystemExit or KeyboardInterrupt from a task fails the task, not the worker.
            raised = exc

    # First: a commit that went through is final, even if the deadline passed while it ran.
    if committed is not None:
        return Committed(claimed) if committed else LeaseLost(claimed)
    retry_delay = task.retry_in(claimed.attempts, limits.retry_delay)
    # cancel_called, not cancelled_caught: a task that swallowed its cancellation and
    # returned still ran past its limit, and counts as a failure.
    if deadline.cancel_called:
        return _failure(claimed, f"TimeoutError: exceeded its {timeout:g} s limit", retry_delay)
    if isinstance(raised, errors.Retry):
        return Snoozed(claimed, after=raised.after)
    if raised is not None:
        return _failure(claimed, describe(raised), retry_delay)
    return Completed(claimed)


def describe(exc: BaseException) -> str:
    """Exception type, message and the tail of its traceback, for `last_error` and the log."""
    try:
        head = f"{type(exc).__name__}: {exc}"
        trace = "".join(traceback.format_exception(exc))
    except Exception:  # an exception whose __str__ fails
        return f"{type(exc).__name__}: <message unavailable>"
    return _clean(f"{head}\n{trace[-ERROR_TAIL:]}")


def _clean(text: str) -> str:
    """Text PostgreSQL accepts: no NUL bytes, no lone surrogates (either would fail the write
    of the outcome for ever)."""
    return text.replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")


def _failure(claimed: ClaimedTask, error: str, retry_delay: float) -> Failed:
    exhausted = claimed.max_attempts is not None and claimed.attempts >= claimed.max_attempts
    return Failed(claimed, error=error, retry_in=None if exhausted else retry_delay)
