"""Execution slots and the deadline watchdog (issue 17): no cancel scope or timer per task.

Each slot runs its tasks in one long-lived cancel scope, handed to the running task's lease;
one watchdog per worker cancels a task when its lease's deadline passes. What must hold, with
the real `Slots`, `Lease` and `Watchdog` on a real event loop (no database: they do no I/O):

- a cancel that reaches a lease after its task ended (a renewal's late answer) never cancels
  the slot's next task;
- a task whose deadline comes before every running one's is still cut off at its own;
- a claimed batch of tasks that wait on I/O runs at once, one per slot, not one after another;
- a batch of tasks that never wait makes way for the claim half-way (`make_way`);
- a cancel a task leaves for the slot to meet later is withdrawn, and the slot serves on.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import cast

import anyio
import pytest

from sqlatasks import cancellation, worker
from sqlatasks.dispatcher import Running
from sqlatasks.leases import Lease, Watchdog
from sqlatasks.settings import Settings
from sqlatasks.slots import Slots

pytestmark = pytest.mark.anyio


async def test_a_late_cancel_of_an_ended_task_spares_the_next_one() -> None:
    ended: list[tuple[str, bool]] = []
    leases: dict[str, Lease] = {}

    async def run(name: str, cancel: Callable[[], None]) -> None:
        lease = leases[name] = Lease(math.inf)
        lease.start(math.inf, cancel)
        try:
            if name == "second":
                leases["first"].lost()  # the renewal's answer about the first, after it ended
            await anyio.sleep(0.05)
            ended.append((name, False))
        except anyio.get_cancelled_exc_class():
            ended.append((name, True))
        finally:
            lease.finish()

    slots: Slots[str] = Slots(run)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(slots.serve)  # one slot: the second task runs after the first
            slots.put("first")
            slots.put("second")
            while len(ended) < 2:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert ended == [("first", False), ("second", False)]
    assert leases["first"].interrupted  # told, but its slot had moved on


async def test_the_watchdog_cuts_off_a_task_whose_deadline_comes_first() -> None:
    running: list[Lease] = []
    cut_off: dict[str, float] = {}
    watchdog = Watchdog(lambda: running)

    async def run(name_and_limit: tuple[str, float], cancel: Callable[[], None]) -> None:
        name, limit = name_and_limit
        lease = Lease(math.inf)
        running.append(lease)
        started = cancellation.clock()
        lease.start(started + limit, cancel)
        watchdog.started(lease)
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            if not lease.cancel_called:
                raise  # the test's end, not the watchdog
            cut_off[name] = cancellation.clock() - started
        finally:
            lease.finish()
            running.remove(lease)

    slots: Slots[tuple[str, float]] = Slots(run)
    with anyio.fail_after(10):  # long before the long task's 30 s
        async with anyio.create_task_group() as group:
            group.start_soon(watchdog.run)
            group.start_soon(slots.serve)
            group.start_soon(slots.serve)
            slots.put(("long", 20.0))
            await anyio.sleep(0.1)  # the watchdog now sleeps until the long task's deadline
            slots.put(("short", 0.2))
            while "short" not in cut_off:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert 0.2 <= cut_off["short"] < 5
    assert "long" not in cut_off


async def test_a_batch_of_waiting_tasks_runs_one_per_slot_at_once() -> None:
    started: list[int] = []
    started_at_first_end: list[int] = []

    async def run(item: int, cancel: Callable[[], None]) -> None:
        started.append(item)
        await anyio.sleep(0.2)  # I/O: the slot runs nothing else meanwhile
        if not started_at_first_end:
            started_at_first_end.append(len(started))

    slots: Slots[int] = Slots(run)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(slots.serve)
            await anyio.sleep(0.05)  # every slot idle
            for item in range(5):
                slots.put(item)
            while len(started) < 5 or not started_at_first_end:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    # Every task had started when the first one ended: five slots at once, not one by one.
    assert started_at_first_end == [5]
    assert sorted(started) == [0, 1, 2, 3, 4]


async def test_a_slot_running_a_batch_through_makes_way_for_the_claim() -> None:
    """Tasks that never wait run back to back in one slot; once `make_way()` says so (the
    dispatcher: the claim loop waits and half the slots are free), the slot lets the event
    loop run others before its next task, so the claim for the freed slots goes out while
    the rest of the batch runs, not after it."""
    order: list[str] = []
    freed = anyio.Event()  # the dispatcher's wake-up, set as each task ends

    async def run(name: str, cancel: Callable[[], None]) -> None:
        order.append(name)  # no await: a no-op task
        freed.set()

    async def claimer() -> None:
        await freed.wait()
        order.append("claim")

    slots: Slots[str] = Slots(run, make_way=lambda: len(order) == 2)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(slots.serve)
            group.start_soon(claimer)
            await anyio.sleep(0.01)  # both wait: the slot for items, the claimer for a slot
            for name in ("t1", "t2", "t3", "t4"):
                slots.put(name)
            while len(order) < 5:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert order == ["t1", "t2", "claim", "t3", "t4"]


@pytest.mark.parametrize(
    ("concurrency", "running", "early"),
    [(100, 50, True), (100, 51, False), (200, 100, True), (200, 101, False), (50, 25, False)],
)
async def test_the_dispatcher_claims_early_only_for_enough_free_slots(
    concurrency: int, running: int, early: bool
) -> None:
    """The dispatcher's `make_way`: while its claim loop waits for slots, once half of them
    and at least `slots.EARLY_CLAIM` are free (a claim of 25 for two workers of 50 cost more
    than it gained, docs/performance.md); never while a claim is under way."""
    url = "postgresql+asyncpg://nobody@127.0.0.1:1/nothing"  # nothing connects here
    parts = worker.build(Settings(database_url=url, concurrency=concurrency), 0)
    dispatcher = parts.dispatcher
    dispatcher._running = {i: cast(Running, None) for i in range(running)}
    assert not dispatcher._claim_before_the_batch_ends()  # the claim loop is not waiting
    dispatcher._waiting_for_slots = True
    assert dispatcher._claim_before_the_batch_ends() is early
    await parts.engine.dispose()
    await parts.task_engine.dispose()


async def test_a_cancel_a_task_left_for_the_next_turn_spares_the_slot() -> None:
    """A task that schedules its own asyncio task's (the slot's) cancellation for later and
    returns: the cancel lands on whatever the slot awaits next (its pause to make way, its
    wait for an item). That is not a cancel of ours: the slot withdraws it and serves on."""
    ran: list[str] = []

    async def run(name: str, cancel: Callable[[], None]) -> None:
        ran.append(name)
        if name.startswith("cancels"):
            current = asyncio.current_task()
            assert current is not None
            asyncio.get_running_loop().call_soon(current.cancel)

    slots: Slots[str] = Slots(run, make_way=lambda: True)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(slots.serve)
            await anyio.sleep(0.01)
            slots.put("cancels, then a pause to make way")
            slots.put("t2")
            await anyio.sleep(0.05)
            slots.put("cancels, then the wait for an item")
            await anyio.sleep(0.05)
            slots.put("t4")
            while len(ran) < 4:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert ran[1::2] == ["t2", "t4"]
