"""Short leases, renewed while a task runs: a dead runner's task waits about one lease for
another runner (not the longest timeout of any task), and a live one keeps its task however
long it runs. Real runners against a real PostgreSQL; see docs/reliability.md."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqlatasks import attempts, enqueue
from sqlatasks.sql import claim
from tests.lease_tasks import hangs_first_time, sleeps
from tests.ledger import entries, wait_for_entries
from tests.once_tasks import EFFECTS_DDL, Effect, write_effect
from tests.processes import Runner, Runners, now, wait_for_tasks
from tests.runner_tasks import Job

LEASE = 15.0
"""Seconds; the shortest lease a 0.5 s check interval allows is 14.25."""
FAST = ("--check-interval", "0.5", "--lease", str(LEASE), "--idle-sleep", "0.5")
IMPORTS = ["tests.lease_tasks"]
SLACK = 45.0
"""Seconds on top of the lease before a test calls a wait hung (a loaded 2-core machine)."""


async def _enqueue(engine: AsyncEngine, *objects: object) -> None:
    async with AsyncSession(engine) as session, session.begin():
        session.add_all(objects)


Start = Callable[..., Runner]


@pytest.fixture
def start(start_runner: Runners) -> Start:
    """Starts a runner of tests.lease_tasks with a short lease and quick checks."""

    def starter(*args: str) -> Runner:
        return start_runner(*FAST, *args, imports=IMPORTS)

    return starter


async def test_one_renewal_tells_renewed_busy_and_gone_apart(engine: AsyncEngine) -> None:
    # Three tasks of one claim (one token): one locked by another transaction, one taken over
    # by another claim, one renewed. By id: the tasks of one claim share its token.
    await _enqueue(engine, *(enqueue(sleeps, Job(key=k)) for k in (1, 2, 3)))
    async with engine.connect() as conn:
        claimed = await claim.task_claim(
            conn, queues=(), limit=3, lease_seconds=5, worker_id="w", token=uuid.uuid4()
        )
        await conn.execute(
            text("UPDATE sqlatasks_tasks SET lease_token = gen_random_uuid() WHERE id = :id"),
            {"id": claimed[2].id},
        )
        await conn.commit()
    held = [(task.id, task.lease_token) for task in claimed]
    async with engine.connect() as locker, locker.begin():
        lock = text("SELECT 1 FROM sqlatasks_tasks WHERE id = :id FOR UPDATE")
        await locker.execute(lock, {"id": claimed[0].id})
        async with engine.connect() as conn:
            with anyio.fail_after(10):  # SKIP LOCKED: no wait for the locker
                renewed, busy = await claim.task_renew(conn, held, 600)
            await conn.commit()
    assert (renewed, busy) == ({claimed[1].id}, {claimed[0].id})
    async with engine.connect() as conn:
        query = "SELECT id FROM sqlatasks_tasks WHERE locked_until > now() + interval '60 s'"
        assert (await conn.execute(text(query))).scalars().all() == [claimed[1].id]


@pytest.mark.slow
async def test_a_killed_runners_task_is_taken_over_within_the_lease(
    engine: AsyncEngine, tmp_path: Path, start: Start
) -> None:
    # The module has a task with timeout=3600: the lease does not depend on it.
    doomed: Runner = start("--workers", "1")
    await doomed.started(1)
    await _enqueue(engine, enqueue(hangs_first_time, Job(key=1)))
    await wait_for_entries(tmp_path, "start", 1)
    doomed.kill()  # supervisor and workers: nothing is left to release the task
    killed_at = now()
    heir: Runner = start("--workers", "1")
    await heir.started(1)
    # No back-dating: the lease runs out by itself, at most LEASE after its last renewal.
    (end,) = await wait_for_entries(tmp_path, "end", 1, timeout=LEASE + SLACK)
    assert end.at - killed_at < LEASE + SLACK
    assert [e.event for e in entries(tmp_path)] == ["start", "start", "end"]
    await wait_for_tasks(engine, exactly=0)


@pytest.mark.slow
async def test_a_task_running_several_leases_is_never_taken_over(
    engine: AsyncEngine, tmp_path: Path, start: Start
) -> None:
    first: Runner = start("--workers", "1")
    await first.started(1)
    await _enqueue(engine, enqueue(sleeps, Job(key=1, sleep=2.5 * LEASE)))
    await wait_for_entries(tmp_path, "start", 1)
    other: Runner = start("--workers", "2")
    await other.started(2)  # polls every 0.5 s: it would take the task once its lease ran out
    await wait_for_entries(tmp_path, "end", 1, timeout=2.5 * LEASE + SLACK)
    await wait_for_tasks(engine, exactly=0)
    assert [e.event for e in entries(tmp_path)] == ["start", "end"]  # one execution
    for runner in (first, other):
        assert "lost its lease" not in runner.log()
        assert "could not renew" not in runner.log()


@pytest.mark.slow
async def test_a_renewal_that_finds_the_lease_taken_cancels_the_task_and_writes_nothing(
    engine: AsyncEngine, tmp_path: Path, start: Start
) -> None:
    runner: Runner = start("--workers", "1")
    await runner.started(1)
    await _enqueue(engine, enqueue(sleeps, Job(key=1, sleep=600)))
    await wait_for_entries(tmp_path, "start", 1)
    # Another claim takes the task over (as after an expiry): a new token, a long lease.
    thief = (
        "UPDATE sqlatasks_tasks SET lease_token = gen_random_uuid(), locked_by = 'thief', "
        "locked_until = now() + interval '1 hour'"
    )
    async with engine.begin() as conn:
        await conn.execute(text(thief))
        token = (await conn.execute(text("SELECT lease_token FROM sqlatasks_tasks"))).scalar_one()
    # The next renewal (every LEASE / 4) finds the token gone: the execution is cancelled.
    await runner.wait_for_log(
        r"task \d+ \S+ attempt 1 lost its lease \(taken over by another claim\)",
        timeout=LEASE + SLACK,
    )
    async with engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT lease_token, locked_by, attempts FROM sqlatasks_tasks"))
        ).one()
    assert tuple(row) == (token, "thief", 1)  # the old holder wrote nothing about it
    assert [e.event for e in entries(tmp_path)] == ["start"]  # cancelled, never ended


@pytest.mark.slow
async def test_a_row_locked_by_another_transaction_holds_up_no_other_renewal(
    engine: AsyncEngine, tmp_path: Path, start: Start
) -> None:
    # A session task's transaction holds its row from its DELETE to its COMMIT; an operator's
    # statement holds a row briefly. Here the test holds task 1's row for longer than the
    # lease is trusted, while task 2 of the same worker needs its lease renewed meanwhile.
    runner = start("--workers", "1")
    await runner.started(1)
    await _enqueue(
        engine,
        enqueue(sleeps, Job(key=1, sleep=2 * LEASE)),
        enqueue(sleeps, Job(key=2, sleep=2 * LEASE)),
    )
    await wait_for_entries(tmp_path, "start", 2)
    async with engine.connect() as conn, conn.begin():
        locked = "SELECT id FROM sqlatasks_tasks WHERE payload->>'key' = '1' FOR UPDATE"
        await conn.execute(text(locked))
        # Task 1's lease cannot be renewed meanwhile: it is cut off (its row stays as it is,
        # claimed again once the lease runs out). Task 2's renewals go on.
        await runner.wait_for_log(
            r"attempt 1 lost its lease \(not renewed in time\)", timeout=SLACK
        )
        await anyio.sleep(attempts.renewal_period(LEASE) + 1)  # a renewal skips the row again
    # Task 2 ran once, start to end, never cut off. A renewal that waited for the lock would
    # have stopped renewing task 2 too, and cut it off (`attempts.lease_trust`).
    await wait_for_entries(tmp_path, "end", 2, timeout=4 * LEASE + SLACK)
    await wait_for_tasks(engine, exactly=0)
    second = [e.event for e in entries(tmp_path) if e.key == 2]
    assert second == ["start", "end"]
    assert len(re.findall("lost its lease", runner.log())) == 1  # task 1's, once
    assert "could not renew" not in runner.log()


@pytest.mark.slow
async def test_a_session_task_commits_though_its_row_was_renewed_during_its_transaction(
    engine: AsyncEngine, start_runner: Runners
) -> None:
    # Its transaction is open (its write done) while the renewal, on another connection,
    # updates its row twice; its DELETE by token then still finds the row, and commits. No
    # lock wait either way: the task's transaction locks its row only at its DELETE, and the
    # renewal skips a locked row (the test above).
    async with engine.begin() as conn:
        await conn.execute(text(EFFECTS_DDL))
    runner = start_runner(*FAST, "--workers", "1", imports=["tests.once_tasks"])
    await runner.started(1)
    await _enqueue(engine, enqueue(write_effect, Effect(key=1, after=LEASE / 2 + 1)))
    await wait_for_tasks(engine, exactly=0, timeout=LEASE + SLACK)
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT task_key, attempt FROM effects"))).all()
    assert [tuple(row) for row in rows] == [(1, 1)]  # committed once, by the first attempt
    log = runner.log()
    assert "lost its lease" not in log
    assert "could not renew" not in log
