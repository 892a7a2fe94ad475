"""`enqueue_drivers`: `enqueue_many` through each driver, against asyncpg in the same run.

One transaction of n tasks (models built beforehand, so the driver's COPY is what differs):

- asyncpg, `await enqueue_many(async_session, ...)`: the baseline (`copy_records_to_table`);
- psycopg 3, `await enqueue_many(async_session, ...)` (`cursor.copy` + `write_row`);
- psycopg 3, `enqueue_many(session, ...)` from a synchronous Session;
- psycopg2, `enqueue_many(session, ...)` (`copy_expert` of COPY text), when it is installed.

The synchronous variants block the event loop while they run, as they would in a sync app.
"""

from __future__ import annotations

import importlib.util
from itertools import islice

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from benchmarks import database, measure
from examples.app import EmailInput, send_email
from sqlatasks import enqueue_many

OPERATIONS, QUICK_OPERATIONS = 100_000, 10_000
WARMUP = 1000
ROUNDS, QUICK_ROUNDS = 5, 3

ASYNCPG = "asyncpg, AsyncSession"
PSYCOPG_ASYNC = "psycopg 3, AsyncSession"
PSYCOPG_SYNC = "psycopg 3, Session (sync)"
PSYCOPG2_SYNC = "psycopg2, Session (sync)"


def _url(url: str, driver: str) -> str:
    return make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(False)


async def run(url: str, quick: bool) -> list[measure.Row]:
    operations = QUICK_OPERATIONS if quick else OPERATIONS
    models = [EmailInput(to=f"user{i}@example.com", subject="hi") for i in range(operations)]
    async_engines = {name: create_async_engine(_url(url, name)) for name in ("asyncpg", "psycopg")}
    sync_engines = {"psycopg": create_engine(_url(url, "psycopg"))}
    if importlib.util.find_spec("psycopg2") is not None:
        sync_engines["psycopg2"] = create_engine(_url(url, "psycopg2"))

    def in_async(engine: AsyncEngine) -> measure.Work:
        async def work(n: int) -> None:
            async with AsyncSession(engine) as session, session.begin():
                _check(await enqueue_many(session, send_email, islice(models, n)), n)

        return work

    def in_sync(engine: Engine) -> measure.Work:
        async def work(n: int) -> None:
            with Session(engine) as session, session.begin():
                _check(enqueue_many(session, send_email, islice(models, n)), n)

        return work

    variants = [
        measure.Variant(ASYNCPG, in_async(async_engines["asyncpg"]), operations, WARMUP),
        measure.Variant(
            PSYCOPG_ASYNC,
            in_async(async_engines["psycopg"]),
            operations,
            WARMUP,
            baselines=(ASYNCPG,),
        ),
        measure.Variant(
            PSYCOPG_SYNC, in_sync(sync_engines["psycopg"]), operations, WARMUP, baselines=(ASYNCPG,)
        ),
    ]
    if "psycopg2" in sync_engines:
        variants.append(
            measure.Variant(
                PSYCOPG2_SYNC,
                in_sync(sync_engines["psycopg2"]),
                operations,
                WARMUP,
                baselines=(ASYNCPG,),
            )
        )
    try:
        return await measure.measure(
            variants,
            rounds=QUICK_ROUNDS if quick else ROUNDS,
            reset=lambda: database.truncate(async_engines["asyncpg"]),
        )
    finally:
        for engine in async_engines.values():
            await engine.dispose()
        for sync_engine in sync_engines.values():
            sync_engine.dispose()


def _check(count: int, expected: int) -> None:
    if count != expected:
        raise RuntimeError(f"enqueue_many reported {count} tasks, expected {expected}")
