"""Real PostgreSQL for every test, in tiers.

- `database_url`: the server: SQLATASKS_TEST_DATABASE_URL, or a throwaway pgserver instance.
- A template database migrated once with the real `alembic upgrade head`, plus the example
  application's tables.
- `session`: a session inside an outer transaction that is rolled back after the test.
- `db_url`: a fresh database cloned from the template, for tests that commit, LISTEN, or start
  the runner; dropped afterwards.
- `start_runner`: the one way a test starts runner processes (tests/processes.py `Runners`),
  on `db_url`, writing their evidence to the test's `tmp_path` (tests/ledger.py); killed at
  the end. Only a test marked `slow` may use it.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from examples import app
from sqlatasks import embedded, settings

if TYPE_CHECKING:
    from tests.processes import Runners  # tests.processes imports this module

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "sqlatasks_template"
SHARED = "sqlatasks_shared"
_clones = itertools.count()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and _is_coroutine(item.obj):
            item.add_marker(pytest.mark.anyio)


def _is_coroutine(obj: object) -> bool:
    return inspect.iscoroutinefunction(obj)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The server's URL (its maintenance database)."""
    given = os.environ.get("SQLATASKS_TEST_DATABASE_URL")
    if given:
        yield settings.database_url(given)
        return
    with embedded.throwaway_postgres() as url:
        yield url


def url_for(server_url: str, database: str) -> str:
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def _admin(server_url: str, *statements: str) -> None:
    """Run statements that cannot run in a transaction (CREATE/DROP DATABASE)."""

    async def run() -> None:
        engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
        await engine.dispose()

    asyncio.run(run())


def alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `alembic` command from the repository root against `url`."""
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env={**os.environ, "SQLATASKS_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="session")
def template_url(database_url: str) -> str:
    """A database with the schema that `alembic upgrade head` creates, to clone per test."""
    _admin(
        database_url,
        f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)",
        f"CREATE DATABASE {TEMPLATE}",
    )
    url = url_for(database_url, TEMPLATE)
    done = alembic(url, "upgrade", "head")
    assert done.returncode == 0, done.stderr
    _create_app_tables(url)
    return url


def _create_app_tables(url: str) -> None:
    async def run() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(app.Base.metadata.create_all)
        await engine.dispose()

    asyncio.run(run())


def clone(database_url: str, template_url: str) -> str:
    name = f"sqlatasks_test_{os.getpid()}_{next(_clones)}"
    template = make_url(template_url).database
    _admin(database_url, f"CREATE DATABASE {name} TEMPLATE {template}")
    return url_for(database_url, name)


def drop(database_url: str, url: str) -> None:
    _admin(database_url, f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")


@pytest.fixture(scope="session")
def shared_url(database_url: str, template_url: str) -> Iterator[str]:
    """A clone for the rolled-back tier (a template must have no open connections)."""
    url = clone(database_url, template_url)
    yield url
    drop(database_url, url)


@pytest.fixture
def db_url(database_url: str, template_url: str) -> Iterator[str]:
    """A fresh database of this test's own, with the migrated schema; dropped afterwards."""
    with ExitStack() as stack:
        url = clone(database_url, template_url)
        stack.callback(drop, database_url, url)
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def session(shared_url: str) -> AsyncIterator[AsyncSession]:
    """A session whose commits are savepoints inside an outer transaction rolled back after."""
    eng = create_async_engine(shared_url)
    async with eng.connect() as conn:
        outer = await conn.begin()
        sess = AsyncSession(bind=conn, join_transaction_mode="create_savepoint")
        try:
            yield sess
        finally:
            await sess.close()
            await outer.rollback()
    await eng.dispose()


@pytest.fixture
def start_runner(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[Runners]:
    """`start_runner(*flags, imports=…, database_url=…)` starts `python -m sqlatasks.runner` on
    `db_url` (tasks of tests.runner_tasks, unless `imports`), its ledger `tmp_path`; every
    runner started is killed, workers included, when the test ends."""
    from tests.processes import Runners

    if request.node.get_closest_marker("slow") is None:
        pytest.fail(
            f"{request.node.nodeid} starts runner processes: mark it @pytest.mark.slow, so that"
            ' `pytest -m "not slow"` stays fast',
            pytrace=False,
        )
    runners = Runners(db_url, tmp_path)
    try:
        yield runners
    finally:
        runners.close()


async def count_tasks(engine: AsyncEngine, where: str = "true") -> int:
    async with engine.connect() as conn:
        query = text(f"SELECT count(*) FROM sqlatasks_tasks WHERE {where}")
        return int((await conn.execute(query)).scalar_one())
