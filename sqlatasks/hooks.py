"""Hooks: middleware around each execution, and events of a task's life.

    async def timing(run: TaskRun, call_next: Callable[[], Awaitable[None]]) -> None:
        started = time.monotonic()
        try:
            await call_next()           # runs the task (and the middleware after this one)
        finally:
            print(run.task_name, time.monotonic() - started)

    sqlatasks.hooks.add_middleware(timing)          # or: runner --middleware myapp.obs:timing
    sqlatasks.hooks.on("park", lambda event: alert(event.task_name, event.error))

Guarantees: a hook never changes a task's outcome or its bookkeeping. What the task raised
still reaches the middleware (re-raise it, as above; swallowing it does not make the task
succeed), and an exception of a hook's own is logged and ignored; a middleware that does not
call `call_next` is logged, and the task runs anyway. Event callbacks run synchronously where
the event happens (the worker's event loop, or the application's `enqueue`): keep them quick.
Events: enqueue, start, end, retry, park (`Event.kind`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from sqlatasks import cancellation
from sqlatasks.context import TaskRun

log = logging.getLogger(__name__)

EventKind = Literal["enqueue", "start", "end", "retry", "park"]
EVENT_KINDS: tuple[EventKind, ...] = ("enqueue", "start", "end", "retry", "park")
CallNext = Callable[[], Awaitable[None]]
Middleware = Callable[[TaskRun, CallNext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Event:
    """What happened to a task. `task_id` is None for an enqueue (the row has no id before
    the flush); `outcome` and `duration` (seconds) are set on end, `error` on retry and park."""

    kind: EventKind
    task_name: str
    queue: str
    task_id: int | None = None
    attempt: int | None = None
    outcome: str | None = None
    duration: float | None = None
    error: str | None = None


_middleware: list[Middleware] = []
_listeners: dict[str, list[Callable[[Event], None]]] = {kind: [] for kind in EVENT_KINDS}


def add_middleware(middleware: Middleware) -> None:
    """Run `middleware` around every execution in this process; the first added is outermost."""
    _middleware.append(middleware)


def on(kind: EventKind, callback: Callable[[Event], None]) -> None:
    """Call `callback(event)` on every event of `kind` in this process."""
    if kind not in _listeners:
        raise ValueError(f"no event {kind!r}; the events are {', '.join(EVENT_KINDS)}")
    _listeners[kind].append(callback)


def clear() -> None:
    """Remove every middleware and listener (for tests)."""
    _middleware.clear()
    for listeners in _listeners.values():
        listeners.clear()


def load(spec: str) -> Middleware:
    """The middleware named `module:callable` (the runner's --middleware)."""
    module, _, name = spec.partition(":")
    found: Middleware = getattr(importlib.import_module(module), name)
    return found


def wanted(kind: EventKind) -> bool:
    return bool(_listeners[kind])


def emit(event: Event) -> None:
    """Tell the listeners of `event.kind`; one that raises is logged, the others still run."""
    for callback in _listeners[event.kind]:
        try:
            callback(event)
        except Exception:
            log.exception("a %s event hook raised; ignored", event.kind)


async def around(run: TaskRun, call: CallNext) -> BaseException | None:
    """Run `call` (the task) inside the middleware; what the task raised, else None.

    Cancellation of the task is re-raised as it came. Anything a middleware raises of its own
    is logged and ignored.
    """
    if not _middleware:
        return await _bare(call)
    raised: list[BaseException] = []
    called = False

    async def innermost() -> None:
        nonlocal called
        called = True
        try:
            await call()
        except BaseException as exc:
            if not cancellation.ours(exc):
                raised.append(exc)  # the task's own, even a cancellation: it fails the attempt
            raise

    chain: CallNext = innermost
    for middleware in reversed(_middleware):
        chain = _link(middleware, run, chain)
    try:
        await chain()
    except BaseException as exc:
        if cancellation.ours(exc):
            raise
        if not raised or exc is not raised[0]:
            log.error("a middleware raised; ignored: %r", exc, exc_info=exc)
    if not called:
        log.error("a middleware did not call call_next: running task %d anyway", run.id)
        await innermost_safe(innermost, raised)
    if raised:
        cancellation.forget_native(raised[0])
    return raised[0] if raised else None


async def _bare(call: CallNext) -> BaseException | None:
    """`around` without middleware: the same outcome, without building the chain per task."""
    try:
        await call()
    except BaseException as exc:
        if cancellation.ours(exc):
            raise
        cancellation.forget_native(exc)
        return exc
    return None


def _link(middleware: Middleware, run: TaskRun, call_next: CallNext) -> CallNext:
    async def step() -> None:
        await middleware(run, call_next)

    return step


async def innermost_safe(innermost: CallNext, raised: list[BaseException]) -> None:
    try:
        await innermost()
    except BaseException as exc:
        if cancellation.ours(exc):
            raise
        if not raised:
            raised.append(exc)
