"""What a running task may know about its own execution: `current_task()`.

Set by the execution of each claimed task (in the runner and in `sqlatasks.testing`), for the
task's own async context only; concurrent tasks in one worker each see their own.
"""

from __future__ import annotations

import contextvars
import types
import uuid
from collections.abc import Coroutine, Generator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


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
