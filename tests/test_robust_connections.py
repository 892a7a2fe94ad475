"""A connection that fails with a connection-level or server-state error is discarded, never
handed out again: after a read-only episode (a failover to a replica, as far as the runner can
tell) the runner claims, writes outcomes and commits session tasks again.

The episode: `ALTER DATABASE … SET default_transaction_read_only = on`, the runner's backends
terminated (they reconnect read-only, as to a replica), then `RESET`. A session keeps the
read-only default it started with, so only a fresh connection writes again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from sqlatasks import Task, enqueue
from tests import ledger, robust_conn_tasks
from tests.conftest import count_tasks
from tests.eventually import eventually
from tests.processes import Runners

pytestmark = pytest.mark.slow
IMPORTS = ["tests.robust_conn_tasks"]
BOUND = 90.0
"""Seconds a task may take to run after the episode: generous, against hangs only."""


@pytest.fixture
async def writer(db_url: str) -> AsyncIterator[AsyncEngine]:
    """Fresh connections that write whatever the database's default: the test's own."""
    engine = create_async_engine(
        db_url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"server_settings": {"default_transaction_read_only": "off"}},
    )
    yield engine
    await engine.dispose()


async def _read_only(engine: AsyncEngine, db_url: str, on: bool) -> None:
    database = make_url(db_url).database
    setting = (
        "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
    )
    async with engine.connect() as conn:
        await conn.execute(text(f"ALTER DATABASE {database} {setting}"))


async def _terminate(engine: AsyncEngine, application_name_like: str) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND application_name LIKE :like"
            ),
            {"like": application_name_like},
        )
        return int(found.scalar_one())


async def _put(engine: AsyncEngine, fn: Task[robust_conn_tasks.Mark], key: int) -> None:
    async with AsyncSession(engine) as session, session.begin():
        session.add(enqueue(fn, robust_conn_tasks.Mark(key=key)))


async def _no_tasks_left(engine: AsyncEngine) -> None:
    await eventually(
        lambda: count_tasks(engine), lambda n: n == 0, what="an empty queue", timeout=BOUND
    )


async def test_claims_resume_after_a_read_only_episode(
    db_url: str, writer: AsyncEngine, start_runner: Runners
) -> None:
    runner = start_runner("--workers", "1", "--idle-sleep", "0.5", imports=IMPORTS)
    await runner.started(1)
    await _read_only(writer, db_url, on=True)
    assert await _terminate(writer, "%") > 0  # supervisor, claim, completer, listener
    # The claim loop has reconnected, read-only, and failed to claim.
    await runner.wait_for_log(r"claim failed \(.*read-only transaction", timeout=BOUND)
    await _read_only(writer, db_url, on=False)
    await _put(writer, robust_conn_tasks.note, key=1)
    await ledger.wait_for_entries(start_runner.folder, "ran", 1, timeout=BOUND)
    await _no_tasks_left(writer)  # and its ack was written


async def test_session_tasks_commit_again_after_a_read_only_episode(
    db_url: str, writer: AsyncEngine, start_runner: Runners
) -> None:
    # Only the session-task pool's connection goes read-only: claims and outcomes keep their
    # writable connections, so the attempts fail (and are retried) at the task's COMMIT.
    runner = start_runner("--workers", "1", imports=IMPORTS)
    await runner.started(1)
    await _put(writer, robust_conn_tasks.note_in_session, key=0)
    await _no_tasks_left(writer)  # the task pool now holds a connection
    await _read_only(writer, db_url, on=True)
    assert await _terminate(writer, "sqlatasks tasks %") == 1
    await _put(writer, robust_conn_tasks.note_in_session, key=1)
    await runner.wait_for_log(r"attempt \d+ failed: .*read-only transaction", timeout=BOUND)
    await _read_only(writer, db_url, on=False)
    await _no_tasks_left(writer)  # committed: its row deleted in its own transaction
