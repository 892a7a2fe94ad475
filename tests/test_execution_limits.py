"""Time limits under the execution slots' long-lived scopes and the worker's deadline watchdog
(issue 17): real runners, a real PostgreSQL. A task past its limit is cancelled and fails
(TimeoutError, due again after its retry delay), however it meets the cancellation, and no
other task — a neighbour, the slot's next task — is touched by it (docs/runner.md)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests import execution_tasks as t
from tests import ledger
from tests.execution_support import (
    MODULE,
    assert_timed_out,
    entry,
    events_of,
    put_in_order,
    row,
    wait_for_row,
    wait_gone,
)
from tests.execution_tasks import Job
from tests.processes import Runners


@pytest.mark.slow
async def test_shorter_limits_started_after_a_longer_one_are_cut_at_their_own(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # The watchdog sleeps until the nearest deadline: the 30 s task's, then the 2 s task's.
    # Each later, shorter one must wake it, and be cut at its own limit, not the earlier one's.
    runner = start_runner("--workers", "1", "--concurrency", "3", imports=[MODULE])
    await runner.started(1)
    (long_id,) = await put_in_order(engine, (t.long_limit, Job(key=1, sleep=6)))
    await ledger.wait_for_entries(tmp_path, "start", 1)
    (medium_id,) = await put_in_order(engine, (t.two_second_limit, Job(key=2, sleep=60)))
    await ledger.wait_for_entries(tmp_path, "start", 2)
    (short_id,) = await put_in_order(engine, (t.half_second_limit, Job(key=3, sleep=60)))

    assert_timed_out(await wait_for_row(engine, short_id, "the 0.5 s task to time out"), "0.5")
    assert_timed_out(await wait_for_row(engine, medium_id, "the 2 s task to time out"), "2")
    assert 0.45 <= entry(tmp_path, "cancelled", 3).fields["after"] < 1.5
    assert 1.95 <= entry(tmp_path, "cancelled", 2).fields["after"] < 3.0
    # The long one was never touched: it ran its 6 s to the end and was deleted.
    await wait_gone(engine, long_id, "the long task to complete")
    assert events_of(tmp_path, 1) == ["start", "end"]
    assert "Traceback" not in runner.log()


@pytest.mark.slow
async def test_one_slot_runs_its_next_task_in_full_after_each_kind_of_timeout(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # --concurrency 1: every task runs in the same slot (one asyncio task, one scope after
    # another). After each timed-out task, in whatever way it met its cancellation, the next
    # task runs to its end, and sees no ContextVar that the timed-out one set.
    runner = start_runner("--workers", "1", "--concurrency", "1", imports=[MODULE])
    await runner.started(1)
    timed_out = [
        (t.half_second_limit, Job(key=1, sleep=60)),
        (t.swallows_and_returns, Job(key=2)),
        (t.swallows_and_awaits, Job(key=3, sleep=30)),
        (t.sets_context_and_times_out, Job(key=4)),
        (t.blocks_then_awaits, Job(key=5, sleep=0.8)),
    ]
    jobs = []
    for fn, job in timed_out:
        jobs += [(fn, job), (t.normal, Job(key=100 + job.key, sleep=0.5))]
    ids = await put_in_order(engine, *jobs)
    await ledger.wait_for_entries(tmp_path, "end", len(timed_out), timeout=90)

    for (fn, job), task_id in zip(jobs, ids, strict=True):
        if fn is t.normal:
            assert events_of(tmp_path, job.key) == ["start", "end"], job
            assert entry(tmp_path, "start", job.key).fields["seen"] is None
            assert entry(tmp_path, "end", job.key).fields["after"] >= 0.45  # slept its 0.5 s
            assert await row(engine, task_id) is None
        else:
            limit = "0.3" if fn in (t.sets_context_and_times_out, t.blocks_then_awaits) else "0.5"
            assert_timed_out(await wait_for_row(engine, task_id, f"{fn.name} to fail"), limit)
    assert runner.log().count("sqlatasks.worker: started") == 1
    assert "Traceback" not in runner.log()


@pytest.mark.slow
async def test_a_task_swallowing_its_timeout_counts_as_timed_out_and_stays_cancelled(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", "--concurrency", "2", imports=[MODULE])
    await runner.started(1)
    returns_id, awaits_id = await put_in_order(
        engine, (t.swallows_and_returns, Job(key=1)), (t.swallows_and_awaits, Job(key=2, sleep=30))
    )
    assert_timed_out(await wait_for_row(engine, returns_id, "the swallower to fail"), "0.5")
    assert_timed_out(await wait_for_row(engine, awaits_id, "the re-awaiter to fail"), "0.5")
    assert 0.45 <= entry(tmp_path, "swallowed", 1).fields["after"] < 1.5
    assert 0.45 <= entry(tmp_path, "swallowed", 2).fields["after"] < 1.5
    # The cancellation persists: the await after the swallowed one ends at once, not in 30 s.
    assert entry(tmp_path, "cancelled again", 2).fields["waited"] < 0.5
    assert "end" not in events_of(tmp_path, 1) + events_of(tmp_path, 2)


@pytest.mark.slow
async def test_a_task_blocking_past_its_limit_is_cut_off_at_its_first_await(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # It holds the loop for 0.8 s (limit 0.3 s), so the watchdog cannot run meanwhile; it must
    # fire as soon as the loop turns, and the task's next await is cancelled at once.
    runner = start_runner("--workers", "1", "--concurrency", "2", imports=[MODULE])
    await runner.started(1)
    blocker_id, neighbour_id = await put_in_order(
        engine, (t.blocks_then_awaits, Job(key=1, sleep=0.8)), (t.normal, Job(key=2, sleep=2))
    )
    assert_timed_out(await wait_for_row(engine, blocker_id, "the blocker to fail"), "0.3")
    assert 0.8 <= entry(tmp_path, "cancelled", 1).fields["after"] < 1.3
    await wait_gone(engine, neighbour_id, "its neighbour to complete")
    assert events_of(tmp_path, 2) == ["start", "end"]


@pytest.mark.slow
async def test_own_cancellations_spare_the_slots_next_tasks_and_deadlines_still_fire(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # --concurrency 1: a task that cancels its own asyncio task (the slot's) and returns, one
    # that swallows such a cancel, one that raises CancelledError, one that leaves the cancel
    # for the event loop's next turn (it lands in the slot's wait); after each, the next task
    # runs in full; a time limit after all of them still fires (and only for its task).
    runner = start_runner("--workers", "1", "--concurrency", "1", imports=[MODULE])
    await runner.started(1)
    jobs = [
        (t.cancels_itself_and_returns, Job(key=1)),
        (t.normal, Job(key=101, sleep=0.5)),
        (t.cancels_itself_and_swallows, Job(key=2)),
        (t.normal, Job(key=102, sleep=0.5)),
        (t.raises_cancelled, Job(key=3)),
        (t.normal, Job(key=103, sleep=0.5)),
        (t.cancels_itself_next_turn_and_returns, Job(key=5)),
        (t.normal, Job(key=105, sleep=0.5)),
        (t.half_second_limit, Job(key=4, sleep=60)),
        (t.normal, Job(key=104, sleep=0.5)),
    ]
    ids = dict(zip([job.key for _, job in jobs], await put_in_order(engine, *jobs), strict=True))
    await ledger.wait_for_entries(tmp_path, "start", len(jobs), timeout=90)
    await wait_gone(engine, ids[104], "the last task to complete")
    for key in (101, 102, 103, 104, 105):
        assert events_of(tmp_path, key) == ["start", "end"], key
        assert await row(engine, ids[key]) is None
    # Returned, all three (a cancel requested and withdrawn is no failure): deleted.
    assert await row(engine, ids[1]) is None
    assert await row(engine, ids[5]) is None
    assert await row(engine, ids[2]) is None
    assert events_of(tmp_path, 2) == ["start", "swallowed", "end"]
    raised = await wait_for_row(engine, ids[3], "the CancelledError to fail its attempt")
    assert str(raised["last_error"]).startswith("CancelledError"), raised
    assert_timed_out(await wait_for_row(engine, ids[4], "the timed-out task"), "0.5")
    assert 0.45 <= entry(tmp_path, "cancelled", 4).fields["after"] < 1.5
    assert runner.log().count("sqlatasks.worker: started") == 1


@pytest.mark.slow
async def test_a_session_task_timing_out_in_its_transaction_is_rolled_back_and_retried(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", "--concurrency", "2", imports=[MODULE])
    await runner.started(1)
    session_id, neighbour_id = await put_in_order(
        engine, (t.session_sleeper, Job(key=1, sleep=60)), (t.normal, Job(key=2, sleep=2))
    )
    assert_timed_out(await wait_for_row(engine, session_id, "the session task to fail"), "0.5")
    assert 0.45 <= entry(tmp_path, "cancelled", 1).fields["after"] < 1.5
    async with engine.connect() as conn:
        orders = (await conn.execute(text("SELECT count(*) FROM demo_orders"))).scalar_one()
    assert orders == 0  # its write went with its transaction
    await wait_gone(engine, neighbour_id, "its neighbour to complete")
    assert events_of(tmp_path, 2) == ["start", "end"]
    assert "Traceback" not in runner.log()


@pytest.mark.slow
async def test_a_session_task_whose_commit_outlasts_its_limit_is_done(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # The task's work returned before its limit, but its finishing DELETE waits on a row lock
    # (held by the test) until after the limit: the COMMIT that then goes through is final
    # (sqlatasks/execution.py): the task is done, its write kept, no failure recorded.
    runner = start_runner("--workers", "1", "--concurrency", "2", imports=[MODULE])
    await runner.started(1)
    (task_id,) = await put_in_order(engine, (t.session_commits_late, Job(key=1)))
    (started,) = await ledger.wait_for_entries(tmp_path, "start", 1)
    async with engine.connect() as conn, conn.begin():
        lock = "SELECT id FROM sqlatasks_tasks WHERE id = :id FOR UPDATE"
        await conn.execute(text(lock), {"id": task_id})
        ledger.open_gate(tmp_path, "finish-1")
        await ledger.wait_for_entries(tmp_path, "end", 1)
        # Past its 1 s limit, within the grace (one 2 s check interval) before a kill.
        await anyio.sleep(max(0.0, started.at + 1.7 - time.time()))
    await wait_gone(engine, task_id, "the session task's commit")
    async with engine.connect() as conn:
        orders = (await conn.execute(text("SELECT count(*) FROM demo_orders"))).scalar_one()
    assert orders == 1
    await anyio.sleep(0.5)  # a failure written late would show in the log
    assert "failed" not in runner.log()
    assert "was killed" not in runner.log()
    assert "hung" not in runner.log()
