"""A runner whose database connections are cut (pg_terminate_backend) keeps every task moving."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from sqlatasks import enqueue_many
from tests import runner_tasks
from tests.processes import Runner, now, wait_for_entries, wait_for_tasks

pytestmark = pytest.mark.slow


@pytest.fixture
def runners(db_url: str, tmp_path: Path) -> Iterator[list[Runner]]:
    started: list[Runner] = []
    yield started
    for runner in started:
        runner.kill()


async def terminate(engine: AsyncEngine, role: str) -> int:
    """Cut every runner connection whose application_name starts with `sqlatasks <role>`."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name LIKE :pattern"
            ),
            {"pattern": f"sqlatasks {role}%"},
        )
        return int(result.scalar_one())


async def put(engine: AsyncEngine, payloads: list[Any]) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        await enqueue_many(session, runner_tasks.record, payloads)


async def test_the_listener_reconnects_and_wakes_workers_again(
    db_url: str, engine: AsyncEngine, tmp_path: Path, runners: list[Runner]
) -> None:
    # A long idle sleep: a quick pickup after the cut can only come from a renewed LISTEN.
    runner = Runner(db_url, tmp_path, "--workers", "1", "--idle-sleep", "120")
    runners.append(runner)
    await runner.started(1)
    with anyio.fail_after(30):
        while await terminate(engine, "listener") == 0:
            await anyio.sleep(0.1)
    await runner.wait_for_log("LISTEN connection lost")
    with anyio.fail_after(30):  # reconnected: a new listener session exists
        while not await _sessions(engine, "listener"):
            await anyio.sleep(0.1)
    await anyio.sleep(0.5)
    enqueued = now()
    await put(engine, [runner_tasks.Job(key=1)])
    (start,) = await wait_for_entries(tmp_path, "start", 1, timeout=60)
    assert start.at - enqueued < 10  # far below the idle sleep


async def test_cut_claim_and_completer_connections_lose_no_task(
    db_url: str, engine: AsyncEngine, tmp_path: Path, runners: list[Runner]
) -> None:
    runner = Runner(db_url, tmp_path, "--workers", "1", "--concurrency", "5", "--idle-sleep", "0.2")
    runners.append(runner)
    await runner.started(1)
    await put(engine, [runner_tasks.Job(key=i, sleep=0.05) for i in range(300)])
    for _ in range(3):
        await wait_for_entries(tmp_path, "end", 20)
        assert await terminate(engine, "claim") + await terminate(engine, "completer") >= 1
        await anyio.sleep(0.3)
    ends = await wait_for_entries(tmp_path, "end", 300, timeout=120)
    assert set(Counter(e.key for e in ends)) == set(range(300))  # each ran, at least once
    # Acks that were cut off are retried; leases never linger.
    await wait_for_tasks(engine, exactly=0, timeout=120)
    log = runner.log()
    assert "Traceback" not in log
    assert "worker-0 died" not in log


async def _sessions(engine: AsyncEngine, role: str) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE :p"),
            {"p": f"sqlatasks {role}%"},
        )
        return int(found.scalar_one())
