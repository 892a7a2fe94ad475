"""The server itself: a real restart (fast and immediate) of a cluster this test owns, a
transaction snapshot held open during churn, and lease expiry by the database clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from sqlalchemy import text

from tests.chaos import tasks
from tests.chaos.cluster import Cluster, own_cluster
from tests.chaos.harness import Chaos
from tests.chaos.invariants import read_executions
from tests.eventually import eventually
from tests.processes import Runners

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with own_cluster() as owned:
        yield owned


@pytest.fixture
async def on_cluster(cluster: Cluster, start_runner: Runners) -> AsyncIterator[Chaos]:
    run = Chaos(cluster.url, start_runner)
    yield run
    await run.close()


async def restart_during_a_run(cluster: Cluster, chaos: Chaos, mode: str) -> None:
    # A short --task-timeout, so a short lease: a crash (-m immediate) may forget the last
    # acks (the runner writes them with synchronous_commit off), and those tasks then run again
    # once their leases expire.
    runner = chaos.runner(
        "--workers", "2", "--concurrency", "4", "--idle-sleep", "0.5", "--task-timeout", "5"
    )
    await runner.started(2)
    await chaos.enqueue(tasks.work, 400, sleep=0.02)
    await eventually(
        lambda: read_executions(chaos.folder),
        lambda runs: len(runs) >= 100,
        what="100 executions before the restart",
    )
    began = time.time()
    await anyio.to_thread.run_sync(cluster.restart, mode)
    chaos.faults.record(f"postgres restart -m {mode}", at=began, until=time.time())
    await chaos.engine.dispose()  # the test's own pooled connections died too
    await chaos.enqueue(tasks.work, 100, sleep=0.02)
    verdict = await chaos.settled(timeout=120)
    verdict.assert_ok()
    assert verdict.completed == 500
    assert runner.process.poll() is None  # the runner rode it out
    assert "Traceback" not in runner.log()


async def test_postgres_restart_fast(cluster: Cluster, on_cluster: Chaos) -> None:
    await restart_during_a_run(cluster, on_cluster, "fast")


async def test_postgres_restart_immediate(cluster: Cluster, on_cluster: Chaos) -> None:
    await restart_during_a_run(cluster, on_cluster, "immediate")


async def test_a_long_held_snapshot_during_churn(chaos: Chaos) -> None:
    runner = chaos.runner("--workers", "2", "--concurrency", "4", "--idle-sleep", "0.5")
    await runner.started(2)
    async with chaos.engine.connect() as held:
        # REPEATABLE READ, kept open: vacuum cannot remove what this snapshot might still see.
        await held.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        before = (await held.execute(text("SELECT count(*) FROM sqlatasks_tasks"))).scalar_one()
        for _ in range(10):
            await chaos.enqueue(tasks.work, 100)
            await chaos.enqueue(tasks.fails_once, 10)
            await anyio.sleep(0.2)
        verdict = await chaos.settled(timeout=120)
        # Still the same snapshot: it sees none of the churn.
        after = (await held.execute(text("SELECT count(*) FROM sqlatasks_tasks"))).scalar_one()
        assert (before, after) == (0, 0)
        await held.rollback()
    verdict.assert_ok()
    assert verdict.completed == 1100
    assert verdict.retries == 100


async def test_lease_expiry_follows_the_database_clock(chaos: Chaos) -> None:
    keys = chaos.next_keys(4)
    # Rows as a crashed worker leaves them: claimed, by nobody alive. Two leases run one hour
    # more by the database clock, two ran out one second ago; the test process's clock is
    # never consulted.
    await chaos.enqueue_keys(tasks.work, keys)
    async with chaos.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE sqlatasks_tasks SET attempts = 1, locked_by = 'gone',"
                " locked_until = now() + CASE WHEN (payload->>'key')::int IN (:a, :b)"
                " THEN interval '1 hour' ELSE interval '-1 second' END"
            ),
            {"a": keys[0], "b": keys[1]},
        )
    runner = chaos.runner("--workers", "1", "--concurrency", "4", "--idle-sleep", "0.2")
    await runner.started(1)
    await eventually(
        lambda: read_executions(chaos.folder),
        lambda runs: len(runs) >= 2,
        what="the two tasks whose leases ran out to run",
        timeout=30,
    )
    await anyio.sleep(1.5)  # several more polls: the valid leases keep the worker off
    assert {r.key for r in read_executions(chaos.folder)} == set(keys[2:])
    async with chaos.engine.begin() as conn:  # an hour passes, for the database
        await conn.execute(text("UPDATE sqlatasks_tasks SET locked_until = now() - interval '1s'"))
    chaos.faults.record("lease back-dated")  # not a duplicate cause: attempt 1 never ran here
    verdict = await chaos.settled(timeout=30)
    verdict.assert_ok()
    assert sorted(r.attempt for r in read_executions(chaos.folder)) == [2, 2, 2, 2]
