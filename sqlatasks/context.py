"""What a running task may know about its own execution: `current_task()`.

Set by the execution of each claimed task (in the runner and in `sqlatasks.testing`), for the
task's own async context only; concurrent tasks in one worker each see their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


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
    trace_context: str | None = None
    """The OpenTelemetry context its enqueue recorded (JSON text of the propagator's carrier,
    schema version 8), or None; `sqlatasks.tracing.middleware` continues that trace."""


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


@contextmanager
def running(run: TaskRun) -> Iterator[None]:
    token = _current.set(run)
    try:
        yield
    finally:
        _current.reset(token)
