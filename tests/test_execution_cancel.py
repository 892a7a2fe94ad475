"""An operator's cancel and a lost lease under the execution slots' long-lived scopes (issue
17): they cancel their task only, write what docs/cancellation.md and docs/runner.md say, and
the slot goes on taking work. Real runners and a real PostgreSQL, except the last two tests,
which drive the real Slots and Lease in-process for a cancel that comes before the start."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks import cancellation
from sqlatasks.leases import Lease
from sqlatasks.slots import Slots
from tests import execution_tasks as t
from tests import ledger
from tests.conftest import ROOT
from tests.execution_support import MODULE, events_of, put_in_order, row, wait_gone
from tests.execution_tasks import Job
from tests.processes import Runners

FAST_LEASE = ("--check-interval", "0.5", "--lease", "15", "--idle-sleep", "0.5")
"""As tests/test_lease_renewal.py: a 15 s lease, renewed every 3.75 s."""


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQLATASKS_")}
    env["SQLATASKS_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "sqlatasks", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def without_due_in(found: dict[str, Any] | None) -> dict[str, Any]:
    assert found is not None
    return {k: v for k, v in found.items() if k != "due_in"}


@pytest.mark.slow
async def test_cancel_from_the_command_line_stops_that_task_only_and_the_slot_goes_on(
    db_url: str, engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", "--concurrency", "2", imports=[MODULE])
    await runner.started(1)
    victim, neighbour = await put_in_order(
        engine, (t.waits, Job(key=1, sleep=600)), (t.waits, Job(key=2, sleep=5))
    )
    await ledger.wait_for_entries(tmp_path, "start", 2)
    done = cli(db_url, "cancel", str(victim))
    assert done.stdout.split() == ["cancelled", "cancelling"], done
    await runner.wait_for_log(rf"task {victim} \S+ cancelled while running", timeout=30)
    assert events_of(tmp_path, 1) == ["start", "cancelled"]
    assert ledger.entries(tmp_path, "cancelled")[0].fields["after"] < 5
    # The freed slot takes the next task and runs it in full; the neighbour is untouched.
    (after,) = await put_in_order(engine, (t.normal, Job(key=3, sleep=1)))
    await wait_gone(engine, after, "the next task to complete")
    await wait_gone(engine, neighbour, "the neighbour to complete")
    assert events_of(tmp_path, 2) == ["start", "end"]
    assert events_of(tmp_path, 3) == ["start", "end"]
    assert await row(engine, victim) is None
    assert "Traceback" not in runner.log()


@pytest.mark.slow
async def test_a_lease_taken_over_cancels_its_task_only_and_writes_nothing(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner(*FAST_LEASE, "--workers", "1", "--concurrency", "2", imports=[MODULE])
    await runner.started(1)
    stolen, neighbour = await put_in_order(
        engine, (t.waits, Job(key=1, sleep=600)), (t.waits, Job(key=2, sleep=12))
    )
    await ledger.wait_for_entries(tmp_path, "start", 2)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE sqlatasks_tasks SET lease_token = gen_random_uuid(), locked_by = 'thief', "
                "locked_until = now() + interval '1 hour' WHERE id = :id"
            ),
            {"id": stolen},
        )
    before = without_due_in(await row(engine, stolen))
    await runner.wait_for_log(
        rf"task {stolen} \S+ attempt 1 lost its lease \(taken over by another claim\)",
        timeout=30,
    )
    assert events_of(tmp_path, 1) == ["start", "cancelled"]
    # The freed slot runs the next task in full; the neighbour's lease is still renewed, and it
    # runs its 12 s (three renewals) to its end.
    (after,) = await put_in_order(engine, (t.normal, Job(key=3, sleep=1)))
    await wait_gone(engine, after, "the next task to complete")
    await wait_gone(engine, neighbour, "the neighbour to complete", timeout=60)
    assert events_of(tmp_path, 2) == ["start", "end"]
    # Nothing written over the thief's claim: its token, lease, attempts, no error.
    assert without_due_in(await row(engine, stolen)) == before
    assert "Traceback" not in runner.log()


async def test_a_cancel_before_the_start_ends_the_task_at_its_first_await() -> None:
    # An operator's cancel that reaches a claimed task before it starts (Lease.interrupt, then
    # Lease.start hands over the slot's cancel): the task is cancelled at its first await, and
    # the slot's next task runs in full.
    events: list[tuple[str, str]] = []
    lease_of: dict[str, Lease] = {"cancelled": Lease(math.inf), "next": Lease(math.inf)}
    lease_of["cancelled"].interrupt()

    async def run(name: str, cancel: Callable[[], None]) -> None:
        lease = lease_of[name]
        lease.start(cancellation.clock() + 60, cancel)
        try:
            events.append((name, "before its first await"))
            await anyio.sleep(1)
            events.append((name, "end"))
        except anyio.get_cancelled_exc_class():
            if not lease.cancel_called:
                raise
            events.append((name, "cancelled"))
        finally:
            lease.finish()

    slots: Slots[str] = Slots(run)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(slots.serve)  # one slot
            slots.put("cancelled")
            slots.put("next")
            while len(events) < 4:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert events == [
        ("cancelled", "before its first await"),
        ("cancelled", "cancelled"),
        ("next", "before its first await"),
        ("next", "end"),
    ]


async def test_a_lease_untrusted_before_the_start_ends_the_task_at_its_first_await() -> None:
    # A claim whose lease's trust ran out before its task started (a slow start): cut off at
    # once, counted as cut off (not a time limit), and the slot goes on.
    events: list[tuple[str, str]] = []
    lease_of: dict[str, Lease] = {}

    async def run(name: str, cancel: Callable[[], None]) -> None:
        now = cancellation.clock()
        lease = lease_of[name] = Lease(now - 1 if name == "stale" else math.inf)
        lease.start(now + 60, cancel)
        try:
            await anyio.sleep(0.2)
            events.append((name, "end"))
        except anyio.get_cancelled_exc_class():
            if not lease.cancel_called:
                raise
            events.append((name, "cancelled"))
        finally:
            lease.finish()

    slots: Slots[str] = Slots(run)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(slots.serve)
            slots.put("stale")
            slots.put("fresh")
            while len(events) < 2:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert events == [("stale", "cancelled"), ("fresh", "end")]
    assert lease_of["stale"].cut_off
    assert not lease_of["fresh"].cancel_called
