"""The throughput rollup from a real runner (docs/dashboard.md#throughput): two workers run
tasks that complete, retry and park; while the runner still runs, their periodic flushes
(`--throughput-interval`) add up to exactly what happened, each worker on rows of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from sqlatasks import enqueue_many
from tests import ledger, runner_tasks
from tests.eventually import eventually
from tests.processes import Runners

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def totals(engine: AsyncEngine) -> tuple[int, int, int, int]:
    """completed, failed (parked), retried, and the number of workers that wrote rows."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT coalesce(sum(completed), 0), coalesce(sum(failed), 0), "
                    "coalesce(sum(retried), 0), count(DISTINCT worker) "
                    "FROM sqlatasks_throughput WHERE queue = 'default'"
                )
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


async def test_the_workers_flushes_count_every_end(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    job = runner_tasks.Job
    async with async_sessionmaker(engine)() as session, session.begin():
        await enqueue_many(session, runner_tasks.record, [job(key=k) for k in range(20)])
        # max_attempts=3: two retries, then parked
        await enqueue_many(session, runner_tasks.always_fail, [job(key=k) for k in (20, 21)])
        # fails its first attempt (one retry), then completes
        await enqueue_many(session, runner_tasks.fail_once, [job(key=k) for k in (22, 23, 24)])
    runner = start_runner("--workers", "2", "--concurrency", "4", "--throughput-interval", "0.2")
    await runner.started(2)
    await ledger.wait_for_entries(tmp_path, "end", 23, timeout=60)
    expected = (23, 2, 2 * 2 + 3)
    found = await eventually(
        lambda: totals(engine), lambda t: t[:3] == expected, what="the flushed counts"
    )
    assert 1 <= found[3] <= 2  # each worker its own rows (one may have claimed everything)
    assert runner.process.poll() is None  # the periodic flush, not the one at shutdown
