"""`depth`: does draining slow down as the queue grows? 10,000 against 1,000,000 queued tasks.

At each depth the queue is filled with no-op tasks (one COPY through `enqueue_many`, then
ANALYZE, as autovacuum would), and two things take the first half of it, 20,000 at most, off
the head: raw asyncpg claim+delete loops (2 connections x batch 50) and `python -m
sqlatasks.runner --workers 2 --concurrency 50`, timed from the first worker's start. Rates are
tasks gone per second; each runner row is compared with the raw loop at the same depth and
with itself at the smaller depth.

The fill gives every task the same `scheduled_at` and priority, so the head of the queue is
its lowest ids: the first `take` tasks are gone once no id below `head + take` is left, one
probe of the primary key. (An earlier version polled `count(*)` every 10 ms; at a million
rows that is a sequential scan of about 200 MB that kept one of the two cores busy, and the
slowdown it measured at depth was mostly its own.)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks import database, measure, process
from sqlatasks.models import TABLE_NAME

DEPTHS, QUICK_DEPTHS = (10_000, 1_000_000), (2_000, 100_000)
MOST = 20_000


async def run(url: str, quick: bool) -> list[measure.Row]:
    engine = create_async_engine(url)
    rows: list[measure.Row] = []
    try:
        for depth in QUICK_DEPTHS if quick else DEPTHS:
            take = min(depth // 2, MOST)
            await _fill(engine, depth)
            raw_name = f"raw claim+delete 2x50, {depth:,} queued"
            rows.append(measure.Row(raw_name, take, (await _raw(url, engine, take),)))
            await _fill(engine, depth)
            done, elapsed = await _runner(url, engine, take)
            smaller = [r.name for r in rows if r.name.startswith("runner")][:1]
            rows.append(
                measure.Row(
                    f"runner 2x50, {depth:,} queued",
                    done,
                    (elapsed,),
                    baselines=(raw_name, *smaller),
                )
            )
            print(f"  depth {depth:,}: done", flush=True)
    finally:
        await database.truncate(engine)
        await engine.dispose()
    return rows


async def _fill(engine: AsyncEngine, depth: int) -> None:
    await database.truncate(engine)
    await process.fill(engine, depth)
    async with engine.connect() as conn:
        await conn.execute(text(f"ANALYZE {TABLE_NAME}"))
        await conn.commit()


async def _boundary(engine: AsyncEngine, take: int) -> int:
    """The id below which the first `take` tasks of the queue lie."""
    async with engine.connect() as conn:
        head = await conn.execute(text(f"SELECT min(id) FROM {TABLE_NAME}"))
        return int(head.scalar_one()) + take


async def _taken(engine: AsyncEngine, boundary: int) -> bool:
    """Whether every task below `boundary` is gone (an index probe, cheap at any depth)."""
    async with engine.connect() as conn:
        left = await conn.execute(
            text(f"SELECT EXISTS (SELECT FROM {TABLE_NAME} WHERE id < :boundary)"),
            {"boundary": boundary},
        )
        return not left.scalar_one()


async def _raw(url: str, engine: AsyncEngine, take: int) -> float:
    """Seconds for bare claim+delete loops to take `take` tasks off the head."""
    boundary = await _boundary(engine, take)
    drain = asyncio.ensure_future(process.raw_drain(url, 2, 50))
    start = time.perf_counter()
    try:
        while not await _taken(engine, boundary):  # noqa: ASYNC110 (polls the database)
            await asyncio.sleep(0.01)
        return time.perf_counter() - start
    finally:
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain


async def _runner(url: str, engine: AsyncEngine, take: int) -> tuple[int, float]:
    """(tasks taken, seconds) for the runner to take `take` tasks, from its first worker."""
    runner = await database.start_runner(
        url, "--workers", "2", "--concurrency", "50", "--log-level", "INFO"
    )
    assert runner.stderr is not None
    try:
        boundary = await _boundary(engine, take)
        while b"sqlatasks.worker: started" not in await runner.stderr.readline():
            pass
        start = time.perf_counter()
        while not await _taken(engine, boundary):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return take, time.perf_counter() - start
    finally:
        runner.send_signal(signal.SIGTERM)
        await runner.communicate()
