"""Telling our cancellations from a task's own: the one rule, for the executor and the hooks.

A task's code can raise a cancellation that none of our scopes issued (a future cancelled
elsewhere, an explicit `raise asyncio.CancelledError()`). Re-raised as if it were ours, it
would stop the worker; it must fail that attempt only, like any exception (DESIGN.md, "A
task's own CancelledError").
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

_scope_class: type[anyio.CancelScope] | None = None


def new_scope(deadline: float = math.inf) -> anyio.CancelScope:
    """`anyio.CancelScope(deadline=deadline)`, without anyio's look-up of the running back end
    on every call (a few % of a worker's time at one scope per task): the back end's class is
    looked up once, on the first call. Only for code that runs on one back end for its life
    (a worker's event loop)."""
    global _scope_class
    if _scope_class is None:
        _scope_class = type(anyio.CancelScope())
    return _scope_class(deadline=deadline)


def clock() -> float:
    """`anyio.current_time()` on asyncio (and uvloop): the running event loop's `time()`,
    without anyio's look-up of the running back end on every call (a tenth of a worker's CPU
    at one call per task, docs/performance.md). Only inside a running asyncio event loop."""
    return asyncio.get_running_loop().time()


def ours(exc: BaseException) -> bool:
    """Whether `exc` is a cancellation that a scope enclosing this task issued: the attempt's
    deadline, an operator's cancel, or shutdown. A cancellation raised while none of them is
    cancelled is the task's own doing, and fails its attempt like any other exception."""
    # current_effective_deadline() is -inf exactly when a scope around us (up to the nearest
    # shield) has been cancelled: cancel_called on our own scopes, wherever they live.
    return (
        isinstance(exc, anyio.get_cancelled_exc_class())
        and anyio.current_effective_deadline() == -math.inf
    )


def forget_native(exc: BaseException) -> None:
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


def cancelling_of_current() -> Callable[[], int]:
    """The current asyncio task's `cancelling` (requests pending on it), to ask cheaply and
    often; always 0 off asyncio."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not running on asyncio
        task = None
    return task.cancelling if task is not None else lambda: 0


async def drop_stray() -> None:
    """Withdraw a cancellation that code run by the current asyncio task requested of it and
    left behind (it cancelled its own asyncio task, then returned), unless one of our scopes
    is cancelled. A long-lived execution slot calls this between tasks: the next task, or
    its wait for one, must not end in a cancellation that was not ours. Free when none is."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not running on asyncio
        return
    if task is None or not task.cancelling() or anyio.current_effective_deadline() == -math.inf:
        return
    # A request still pending is delivered here, and withdrawn unless ours came in meanwhile
    # (shutdown); one the task already took and swallowed is only counted, and withdrawn too.
    await sparing_strays(anyio.lowlevel.checkpoint())
    _withdraw(task)


async def sparing_strays(wait: Awaitable[None]) -> None:
    """Await `wait`, ended early by any cancellation, but raise only ours: a request that code
    run by the current asyncio task scheduled for later (`call_soon(current_task().cancel)`)
    and left behind as it returned lands in whatever that task awaits next, and is withdrawn
    here. A long-lived execution slot awaits its pauses between tasks through this: it must
    serve on, not end (the worker's task group would take a slot's end for its own)."""
    try:
        await wait
    except asyncio.CancelledError as exc:
        if ours(exc):
            raise
        _withdraw(asyncio.current_task())


def _withdraw(task: asyncio.Task[object] | None) -> None:
    """Withdraw every cancellation request counted on `task`."""
    while task is not None and task.cancelling():
        task.uncancel()
