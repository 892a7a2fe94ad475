"""What a running task may know about its own execution, and tell: `current_task()`.

Set by the execution of each claimed task (in the runner and in `sqlatasks.testing`), for the
task's own async context only; concurrent tasks in one worker each see their own.
`current_task().report(value)` records a small progress value that `get_task` shows
(docs/status.md#progress).
"""

from __future__ import annotations

import contextvars
import math
import types
import uuid
from collections.abc import Callable, Coroutine, Generator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic_core

from sqlatasks import errors, payloads

T = TypeVar("T")

PROGRESS_LIMIT = 2048
"""Bytes at most of one progress value written as JSON (UTF-8): progress is a small status
("step 3 of 5", a percentage, a few counters), not output; a result holds output."""
PROGRESS_PERIOD = 2.0
"""Seconds at least between two progress writes of one worker, hence of one task: what a task
reports in between replaces what it reported before (the last value wins)."""


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One execution of a task: which row, which attempt, under which lease."""

    id: int
    task_name: str
    queue: str
    attempt: int
    """1 for the first execution; an execution cut short by a lost worker counts."""
    max_attempts: int | None
    lease_token: uuid.UUID
    """Fresh for every claim: two executions of one task never share it."""
    on_report: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    """Takes what `report` accepted, as JSON text: the worker's lease keeper, or
    `run_pending`; None (a TaskRun built by hand) checks reports and drops them."""

    trace_context: str | None = None
    """The OpenTelemetry context its enqueue recorded (JSON text of the propagator's carrier,
    schema version 8), or None; `sqlatasks.tracing.middleware` continues that trace."""

    deadline: float = math.inf
    """When this attempt's time limit runs out, on `anyio.current_time()`'s clock (seconds;
    `deadline - anyio.current_time()` is what is left): a task or a library it calls can
    budget its work and clean up before the cut. The worker cancels the attempt then (sooner
    if its lease is lost or an operator cancels it). Not `anyio.current_effective_deadline()`:
    a worker runs its tasks in its execution slots' long-lived scopes, which have no deadline
    of their own (docs/performance.md, "Fourth round"). inf for a TaskRun built by hand."""

    def report(self, value: Any) -> None:
        """Record `value` as this task's progress, for `get_task(...).progress` to show.

        `value` is anything pydantic writes as JSON (a model, a dict, a number, a string);
        NaN and infinities become null. Returns at once, having written nothing: the worker
        writes the latest value at most once every PROGRESS_PERIOD seconds, beside its lease
        renewals, and only while this attempt holds the task's lease. A value reported less
        than PROGRESS_PERIOD before the task ends may never be written (the task's outcome
        says how it ended). Raises ProgressError when `value` is not JSON, holds a NUL
        character (PostgreSQL's jsonb refuses it), or is longer than PROGRESS_LIMIT bytes.
        """
        try:
            encoded = pydantic_core.to_json(value, inf_nan_mode="null")
        except pydantic_core.PydanticSerializationError as exc:
            raise errors.ProgressError(task_name=self.task_name, problem=str(exc)) from None
        if len(encoded) > PROGRESS_LIMIT:
            problem = f"{len(encoded)} bytes of JSON, over the limit of {PROGRESS_LIMIT}"
            raise errors.ProgressError(task_name=self.task_name, problem=problem)
        text = encoded.decode()
        nul = payloads.nul_path(text)
        if nul is not None:
            # payloads names the top level "the payload"; here it is the progress value.
            where = nul.replace("the payload", "the value", 1) if nul.startswith("the ") else nul
            problem = f"a NUL character (\\x00) in {where}, which PostgreSQL cannot store in JSON"
            raise errors.ProgressError(task_name=self.task_name, problem=problem)
        if self.on_report is not None:
            self.on_report(text)


_current: ContextVar[TaskRun] = ContextVar("sqlatasks_current_task")


def current_task() -> TaskRun:
    """The execution running in this context; LookupError outside a task that sqlatasks runs."""
    try:
        return _current.get()
    except LookupError:
        message = "current_task() is only available inside a task run by sqlatasks"
        raise LookupError(message) from None


def current_run() -> TaskRun | None:
    """The execution running in this context, or None (for log records and hooks)."""
    return _current.get(None)


@types.coroutine
def isolated(coroutine: Coroutine[Any, Any, T], run: TaskRun) -> Generator[Any, Any, T]:
    """`await isolated(coroutine, run)`: await `coroutine`, the execution `run`, in a fresh copy
    of the current context, in the current asyncio task, with `current_task()` set to `run`.
    What the coroutine sets in a `ContextVar` stays in the copy, dropped when it ends; it
    still sees what was set before.

    Execution slots run one task after another in one asyncio task (`sqlatasks.slots`), so
    without this, a `ContextVar` one task set and never reset would be seen by the slot's next
    task. A new asyncio task per execution (`create_task(..., context=...)`) is what slots
    avoid; stepping the coroutine inside `Context.run` costs about 2 µs per task and 1 µs per
    suspension instead (measured in docs/performance.md).
    """
    context = contextvars.copy_context()
    context.run(_current.set, run)  # never reset: the copy is dropped
    step, send, throw = context.run, coroutine.send, coroutine.throw
    sent: Any = None
    thrown: BaseException | None = None
    while True:
        try:
            # Each step of the coroutine runs in the copy; what it yields (a future the event
            # loop waits on) passes through untouched, as do what comes back and what is
            # thrown in (a cancellation).
            yielded = step(send, sent) if thrown is None else step(throw, thrown)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            sent, thrown = (yield yielded), None
        except BaseException as exc:
            sent, thrown = None, exc
