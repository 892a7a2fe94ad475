"""docs/scaling.md's recommendation past one database, as sqlatasks supports it today: queues
partitioned across databases, one runner fleet per database. Each fleet runs its own
database's tasks only, and an enqueue is transactional with the writes of its own database."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from sqlatasks import enqueue_many
from tests import ledger
from tests.conftest import clone, count_tasks, drop
from tests.eventually import eventually
from tests.processes import Runners
from tests.runner_tasks import Job, record


@pytest.fixture
def second_url(database_url: str, template_url: str) -> Iterator[str]:
    """A second database of the same schema: the other partition."""
    url = clone(database_url, template_url)
    yield url
    drop(database_url, url)


@pytest.mark.slow
async def test_a_runner_fleet_per_database_runs_each_partition_once(
    db_url: str, second_url: str, start_runner: Runners, tmp_path: Path
) -> None:
    partitions = {db_url: range(0, 30), second_url: range(1000, 1020)}
    engines = {url: create_async_engine(url) for url in partitions}
    try:
        for url, keys in partitions.items():
            async with AsyncSession(engines[url]) as session, session.begin():
                await enqueue_many(session, record, [Job(key=k) for k in keys])
        fleets = {url: start_runner("--workers", "1", database_url=url) for url in partitions}
        entries = await ledger.wait_for_entries(tmp_path, "end", 50, timeout=120)
        assert sorted(e.key or 0 for e in entries) == [*range(0, 30), *range(1000, 1020)]
        for url, keys in partitions.items():
            # "end" is written before the ack: wait for the batch to reach the database.
            await eventually(
                partial(count_tasks, engines[url]), lambda n: n == 0, what="an empty queue"
            )
            # Which fleet ran which key: the ledger's pid is a worker of that fleet's runner.
            log = fleets[url].log()
            pids = {e.pid for e in entries if e.key in keys}
            assert all(f"[{pid}]" in log for pid in pids), (url, pids)
    finally:
        for engine in engines.values():
            await engine.dispose()
