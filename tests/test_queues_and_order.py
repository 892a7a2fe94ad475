"""Priorities, FIFO, scheduled tasks, named queues with per-worker caps, and the claim's plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sqlatasks import ConfigurationError, enqueue
from sqlatasks.settings import Settings
from sqlatasks.sql import claim
from tests import ledger, runner_tasks
from tests.processes import Runners

URL = "postgresql+asyncpg://u@localhost/app"


def job(key: int, sleep: float = 0.0) -> runner_tasks.Job:
    return runner_tasks.Job(key=key, sleep=sleep)


@pytest.mark.slow
async def test_higher_priority_first_then_first_in_first_out(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        for key, priority in enumerate([0, 5, 0, -1, 5, 0]):
            session.add(enqueue(runner_tasks.record, job(key), priority=priority))
            await session.flush()  # one insert at a time: distinct ids in enqueue order
    runner = start_runner("--workers", "1", "--concurrency", "1", "--burst")
    assert await runner.wait_exit(60) == 0
    order = ledger.keys(ledger.entries(tmp_path, "start"))
    assert order == [1, 4, 0, 2, 5, 3]


@pytest.mark.slow
async def test_a_scheduled_task_waits_for_its_time_then_starts_within_the_idle_sleep(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", "--no-notify", "--idle-sleep", "0.5")
    await runner.started(1)
    async with async_sessionmaker(engine)() as session, session.begin():
        row = enqueue(runner_tasks.record, job(1), delay=2)
        session.add(row)
        await session.flush()
        await session.refresh(row)
        due = row.scheduled_at.timestamp()
    (start,) = await ledger.wait_for_entries(tmp_path, "start", 1, timeout=30)
    assert start.at >= due
    assert start.at - due < 0.5 + 1.0  # the idle sleep, plus generous slack


@pytest.mark.slow
async def test_a_queue_cap_limits_that_queue_per_worker(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner(
        "--workers", "1", "--concurrency", "6", "--queue", "mail=2", "--queue", "default"
    )
    await runner.started(1)
    async with async_sessionmaker(engine)() as session, session.begin():
        for key in range(10):
            session.add(enqueue(runner_tasks.record, job(key, 0.4), queue="mail"))
            session.add(enqueue(runner_tasks.record, job(100 + key, 0.4)))
    await ledger.wait_for_entries(tmp_path, "end", 20, timeout=60)
    entries = ledger.entries(tmp_path)
    assert ledger.peak_concurrency([e for e in entries if e.key is not None and e.key < 100]) == 2
    assert ledger.peak_concurrency(entries) == 6


def test_queue_specs_are_validated() -> None:
    settings = Settings.load(database_url=URL, queues="mail=2, default, reports=10")
    assert settings.queue_names == ("mail", "default", "reports")
    assert settings.queue_caps == {"mail": 2, "reports": 10}
    for bad in ("mail=0", "mail=x", "=3"):
        with pytest.raises(ConfigurationError, match="NAME or NAME=LIMIT"):
            Settings.load(database_url=URL, queues=bad)


async def test_the_claim_is_one_ordered_index_scan_whatever_the_queues(
    session: AsyncSession,
) -> None:
    for queues in [(), ("mail",), ("a", "b", "c", "d", "e")]:
        plan = await claim.task_claim_plan(await session.connection(), queues=queues)
        assert "Index Scan using sqlatasks_tasks_claim_idx" in plan, plan
        assert plan.count("Index Scan") == 2, plan  # the claim index, and the pkey join
        assert "Sort" not in plan, plan
        assert "Seq Scan" not in plan, plan
