"""The demo: a database, the queue table, business transactions that enqueue, the queue shown.

python -m examples.demo          # SQLATASKS_DATABASE_URL, or a throwaway PostgreSQL
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from examples import app, bulk
from sqlatasks import embedded, settings

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def database() -> Iterator[str]:
    given = os.environ.get("SQLATASKS_DATABASE_URL")
    if given:
        print(f"using SQLATASKS_DATABASE_URL")
        yield settings.database_url(given)
        return
    print("starting a throwaway PostgreSQL (pgserver) …")
    with embedded.throwaway_postgres() as url:
        yield url
    print("throwaway PostgreSQL removed")


def migrate(url: str) -> None:
    print("$ alembic upgrade head")
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, "SQLATASKS_DATABASE_URL": url},
        check=True,
    )


async def business(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(app.Base.metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    for email, total in [("ann@example.com", 1200), ("bob@example.com", 4500)]:
        async with sessions() as session, session.begin():
            order = await app.place_order(session, email, total)
        print(f"order {order.id} for {email} committed with its tasks")

    try:
        async with sessions() as session, session.begin():
            order = await app.place_order(session, "eve@example.com", 99)
            raise RuntimeError("fraud check failed")
    except RuntimeError as exc:
        print(f"order for eve@example.com rolled back ({exc}): its tasks vanished with it")

    async with sessions() as session, session.begin():
        count = await bulk.send_newsletter(session, [f"reader{i}@example.com" for i in range(5)])
    print(f"newsletter: {count} e-mails queued by one COPY")

    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, task_name, queue, priority, payload::text FROM sqlatasks_tasks ORDER BY id"
            )
        )
        print("\nqueued tasks:")
        for row in rows:
            print(
                f"  #{row.id:<3} {row.task_name:<28} queue={row.queue} priority={row.priority:>2} {row[4]}"
            )
    await engine.dispose()


def main() -> None:
    with database() as url:
        migrate(url)
        asyncio.run(business(url))


if __name__ == "__main__":
    main()
