"""Execution slots: long-lived tasks that run claimed tasks one after another; the wake-up
that tells the claim loop a slot is free.

A worker starts one slot per unit of concurrency, once, and hands each claimed task to them
(`put`). Spawning a task per execution (its handle, cancel scope and event) cost about as much
as running a short task; a slot costs nothing per task, and a whole claimed batch wakes the
idle slots with one event.

Nor does a slot make a cancel scope per task (entered, left, and its deadline's timer: a fifth
of a worker's CPU at 1x100, docs/performance.md): each slot runs its tasks inside one
long-lived scope and hands its `cancel` to each task it runs. Cancelling it (a time limit, a
lost lease, an operator's cancel, for the task running in it) interrupts that task like any
cancel scope would; the slot then leaves the spent scope and enters a fresh one for its next
task. Cancelling the scope the slots run in (shutdown) interrupts them all.

A batch of tasks that never wait runs through one slot without a pause, so nothing else runs
until it ends, the claim loop included: the next claim would go out only after the whole
batch, and the worker would wait for it idle. `make_way()` (the dispatcher's) lets the event
loop run others between two items once half the slots are free (and no fewer than
EARLY_CLAIM), so the claim for them is on the server while the rest of the batch runs here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

from sqlatasks import cancellation

T = TypeVar("T")

EARLY_CLAIM = 50
"""Fewest free slots worth a claim before a batch has run through (`Slots(make_way=...)`). A
claim has a cost per statement (its planning, 0.1-0.65 ms on the server, and a round trip),
and on a machine whose cores the workers already fill, the claims of 25 that two workers of
50 made that way cost more than the overlap gained: 0.58 to 0.43 of the raw loop at 2 x 50,
while one worker of 100 went from 0.47 to 0.65 (docs/performance.md, "Fifth round")."""


class Slots(Generic[T]):
    """Items waiting for a slot, and the slots' loop (`serve`)."""

    def __init__(
        self,
        run: Callable[[T, Callable[[], None]], Awaitable[None]],
        make_way: Callable[[], bool] = lambda: False,
    ) -> None:
        """`run(item, cancel)` runs one item; `cancel()` cancels it, and is good only until
        `run` returns. `make_way()`: whether a slot running items back to back should let the
        event loop run others before its next item (the claim loop, to claim for the slots
        freed so far while the rest run)."""
        self._run = run
        self._make_way = make_way
        self._waiting: deque[T] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        """One future per idle slot, which it waits on; resolved to wake that slot."""
        self._waking = 0
        """Slots woken that have not yet looked for an item (0 or 1)."""

    def put(self, item: T) -> None:
        """Run `item` in the next free slot. Never blocks: the caller puts no more items than
        there are free slots (the dispatcher claims no more)."""
        self._waiting.append(item)
        self._wake_one()

    def _wake_one(self) -> None:
        """Wake one idle slot, unless one is already on its way.

        One, not one per item: a slot that takes an item wakes the next before it runs it,
        so a batch starts one slot per event-loop turn while its tasks wait on I/O; and when
        they never wait (short tasks), the first slot runs the batch through before the next
        one wakes, which then finds nothing. Waking every slot for every batch cost a task
        switch per slot for nothing (measured in docs/performance.md)."""
        while self._waking == 0 and self._idle:
            idle = self._idle.popleft()
            if not idle.done():  # else cancelled (shutdown) and not yet removed
                idle.set_result(None)
                self._waking = 1

    async def serve(self) -> None:
        """One slot: run items as they come, until cancelled."""
        cancelling = cancellation.cancelling_of_current()
        loop = asyncio.get_running_loop()
        while True:
            with cancellation.new_scope() as scope:
                while not scope.cancel_called:
                    if not self._waiting:
                        await cancellation.sparing_strays(self._idle_until_woken(loop))
                        continue
                    item = self._waiting.popleft()
                    if self._waiting:
                        self._wake_one()
                    # Nothing awaited from here until the item has run (or the scope is left):
                    # a cancel of this scope is always for the item it runs.
                    await self._run(item, scope.cancel)
                    if cancelling() and not scope.cancel_called:
                        # A task that cancelled its own asyncio task and returned leaves that
                        # request on the slot: withdraw it, or the slot's next wait would end
                        # in it.
                        await cancellation.drop_stray()
                    if self._waiting and self._make_way() and not scope.cancel_called:
                        # Between items, the last one done (its lease finished: nothing
                        # cancels this scope for it now); shutdown's cancel ends the slot here.
                        await cancellation.sparing_strays(asyncio.sleep(0))
            # The scope was cancelled for the item that just ran; that run is over and was
            # told so. Left without awaiting anything in it; the next item gets a fresh one.
            if cancelling():
                await cancellation.drop_stray()

    async def _idle_until_woken(self, loop: asyncio.AbstractEventLoop) -> None:
        woken = loop.create_future()
        self._idle.append(woken)
        try:
            await woken
        finally:
            if woken.done() and not woken.cancelled():
                self._waking = 0  # this slot was the one on its way
            elif woken in self._idle:  # cancelled while idle (shutdown)
                self._idle.remove(woken)


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
