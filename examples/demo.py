"""The main job, end to end: a database, the queue table, the runner, business transactions
that enqueue tasks, each task processed (one fails once and succeeds on retry), a clean stop.

    python -m examples.demo          # SQLATASKS_DATABASE_URL, or a throwaway PostgreSQL
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from examples import app, bulk
from sqlatasks import embedded, settings

ROOT = Path(__file__).resolve().parent.parent
RUNNER = [
    sys.executable, "-m", "sqlatasks.runner", "--import", "examples.app",
    "--workers", "2", "--concurrency", "5", "--check-interval", "1", "--idle-sleep", "1",
]  # fmt: skip


def say(message: str) -> None:
    print(f"\n== {message}", flush=True)


@contextmanager
def database() -> Iterator[str]:
    given = os.environ.get("SQLATASKS_DATABASE_URL")
    if given:
        say("using SQLATASKS_DATABASE_URL")
        yield settings.database_url(given)
        return
    say("starting a throwaway PostgreSQL (pgserver)")
    with embedded.throwaway_postgres() as url:
        yield url
    say("throwaway PostgreSQL removed")


@contextmanager
def runner(url: str) -> Iterator[subprocess.Popen[bytes]]:
    say("$ " + " ".join(["python", *RUNNER[1:]]))
    process = subprocess.Popen(RUNNER, cwd=ROOT, env={**os.environ, "SQLATASKS_DATABASE_URL": url})
    try:
        yield process
    finally:
        if process.poll() is None:
            say("SIGTERM to the runner")
            process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        say(f"runner exited with code {code}")


async def business(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    for email, total in [("ann@example.com", 1200), ("bob@example.com", 4500)]:
        async with sessions() as session, session.begin():
            order = await app.place_order(session, email, total)
        say(f"order {order.id} for {email} committed with its two tasks")
    try:
        async with sessions() as session, session.begin():
            await app.place_order(session, "eve@example.com", 99)
            raise RuntimeError("fraud check failed")
    except RuntimeError as exc:
        say(f"order for eve@example.com rolled back ({exc}): its tasks vanished with it")
    async with sessions() as session, session.begin():
        count = await bulk.send_newsletter(session, [f"reader{i}@example.com" for i in range(8)])
    say(f"newsletter: {count} e-mails queued by one COPY")


async def wait_until_done(engine: AsyncEngine) -> int:
    """Watch the queue drain (for a minute at most); the number of tasks left at the end."""
    left = -1
    async with asyncio.timeout(60):
        while left != 0:
            async with engine.connect() as conn:
                now = (await conn.execute(text("SELECT count(*) FROM sqlatasks_tasks"))).scalar()
            if now != left:
                left = int(now or 0)
                print(f"   … {left} tasks in the queue", flush=True)
            await asyncio.sleep(0.2)
    return left


async def main_job(url: str) -> int:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(app.Base.metadata.create_all)
    with runner(url):
        await business(engine)
        say("the runner processes them (worker logs below)")
        left = await wait_until_done(engine)
        async with async_sessionmaker(engine)() as session:
            orders = (await session.execute(select(app.Order).order_by(app.Order.id))).scalars()
            say("orders:")
            for order in orders:
                print(
                    f"   order {order.id} {order.email}: {order.status} "
                    f"after {order.charge_attempts} charge attempts",
                    flush=True,
                )
    await engine.dispose()
    return left


def main() -> int:
    with database() as url:
        say("$ alembic upgrade head")
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env={**os.environ, "SQLATASKS_DATABASE_URL": url},
            check=True,
        )
        left = asyncio.run(main_job(url))
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
