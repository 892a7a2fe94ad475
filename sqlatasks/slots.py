"""Execution slots: long-lived tasks that run claimed tasks one after another; the wake-up
that tells the claim loop a slot is free.

A worker starts one slot per unit of concurrency, once, and hands each claimed task to them
(`put`). Spawning a task per execution (its handle, cancel scope and event) cost about as much
as running a short task; a slot costs nothing per task, and a whole claimed batch wakes the
idle slots with one event. What a slot runs keeps its own scopes (time limit, lease, operator's
cancel); cancelling the scope the slots run in (shutdown) interrupts them like any task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

from sqlatasks import cancellation

T = TypeVar("T")


class Slots(Generic[T]):
    """Items waiting for a slot, and the slots' loop (`serve`)."""

    def __init__(self, run: Callable[[T], Awaitable[None]]) -> None:
        self._run = run
        self._waiting: deque[T] = deque()
        self._ready = anyio.Event()
        """Set when items were put; every idle slot wakes and takes one, if any is left."""

    def put(self, item: T) -> None:
        """Run `item` in the next free slot. Never blocks: the caller puts no more items than
        there are free slots (the dispatcher claims no more)."""
        self._waiting.append(item)
        self._ready.set()

    async def serve(self) -> None:
        """One slot: run items as they come, until cancelled."""
        cancelling = cancellation.cancelling_of_current()
        while True:
            while not self._waiting:
                if self._ready.is_set():
                    self._ready = anyio.Event()
                await self._ready.wait()
            await self._run(self._waiting.popleft())
            if cancelling():
                # A task that cancelled its own asyncio task and returned leaves that request
                # on the slot: withdraw it, or the slot's next wait would end in it.
                await cancellation.drop_stray()


class Wakeup:
    """A level-triggered nudge: `set()` any number of times, `wait()` consumes it."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        """The event loop of the waiter, once it has waited (for `set_from_any_thread`)."""

    def set(self) -> None:
        self._event.set()

    def set_from_any_thread(self) -> None:
        """`set()`, also from a thread other than the waiter's event loop's (a task's
        `anyio.to_thread` work reporting progress): handed to that loop, since an event's
        waiters may only be woken on their own loop."""
        loop = self._loop
        if loop is None:
            self._event.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: a worker thread
            running = None
        if running is loop:
            self._event.set()
        else:
            loop.call_soon_threadsafe(self.set)

    async def wait(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        with anyio.move_on_after(seconds):
            await self._event.wait()
        self._event = anyio.Event()
