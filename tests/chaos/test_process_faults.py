"""Faults on the runner's processes: SIGKILL, SIGSTOP, a task that blocks or ignores its
cancellation. Each run is judged by the ledger checker (tests/chaos/ledger.py)."""

from __future__ import annotations

import os
import signal
import time

import anyio
import pytest
from sqlalchemy import text

from tests.chaos import invariants, tasks
from tests.chaos.harness import Chaos
from tests.chaos.invariants import read_executions
from tests.eventually import eventually
from tests.processes import alive, wait_dead

pytestmark = pytest.mark.slow


async def started(chaos: Chaos, count: int) -> list[tuple[int, int]]:
    """Wait for `count` executions to start; (key, pid) of each."""
    runs = await eventually(
        lambda: read_executions(chaos.folder),
        lambda runs: len(runs) >= count,
        what=f"{count} executions to start",
    )
    return [(r.key, r.pid) for r in runs]


async def test_sigkill_a_worker_mid_task(chaos: Chaos) -> None:
    runner = chaos.runner("--workers", "2", "--concurrency", "3", "--retry-delay", "0.5")
    await runner.started(2)
    await chaos.enqueue(tasks.work, 12, sleep=1.5)
    (key, pid), *_ = await started(chaos, 1)
    chaos.kill_worker(pid)
    # The supervisor sees the death and fails the leases at once: no wait for their expiry.
    await runner.wait_for_log("worker-. died holding [1-3] tasks")
    verdict = await chaos.settled(timeout=60)
    verdict.assert_ok()
    assert verdict.completed == 12
    assert any(d.key == key and d.cause.startswith("sigkill worker") for d in verdict.duplicates)


async def test_sigkill_the_whole_runner_then_another_finishes_after_lease_expiry(
    chaos: Chaos,
) -> None:
    doomed = chaos.runner("--workers", "2", "--concurrency", "2")
    await doomed.started(2)
    await chaos.enqueue(tasks.work, 4, sleep=30)
    await started(chaos, 4)
    chaos.kill_runner(doomed)  # supervisor and workers: no one is left to clean up
    assert await count(chaos, "locked_until > now()") == 4
    heir = chaos.runner("--workers", "1", "--concurrency", "4", "--idle-sleep", "0.5")
    await heir.started(1)
    await anyio.sleep(1.5)  # several idle polls: a valid lease keeps the heir off
    assert len(read_executions(chaos.folder)) == 4
    # The leases end (back-dated: only the database clock counts), and the rest is quick now.
    async with chaos.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE sqlatasks_tasks SET locked_until = now() - interval '1 second',"
                " payload = payload || '{\"sleep\": 0}'"
            )
        )
    verdict = await chaos.settled(timeout=60)
    verdict.assert_ok()
    assert [d.cause for d in verdict.duplicates] == ["sigkill runner (mid-task)"] * 4


async def test_sigstop_past_the_lease_then_sigcont_writes_nothing(chaos: Chaos) -> None:
    # A slow check interval, so the supervisor does not kill the paused worker: it comes back
    # after its lease has passed on, finishes, and sends a late ack.
    paused = chaos.runner("--workers", "1", "--check-interval", "120", "--lease", "1000")
    (pid,) = await paused.started(1)
    await chaos.enqueue(tasks.work, 1, sleep=3.0)
    await started(chaos, 1)
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.time()
    async with chaos.engine.begin() as conn:  # the lease runs out, by the database clock
        await conn.execute(text("UPDATE sqlatasks_tasks SET locked_until = now() - interval '1s'"))
    chaos.runner("--workers", "1")
    await started(chaos, 2)
    async with chaos.engine.connect() as conn:
        taker = (
            await conn.execute(text("SELECT lease_token, locked_by FROM sqlatasks_tasks"))
        ).one()
    assert str(pid) not in taker.locked_by
    os.kill(pid, signal.SIGCONT)
    chaos.faults.record("sigstop past lease", [pid], at=stopped_at, until=time.time())
    # The late ack names the old token: it changes no row (the runner logs the 0-row write).
    await paused.wait_for_log("1 of 1 outcomes matched no lease", timeout=30)
    async with chaos.engine.connect() as conn:
        still = (
            await conn.execute(text("SELECT lease_token, locked_by FROM sqlatasks_tasks"))
        ).one()
    assert tuple(still) == tuple(taker)
    verdict = await chaos.settled(timeout=30)
    verdict.assert_ok()
    assert [d.cause for d in verdict.duplicates] == ["sigstop past lease (mid-task)"]
    assert sorted(r.pid == pid for r in read_executions(chaos.folder)) == [False, True]


async def test_a_task_blocking_the_event_loop_gets_its_worker_killed(chaos: Chaos) -> None:
    runner = chaos.runner("--workers", "1", "--check-interval", "0.5")
    await runner.started(1)
    (key,) = await chaos.enqueue(tasks.blocks_the_loop, 1, park=True)  # timeout 1, 2 attempts
    await chaos.enqueue(tasks.work, 3)
    for attempt in (1, 2):
        runs = await _runs_of(chaos, key, attempt)
        await runner.wait_for_log("worker-0 is hung", count=attempt, timeout=60)
        died = await wait_dead(runs[-1].pid)
        chaos.faults.record("worker killed as hung", [runs[-1].pid], at=died)
    verdict = await chaos.settled(timeout=60)
    verdict.assert_ok()
    assert (await invariants.read_rows(chaos.engine))[0].attempts == 2
    async with chaos.engine.connect() as conn:
        error = (await conn.execute(text("SELECT last_error FROM sqlatasks_tasks"))).scalar_one()
    assert error.startswith("WorkerLost")


async def test_a_task_swallowing_or_ignoring_its_cancellation(chaos: Chaos) -> None:
    runner = chaos.runner("--workers", "1", "--concurrency", "3", "--check-interval", "0.5")
    (first_pid,) = await runner.started(1)
    swallow = await chaos.enqueue(tasks.swallows_cancellation, 1, park=True)  # 0.5 s, 2 tries
    (stubborn,) = await chaos.enqueue(tasks.ignores_cancellation, 1, park=True)  # 0.5 s, 1 try
    await chaos.enqueue(tasks.work, 3, sleep=0.2)
    (run,) = await _runs_of(chaos, stubborn, 1)
    await runner.wait_for_log("ignores its cancellation past its time limit", timeout=60)
    await runner.wait_for_log("worker-0 is hung", timeout=60)
    chaos.faults.record("worker killed as hung", [run.pid], at=await wait_dead(run.pid))
    assert (await runner.started(2))[1] != first_pid
    verdict = await chaos.settled(timeout=60)
    verdict.assert_ok()
    rows = {r.key: r for r in await invariants.read_rows(chaos.engine)}
    assert rows[stubborn].attempts == 1  # parked at its max_attempts, never run twice
    assert rows[swallow[0]].attempts == 2
    assert not alive(run.pid)


async def _runs_of(chaos: Chaos, key: int, count: int) -> list[invariants.Execution]:
    return await eventually(
        lambda: [r for r in read_executions(chaos.folder) if r.key == key],
        lambda runs: len(runs) >= count,
        what=f"{count} executions of key {key}",
    )


async def count(chaos: Chaos, where: str) -> int:
    async with chaos.engine.connect() as conn:
        found = await conn.execute(text(f"SELECT count(*) FROM sqlatasks_tasks WHERE {where}"))
        return int(found.scalar_one())
