"""The benchmark database: which server, its schema made the real way, emptied between rounds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from examples import app
from sqlatasks import embedded, settings
from sqlatasks.models import TABLE_NAME

ROOT = Path(__file__).resolve().parent.parent
URL_VARIABLE = "SQLATASKS_BENCH_DATABASE_URL"
TABLES = (TABLE_NAME, app.Order.__tablename__)
SERVER_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "shared_buffers",
    "autovacuum",
    "max_wal_size",
)


@contextmanager
def provisioned() -> Iterator[tuple[str, str]]:
    """Yield (asyncpg URL, a label for reports): the given database, or a throwaway one."""
    given = os.environ.get(URL_VARIABLE)
    if given:
        url = settings.database_url(given)
        yield url, make_url(url).render_as_string(hide_password=True)
        return
    with embedded.throwaway_postgres() as url:
        yield url, "throwaway PostgreSQL (pgserver)"


def prepare(url: str, *, durable: bool) -> dict[str, str]:
    """Migrate with `alembic upgrade head`, create the example app's tables; the server's facts.

    Unless `durable`, the database is set to `synchronous_commit = off` for every new
    connection (the runner's processes included): a commit then waits for no disk flush, whose
    latency is the same for every variant, varies wildly on shared disks, and would hide the
    client-side costs that the ratios are about. `durable` resets it to the server's setting.
    """
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, "SQLATASKS_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"benchmarks: `alembic upgrade head` failed:\n{done.stderr.strip()}")
    return asyncio.run(_finish(url, durable=durable))


async def _finish(url: str, *, durable: bool) -> dict[str, str]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(app.Base.metadata.create_all)
            database = (await conn.execute(text("SELECT current_database()"))).scalar_one()
            setting = "RESET synchronous_commit" if durable else "SET synchronous_commit = off"
            await conn.execute(text(f'ALTER DATABASE "{database}" {setting}'))
        # A database's settings apply to connections made after them: ask a fresh one.
        await engine.dispose()
        async with engine.connect() as conn:
            return {
                setting: str((await conn.execute(text(f"SHOW {setting}"))).scalar_one())
                for setting in SERVER_SETTINGS
            }
    finally:
        await engine.dispose()


async def truncate(engine: AsyncEngine) -> None:
    """Empty the queue table and the app's tables, so every round starts alike."""
    async with engine.begin() as conn:
        # Fail loudly, rather than hang, if a connection left open somewhere holds a lock.
        await conn.execute(text("SET LOCAL lock_timeout = '60s'"))
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)}"))


async def raw_connection(url: str) -> Any:
    """A plain asyncpg connection to the database that SQLAlchemy's URL names."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return await asyncpg.connect(dsn)


async def start_runner(
    url: str, *flags: str, env: dict[str, str] | None = None, log: bool = True
) -> asyncio.subprocess.Process:
    """`python -m sqlatasks.runner` on the no-op tasks, with `flags`; its stderr (the log) piped
    unless `log` is False."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sqlatasks.runner", "--import", "benchmarks.noop", *flags,
        cwd=ROOT,
        env={**os.environ, **(env or {}), "SQLATASKS_DATABASE_URL": url},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE if log else asyncio.subprocess.DEVNULL,
    )  # fmt: skip
