"""Through a real PgBouncer (tests/pgbouncer.py), in session and transaction pooling: enqueue,
enqueue_many (COPY, asyncpg and psycopg), the command line, the runner with plain and session
tasks; in transaction pooling LISTEN cannot work, which the runner must notice, say once, and
poll instead; `--listen-url` gives it back. docs/pgbouncer.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from sqlatasks import enqueue, enqueue_many, errors, listener, poolers
from sqlatasks.settings import Settings
from tests import ledger
from tests.conftest import ROOT, count_tasks
from tests.eventually import eventually
from tests.once_tasks import EFFECTS_DDL, Effect, write_effect
from tests.pgbouncer import PoolMode, installed, pgbouncer
from tests.processes import Runners
from tests.runner_tasks import Job, record

# anyio marked here, not only by conftest after collection: anyio then keeps the pool-mode
# parameters when it parametrizes by backend.
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not installed(), reason="pgbouncer is not installed"),
]

DEAF = "LISTEN is off"
REFUSED = "refused the startup setting"


def for_asyncpg(url: str, mode: PoolMode) -> str:
    """The documented asyncpg URL for a pool mode: no statement caches in transaction mode."""
    if mode == "session":
        return url
    return (
        make_url(url)
        .update_query_dict({"prepared_statement_cache_size": "0"})
        .render_as_string(hide_password=False)
    )


def asyncpg_engine(url: str, mode: PoolMode) -> AsyncEngine:
    """An application's engine through PgBouncer, as docs/pgbouncer.md says to make it."""
    connect_args: dict[str, Any] = {"statement_cache_size": 0} if mode == "transaction" else {}
    return create_async_engine(for_asyncpg(url, mode), connect_args=connect_args)


@pytest.fixture
def bouncer(db_url: str, tmp_path: Path, mode: PoolMode) -> Iterator[str]:
    """The test database through PgBouncer in `mode` (the plain URL, no driver options)."""
    with pgbouncer(db_url, tmp_path / "pgbouncer", mode) as url:
        yield url


@pytest.fixture
async def app_engine(bouncer: str, mode: PoolMode) -> AsyncIterator[AsyncEngine]:
    eng = asyncpg_engine(bouncer, mode)
    yield eng
    await eng.dispose()


MODES = pytest.mark.parametrize("mode", ["session", "transaction"])


@MODES
async def test_enqueue_and_enqueue_many_through_pgbouncer(
    app_engine: AsyncEngine, engine: AsyncEngine
) -> None:
    # Many short transactions, several at once: in transaction pooling they hop between
    # server connections, which is where a cached or named prepared statement goes missing.
    async def produce(offset: int) -> None:
        for round_ in range(5):
            async with AsyncSession(app_engine) as session, session.begin():
                session.add(enqueue(record, Job(key=offset + round_)))
                await enqueue_many(session, record, [Job(key=offset + k) for k in range(10, 30)])

    async with anyio.create_task_group() as group:
        for offset in range(0, 400, 100):
            group.start_soon(produce, offset)
    assert await count_tasks(engine) == 4 * 5 * 21


@MODES
async def test_psycopg_enqueue_many_through_pgbouncer(
    bouncer: str, mode: PoolMode, engine: AsyncEngine
) -> None:
    url = make_url(bouncer).set(drivername="postgresql+psycopg")
    # psycopg prepares a statement on its 5th run on a connection; off in transaction pooling.
    args: dict[str, Any] = {"prepare_threshold": None} if mode == "transaction" else {}
    sync = create_engine(url, connect_args=args)
    try:
        for round_ in range(8):
            with Session(sync) as session, session.begin():
                session.add(enqueue(record, Job(key=round_)))
                enqueue_many(session, record, [Job(key=100 * round_ + k) for k in range(10)])
    finally:
        sync.dispose()
    assert await count_tasks(engine) == 8 * 11


@MODES
@pytest.mark.slow
def test_cli_through_pgbouncer(bouncer: str, mode: PoolMode, db_url: str) -> None:
    sync = create_engine(make_url(db_url).set(drivername="postgresql+psycopg"))
    with Session(sync) as session, session.begin():
        enqueue_many(session, record, [Job(key=k) for k in range(7)])
    sync.dispose()
    for _ in range(3):  # repeated: each run's statements must not meet the last run's
        url = for_asyncpg(bouncer, mode)
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


@MODES
@pytest.mark.slow
async def test_runner_through_pgbouncer_runs_every_task_once(
    bouncer: str,
    mode: PoolMode,
    app_engine: AsyncEngine,
    engine: AsyncEngine,
    start_runner: Runners,
    tmp_path: Path,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(EFFECTS_DDL))
    runner = start_runner(
        "--workers",
        "2",
        "--concurrency",
        "10",  # session pooling: every client holds a server connection of the pool of 60
        "--idle-sleep",
        "0.5",
        imports=["tests.runner_tasks", "tests.once_tasks"],
        database_url=for_asyncpg(bouncer, mode),
    )
    await runner.started(2)
    for batch in range(4):
        async with AsyncSession(app_engine) as session, session.begin():
            await enqueue_many(session, record, [Job(key=100 * batch + k) for k in range(50)])
            await enqueue_many(
                session, write_effect, [Effect(key=100 * batch + k) for k in range(10)]
            )
    entries = await ledger.wait_for_entries(tmp_path, "end", 200, timeout=120)
    assert sorted(e.key or 0 for e in entries) == sorted(
        100 * b + k for b in range(4) for k in range(50)
    )
    await eventually(lambda: count_tasks(engine), lambda left: left == 0, what="an empty queue")
    async with engine.connect() as conn:
        effects = await conn.execute(text("SELECT task_key FROM effects ORDER BY 1"))
        assert [row[0] for row in effects] == sorted(
            100 * b + k for b in range(4) for k in range(10)
        )
    if mode == "transaction":  # the listener's verdict comes within its probe's timeout
        await runner.wait_for_log(DEAF, 2)
    log = runner.log()
    # The listener's verdict, once per worker: deaf through transaction pooling only.
    assert log.count(DEAF) == (2 if mode == "transaction" else 0), log
    assert "Traceback" not in log, log


@pytest.mark.slow
async def test_transaction_pooling_polls_and_listen_url_restores_notify(
    db_url: str,
    tmp_path: Path,
    engine: AsyncEngine,
    start_runner: Runners,
) -> None:
    with pgbouncer(db_url, tmp_path / "pgbouncer", "transaction") as bouncer:
        url = for_asyncpg(bouncer, "transaction")
        # Told nothing: it finds LISTEN deaf, says so once, and polls every idle sleep (1 s).
        polling = start_runner("--workers", "1", "--idle-sleep", "1", database_url=url)
        await polling.started(1)
        await polling.wait_for_log(DEAF)
        await _enqueue_and_wait(engine, tmp_path, key=1)
        polling.kill()
        assert polling.log().count(DEAF) == 1, polling.log()
        # Given a direct URL for LISTEN, the idle sleep is long (60 s) and pickup still comes
        # from NOTIFY: the wait below is far shorter than one idle sleep.
        direct = start_runner(
            "--workers", "1", "--idle-sleep", "60", "--listen-url", db_url, database_url=url
        )
        await direct.started(1)
        await _enqueue_and_wait(engine, tmp_path, key=2)  # past its first claim: now idle
        await _enqueue_and_wait(engine, tmp_path, key=3, timeout=30)
        assert DEAF not in direct.log(), direct.log()


async def _enqueue_and_wait(
    engine: AsyncEngine, folder: Path, *, key: int, timeout: float = 60
) -> None:
    async with AsyncSession(engine) as session, session.begin():
        session.add(enqueue(record, Job(key=key)))
    await eventually(
        lambda: ledger.keys(ledger.entries(folder, "end")),
        lambda done: key in done,
        what=f"task {key} to run",
        timeout=timeout,
    )


def test_listen_url_is_a_postgresql_url_and_never_echoed() -> None:
    given = Settings.load(
        database_url="postgresql://u@pgbouncer:6432/app", listen_url="postgresql://u:pw@db/app"
    )
    assert given.listen_url == "postgresql+asyncpg://u:pw@db/app"
    with pytest.raises(errors.ConfigurationError) as caught:
        Settings.load(database_url="postgresql://u@db/app", listen_url="mysql://u:secret@db/app")
    assert "--listen-url" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_the_listeners_dsn_drops_what_only_sqlalchemy_understands() -> None:
    url = "postgresql+asyncpg://u@h:6432/app?prepared_statement_cache_size=0&ssl=require"
    # asyncpg reads a DSN as libpq does: its `ssl` keyword argument is `sslmode` there
    assert listener.asyncpg_dsn(url) == "postgresql://u@h:6432/app?sslmode=require"
    assert poolers.asyncpg_options(url) == {"statement_cache_size": 0}
    assert poolers.asyncpg_options("postgresql+asyncpg://u@h/app") == {}
