"""Session tasks: the task's writes and the deletion of its row commit together, or neither does.

Each execution of `once_tasks.write_effect` inserts one row into `effects` through its session;
a task's effect must appear exactly once however its executions end (failure, timeout, a lost
lease, an operator's cancel, SIGKILL of its worker or of the whole runner).
"""

from __future__ import annotations

import os
import random
import re
import signal
from collections import Counter
from pathlib import Path

import anyio
import pytest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from sqlatasks import TaskDefinitionError, enqueue, enqueue_many, operations, task
from sqlatasks.testing import Committed, Failed, LeaseLost, run_pending
from tests import ledger
from tests.conftest import count_tasks
from tests.once_tasks import EFFECTS_DDL, Effect, write_effect
from tests.processes import Runner, Runners, alive, wait_for_tasks

ONCE = ["tests.once_tasks"]


async def effects(conn: AsyncConnection | AsyncSession) -> list[tuple[int, int]]:
    """(task_key, attempt) of every effect row, sorted."""
    rows = await conn.execute(text("SELECT task_key, attempt FROM effects ORDER BY 1, 2"))
    return [(row.task_key, row.attempt) for row in rows]


# --- @task with a session ------------------------------------------------------------------


class Note(BaseModel):
    text: str


async def takes_a_session(data: Note, session: AsyncSession) -> None:
    return None


async def test_a_second_parameter_must_be_an_async_session() -> None:
    async def takes_a_number(data: Note, count: int) -> None:
        return None

    async def takes_a_string_session(data: Note, session: str) -> None:
        return None

    for wrong in (takes_a_number, takes_a_string_session):
        with pytest.raises(TaskDefinitionError, match="second parameter must be annotated"):
            task(name=f"once.{wrong.__name__}")(wrong)  # type: ignore[arg-type]

    async def takes_three(data: Note, session: AsyncSession, more: int) -> None:
        return None

    with pytest.raises(TaskDefinitionError, match="optionally a second one annotated"):
        task(name="once.takes_three")(takes_three)  # type: ignore[arg-type]


async def test_a_session_task_called_directly_needs_the_callers_session(
    session: AsyncSession,
) -> None:
    assert write_effect.wants_session
    with pytest.raises(TypeError, match="call it as `await task\\(payload, session\\)`"):
        await write_effect(Effect(key=1))
    registered = task(name="once.takes_a_session")(takes_a_session)
    assert registered.wants_session
    assert await registered(Note(text="hi"), session) is None


# --- sqlatasks.testing: in a SAVEPOINT of the test's transaction ----------------------------


async def test_run_pending_commits_each_effect_with_its_task(session: AsyncSession) -> None:
    await session.execute(text(EFFECTS_DDL))
    session.add_all([enqueue(write_effect, Effect(key=k)) for k in range(3)])
    outcomes = await run_pending(session)
    assert [type(o) for o in outcomes] == [Committed] * 3
    assert await effects(session) == [(0, 1), (1, 1), (2, 1)]
    assert (await session.execute(text("SELECT count(*) FROM sqlatasks_tasks"))).scalar() == 0


async def test_run_pending_rolls_back_a_failed_attempts_effect(session: AsyncSession) -> None:
    await session.execute(text(EFFECTS_DDL))
    session.add(enqueue(write_effect, Effect(key=7, fail_first=True)))
    outcomes = await run_pending(session, retry_delay=0)
    assert [type(o) for o in outcomes] == [Failed, Committed]  # retried in the next round
    assert await effects(session) == [(7, 2)]  # the first attempt's write is gone


async def test_run_pending_rolls_back_an_attempt_past_its_time(session: AsyncSession) -> None:
    await session.execute(text(EFFECTS_DDL))
    session.add(enqueue(write_effect, Effect(key=1, after=30)))
    (outcome,) = await run_pending(session, task_timeout=0.3, max_rounds=1)
    assert isinstance(outcome, Failed)
    assert outcome.error.startswith("TimeoutError")
    assert await effects(session) == []


async def test_run_pending_rolls_back_when_the_lease_passed_on(session: AsyncSession) -> None:
    await session.execute(text(EFFECTS_DDL))
    session.add(enqueue(write_effect, Effect(key=1, steal_lease=True)))
    (outcome,) = await run_pending(session)
    assert isinstance(outcome, LeaseLost)
    assert await effects(session) == []
    assert (await session.execute(text("SELECT count(*) FROM sqlatasks_tasks"))).scalar() == 1


# --- the real runner --------------------------------------------------------------------------


@pytest.fixture
async def effects_engine(engine: AsyncEngine) -> AsyncEngine:
    async with engine.begin() as conn:
        await conn.execute(text(EFFECTS_DDL))
    return engine


async def put(engine: AsyncEngine, payloads: list[Effect]) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        await enqueue_many(session, write_effect, payloads)


async def effect_rows(engine: AsyncEngine) -> list[tuple[int, int]]:
    async with engine.connect() as conn:
        return await effects(conn)


@pytest.mark.slow
async def test_runner_commits_each_effect_once(
    effects_engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(effects_engine, [Effect(key=k) for k in range(40)])
    runner = start_runner("--workers", "2", "--concurrency", "4", "--burst", imports=ONCE)
    assert await runner.wait_exit(60) == 0
    assert await effect_rows(effects_engine) == [(k, 1) for k in range(40)]
    assert await count_tasks(effects_engine) == 0
    log = runner.log()
    assert "matched no lease" not in log  # nothing was left for the completer to ack
    assert "Traceback" not in log


@pytest.mark.slow
async def test_runner_rolls_back_a_failed_attempt_and_the_retry_writes_once(
    effects_engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(effects_engine, [Effect(key=k, fail_first=True) for k in range(10)])
    runner = start_runner("--workers", "2", "--concurrency", "4", imports=ONCE)
    await wait_for_tasks(effects_engine, exactly=0, timeout=60)
    # Each first attempt wrote, called session.commit() and raised: none of it remains.
    assert await effect_rows(effects_engine) == [(k, 2) for k in range(10)]
    assert len(re.findall(r"attempt 1 failed: RuntimeError", runner.log())) == 10


@pytest.mark.slow
async def test_a_lost_lease_rolls_the_effect_back(
    effects_engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(effects_engine, [Effect(key=1, wait_for="go")])
    runner = start_runner(
        "--workers", "1", "--task-timeout", "30", "--idle-sleep", "0.2", imports=ONCE
    )
    await ledger.wait_for_entries(tmp_path, "wrote", 1)
    # Another claim takes the task over while the first execution holds its write uncommitted
    # (as when a lease has run out): a new token, as the claim statement writes.
    async with effects_engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE sqlatasks_tasks SET lease_token = gen_random_uuid(), "
                "locked_by = 'thief', locked_until = now() + interval '1 hour'"
            )
        )
    ledger.open_gate(tmp_path, "go")
    await runner.wait_for_log(r"attempt 1 lost its lease before it could commit")
    assert await effect_rows(effects_engine) == []
    assert await count_tasks(effects_engine, "locked_by = 'thief'") == 1
    # The thief gives the task back; the runner's next claim runs it, and it commits once.
    async with effects_engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE sqlatasks_tasks "
                "SET lease_token = NULL, locked_by = NULL, locked_until = NULL"
            )
        )
    await wait_for_tasks(effects_engine, exactly=0, timeout=30)
    assert await effect_rows(effects_engine) == [(1, 2)]
    assert "Traceback" not in runner.log()


@pytest.mark.slow
async def test_an_operators_cancel_rolls_the_effect_back(
    effects_engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(effects_engine, [Effect(key=1, wait_for="never")])
    runner = start_runner("--workers", "1", "--task-timeout", "30", imports=ONCE)
    await ledger.wait_for_entries(tmp_path, "wrote", 1)
    async with async_sessionmaker(effects_engine)() as session, session.begin():
        task_id = (await session.execute(text("SELECT id FROM sqlatasks_tasks"))).scalar_one()
        assert await operations.cancel(session, task_id) == "cancelling"
    await runner.wait_for_log("cancelled while running")
    await wait_for_tasks(effects_engine, exactly=0, timeout=10)
    assert await effect_rows(effects_engine) == []


def live_workers(runner: Runner) -> list[int]:
    """Pids of the runner's current workers (the last started in each slot), still alive."""
    latest: dict[str, int] = {}
    for slot, pid in re.findall(r"worker-(\d+)\[(\d+)\] sqlatasks\.worker: started", runner.log()):
        latest[slot] = int(pid)
    return [pid for pid in latest.values() if alive(pid)]


async def wait_for_leases(engine: AsyncEngine, where: str) -> None:
    await wait_for_tasks(engine, at_least=1, where=f"locked_until > now() AND {where}", timeout=60)


@pytest.mark.slow
async def test_sigkill_at_random_points_leaves_each_effect_exactly_once(
    effects_engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    rng = random.Random(20240605)
    enqueued = 0

    async def top_up(backlog: int = 60) -> None:
        """Keep work queued, so that every kill lands on a worker that is running tasks."""
        nonlocal enqueued
        missing = backlog - await count_tasks(effects_engine)
        if missing > 0:
            keys = range(enqueued, enqueued + missing)
            await put(
                effects_engine,
                [
                    Effect(key=k, before=rng.uniform(0, 0.2), after=rng.uniform(0, 0.2))
                    for k in keys
                ],
            )
            enqueued += missing

    flags = (
        "--workers", "2", "--concurrency", "4", "--check-interval", "0.5",
        "--task-timeout", "2", "--retry-delay", "0", "--idle-sleep", "0.2",
    )  # fmt: skip
    await top_up()
    runner = start_runner(*flags, imports=ONCE)
    kills_here = 0  # workers killed under the current runner: each is replaced
    # Three workers killed, then the whole runner (no supervisor is left to fail its tasks:
    # their leases must run out), then three workers of its successor. Each kill comes a random
    # moment after its target is seen running tasks: before, during or after their writes.
    for step in ["worker"] * 3 + ["runner"] + ["worker"] * 3:
        await runner.started(2 + kills_here, timeout=60)
        await top_up()
        if step == "runner":
            await wait_for_leases(effects_engine, "true")
            await anyio.sleep(rng.uniform(0, 0.25))
            runner.kill()
            runner = start_runner(*flags, imports=ONCE)
            kills_here = 0
            continue
        pid = rng.choice(sorted(live_workers(runner)))
        await wait_for_leases(effects_engine, f"locked_by LIKE '%:{pid}:%'")
        await anyio.sleep(rng.uniform(0, 0.25))
        os.kill(pid, signal.SIGKILL)
        kills_here += 1
    await wait_for_tasks(effects_engine, exactly=0, timeout=120)
    rows = await effect_rows(effects_engine)
    assert Counter(key for key, _ in rows) == Counter(range(enqueued))  # each exactly once
    # Evidence that the kills cut executions short: the supervisor failed the tasks a killed
    # worker held, and those (and the dead runner's) ran again; no cut attempt left an effect.
    logs = start_runner.logs()
    assert re.search(r"died holding [1-9]\d* tasks", logs)
    assert any(attempt > 1 for _, attempt in rows)
