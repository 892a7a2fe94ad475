"""Every supported driver, async and sync (docs/drivers.md): enqueue() and enqueue_many() in
the caller's transaction, the runner and the command line given a psycopg URL, and a clear
TypeError from the async-only API given a synchronous session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from sqlatasks import PayloadError, enqueue, enqueue_many, operations, settings, testing
from tests import ledger
from tests.conftest import ROOT, count_tasks
from tests.processes import Runners
from tests.runner_tasks import Job, record
from tests.tasks_for_tests import Greeting, greet

# Marked here, not only by conftest after collection: anyio then parametrizes these tests by
# backend at collection, keeping their own parameters (drivers).
pytestmark = pytest.mark.anyio

MANY = 10_000
ASYNC_DRIVERS = ["asyncpg", "psycopg"]
SYNC_DRIVERS = ["psycopg", "psycopg2"]
# Characters that COPY's text format must escape, and some it need not.
AWKWARD = 'tab\there, newline\nthere, cr\r, backslash \\ and \\N, quote " and é, 日本'


def with_driver(url: str, driver: str) -> str:
    return make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(False)


@pytest.fixture
async def async_engine(async_driver: str, db_url: str) -> AsyncIterator[AsyncEngine]:
    """An async engine on `db_url` through the test's `async_driver` parameter."""
    engine = create_async_engine(with_driver(db_url, async_driver))
    yield engine
    await engine.dispose()


@pytest.fixture
def sync_engine(sync_driver: str, db_url: str) -> Iterator[Engine]:
    """A synchronous engine on `db_url` through the test's `sync_driver` parameter."""
    engine = create_engine(with_driver(db_url, sync_driver))
    yield engine
    engine.dispose()


each_async_driver = pytest.mark.parametrize("async_driver", ASYNC_DRIVERS)
each_sync_driver = pytest.mark.parametrize("sync_driver", SYNC_DRIVERS)


def greetings(n: int, name: str = "n") -> Iterator[Greeting]:
    return (Greeting(name=f"{name}{i}") for i in range(n))


async def payload_names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT payload->>'name' FROM sqlatasks_tasks ORDER BY id"))
        return list(found.scalars())


# enqueue_many: 10,000 payloads through each driver, in the caller's transaction


@each_async_driver
async def test_enqueue_many_async_copies_every_payload(
    async_engine: AsyncEngine, engine: AsyncEngine
) -> None:
    async with AsyncSession(async_engine) as session, session.begin():
        assert await enqueue_many(session, greet, greetings(MANY)) == MANY
    assert await payload_names(engine) == [f"n{i}" for i in range(MANY)]


@each_sync_driver
async def test_enqueue_many_sync_copies_every_payload(
    sync_engine: Engine, engine: AsyncEngine
) -> None:
    with Session(sync_engine) as session, session.begin():
        assert enqueue_many(session, greet, greetings(MANY)) == MANY
    assert await payload_names(engine) == [f"n{i}" for i in range(MANY)]


@each_sync_driver
async def test_enqueue_many_sync_escapes_text_and_sets_the_due_time(
    sync_engine: Engine, engine: AsyncEngine
) -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with Session(sync_engine) as session, session.begin():
        assert enqueue_many(session, greet, [Greeting(name=AWKWARD)], run_at=at) == 1
        assert enqueue_many(session, greet, [{"name": "later"}], delay=3600) == 1
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT payload->>'name', scheduled_at, scheduled_at - created_at "
                "FROM sqlatasks_tasks ORDER BY id"
            )
        )
        (name, scheduled, _), (later, _, delay) = found.all()
    assert (name, scheduled, later) == (AWKWARD, at, "later")
    assert delay >= timedelta(seconds=3599)


@each_async_driver
async def test_rolled_back_enqueue_many_async_leaves_nothing(
    async_engine: AsyncEngine, engine: AsyncEngine
) -> None:
    # enqueue_many is the transaction's first statement: the case where a COPY on the raw
    # connection could run before BEGIN and outlive the rollback.
    async with AsyncSession(async_engine) as session:
        async with session.begin() as transaction:
            assert await enqueue_many(session, greet, greetings(100)) == 100
            await transaction.rollback()
        assert await count_tasks(engine) == 0
        async with session.begin():  # the session stays usable
            assert await enqueue_many(session, greet, greetings(3)) == 3
    assert await count_tasks(engine) == 3


@each_sync_driver
async def test_rolled_back_enqueue_many_sync_leaves_nothing(
    sync_engine: Engine, engine: AsyncEngine
) -> None:
    with Session(sync_engine) as session:
        with session.begin() as transaction:
            assert enqueue_many(session, greet, greetings(100)) == 100
            transaction.rollback()
        assert await count_tasks(engine) == 0
        with session.begin():
            assert enqueue_many(session, greet, greetings(3)) == 3
    assert await count_tasks(engine) == 3


@each_sync_driver
async def test_an_invalid_payload_mid_batch_aborts_the_sync_copy(
    sync_engine: Engine, engine: AsyncEngine
) -> None:
    def batch() -> Iterator[dict[str, Any]]:
        yield from ({"name": f"ok{i}"} for i in range(5000))
        yield {"name": ""}  # min_length=1

    with pytest.raises(PayloadError), Session(sync_engine) as session, session.begin():
        enqueue_many(session, greet, batch())
    assert await count_tasks(engine) == 0


@each_sync_driver
async def test_enqueue_many_sync_with_unique_keys_counts_what_was_added(
    sync_engine: Engine, engine: AsyncEngine
) -> None:
    names = ["a", "b", "a", "c", "b"]
    with Session(sync_engine) as session, session.begin():
        added = enqueue_many(
            session, greet, [Greeting(name=n) for n in names], unique_key=lambda g: g.name
        )
    assert added == 3
    assert await payload_names(engine) == ["a", "b", "c"]


# enqueue() from a synchronous session


@each_sync_driver
async def test_enqueue_from_a_sync_session_commits_and_rolls_back_with_it(
    sync_engine: Engine, engine: AsyncEngine
) -> None:
    with Session(sync_engine) as session, session.begin():
        session.add(enqueue(greet, Greeting(name="kept"), delay=60))
        row = enqueue(greet, Greeting(name="once"), unique_key="k")
        session.add(row)
        session.flush()
        assert row.id is not None
    with Session(sync_engine) as session, session.begin() as transaction:
        session.add(enqueue(greet, Greeting(name="dropped")))
        session.flush()
        transaction.rollback()
    assert sorted(await payload_names(engine)) == ["kept", "once"]


# The async-only API refuses a synchronous session at the call


ASYNC_ONLY: dict[str, Callable[[Any], object]] = {
    "queue_stats": lambda s: operations.queue_stats(s),
    "failed_tasks": lambda s: operations.failed_tasks(s, limit=5),
    "retry_failed": lambda s: operations.retry_failed(s, "all"),
    "delete_failed": lambda s: operations.delete_failed(session=s, ids="all"),
    "cancel": lambda s: operations.cancel(s, 1),
    "run_pending": lambda s: testing.run_pending(s),
    "enqueued": lambda s: testing.enqueued(s, greet),
}


@pytest.mark.parametrize("name", ASYNC_ONLY)
def test_async_only_functions_refuse_a_sync_session(name: str, db_url: str) -> None:
    engine = create_engine(with_driver(db_url, "psycopg"))
    try:
        with Session(engine) as session, pytest.raises(TypeError, match="needs an AsyncSession"):
            ASYNC_ONLY[name](session)
    finally:
        engine.dispose()


def test_enqueue_many_refuses_what_is_not_a_session() -> None:
    with pytest.raises(TypeError, match="takes an AsyncSession or a Session"):
        enqueue_many(object(), greet, [Greeting(name="x")])  # type: ignore[call-overload]


# The runner and the command line given a psycopg URL


def test_any_postgresql_url_is_connected_through_asyncpg() -> None:
    for driver in ["psycopg", "psycopg2", "psycopg_async"]:
        given = f"postgresql+{driver}://u:p@h:5433/app"
        assert settings.database_url(given) == "postgresql+asyncpg://u:p@h:5433/app"
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        settings.database_url("sqlite:///x.db")


def test_cli_status_with_a_psycopg_url(db_url: str) -> None:
    engine = create_engine(with_driver(db_url, "psycopg"))
    with Session(engine) as session, session.begin():
        enqueue_many(session, greet, greetings(7))
    engine.dispose()
    # The global options go before the command.
    url = with_driver(db_url, "psycopg")
    done = subprocess.run(
        [sys.executable, "-m", "sqlatasks", "--database-url", url, "--json", "status"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "SQLATASKS_DATABASE_URL"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert [(s["queue"], s["due"]) for s in stats] == [("default", 7)]


@pytest.mark.slow
async def test_runner_with_a_psycopg_url_runs_tasks(
    db_url: str, engine: AsyncEngine, start_runner: Runners
) -> None:
    sync = create_engine(with_driver(db_url, "psycopg"))
    with Session(sync) as session, session.begin():
        assert enqueue_many(session, record, [Job(key=k) for k in range(5)]) == 5
    sync.dispose()
    runner = start_runner("--workers", "1", "--burst", database_url=with_driver(db_url, "psycopg"))
    assert await runner.wait_exit(timeout=120) == 0, runner.log()
    done = ledger.entries(start_runner.folder, "end")
    assert sorted(e.key for e in done if e.key is not None) == list(range(5))
    assert await count_tasks(engine) == 0
