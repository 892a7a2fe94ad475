"""The lean hot path keeps every rule (docs/performance.md): a long-lived execution slot
outlives whatever a task did to its own asyncio task, and `--event-loop uvloop` runs the
workers on uvloop. Real runners, a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from sqlatasks import Task, enqueue
from tests import ledger, throughput_tasks
from tests.conftest import count_tasks
from tests.processes import Runners
from tests.throughput_tasks import Job

MODULE = "tests.throughput_tasks"


async def put_in_order(engine: AsyncEngine, jobs: list[tuple[Task[Any], int]]) -> None:
    """One transaction per task: they are claimed in this order (scheduled_at, then id)."""
    for fn, key in jobs:
        async with async_sessionmaker(engine)() as session, session.begin():
            session.add(enqueue(fn, Job(key=key)))


async def drain_one_slot(
    engine: AsyncEngine,
    start_runner: Runners,
    folder: Path,
    jobs: list[tuple[Task[Any], int]],
    *flags: str,
) -> list[int]:
    """Run `jobs` one after another in a single slot (--concurrency 1, --burst): the keys
    that ended. The runner must drain the queue and exit cleanly, its one worker never
    restarted."""
    await put_in_order(engine, jobs)
    runner = start_runner(
        "--workers", "1", "--concurrency", "1", "--burst", *flags, imports=[MODULE]
    )
    assert await runner.wait_exit(120) == 0
    assert runner.log().count("sqlatasks.worker: started") == 1
    assert await count_tasks(engine, "failed_at IS NULL") == 0
    return sorted(e.key for e in ledger.entries(folder, "end") if e.key is not None)


@pytest.mark.slow
async def test_a_slot_outlives_a_task_that_left_a_cancel_request_on_it(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    stray, record = throughput_tasks.cancels_itself_and_returns, throughput_tasks.record
    jobs = [(stray, 1), (record, 2), (stray, 3), (record, 4)]
    assert await drain_one_slot(engine, start_runner, tmp_path, jobs) == [1, 2, 3, 4]
    assert await count_tasks(engine, "failed_at IS NOT NULL") == 0


@pytest.mark.slow
async def test_a_slot_outlives_a_middleware_that_left_a_cancel_request_on_it(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    jobs = [(throughput_tasks.record, key) for key in range(1, 5)]
    middleware = ("--middleware", f"{MODULE}:cancels_after_the_task")
    assert await drain_one_slot(engine, start_runner, tmp_path, jobs, *middleware) == [1, 2, 3, 4]


@pytest.mark.slow
async def test_a_slot_after_a_swallowed_own_cancel_still_enforces_time_limits(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    swallow = throughput_tasks.swallows_its_own_cancel
    late, record = throughput_tasks.sleeps_past_its_timeout, throughput_tasks.record
    jobs = [(swallow, 1), (late, 2), (swallow, 3), (record, 4)]
    assert await drain_one_slot(engine, start_runner, tmp_path, jobs) == [1, 3, 4]
    parked = "failed_at IS NOT NULL AND last_error LIKE 'TimeoutError:%'"
    assert await count_tasks(engine, parked) == 1


async def loop_of_a_task(
    engine: AsyncEngine, start_runner: Runners, folder: Path, *flags: str
) -> str:
    """The module of the event loop a task of a runner started with `flags` runs on."""
    await put_in_order(engine, [(throughput_tasks.loop_kind, 1)])
    runner = start_runner("--workers", "1", "--burst", *flags, imports=[MODULE])
    assert await runner.wait_exit(120) == 0
    [entry] = ledger.entries(folder, "loop")
    return str(entry.fields["module"]).split(".")[0]


@pytest.mark.slow
async def test_event_loop_uvloop_runs_the_workers_on_uvloop(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    assert (
        await loop_of_a_task(engine, start_runner, tmp_path, "--event-loop", "uvloop") == "uvloop"
    )


@pytest.mark.slow
async def test_the_default_event_loop_is_asyncio(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    assert await loop_of_a_task(engine, start_runner, tmp_path) == "asyncio"
