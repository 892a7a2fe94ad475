"""`python -m benchmarks.dashboard`: each dashboard page's server time over 1,000,000 queued
tasks (docs/dashboard.md), in-process through httpx's ASGI transport (no network, no browser).

The table: 1,000,000 live tasks in 5 queues and 3 priorities (one in three scheduled ahead),
1,000 parked — the worst case for the parked page, all of them older than every live task —
50,000 kept, and two hours of the throughput rollup from 8 workers in the 5 queues (the
overview's chart reads the last hour of it). ANALYZE, one warm-up request per page, then the
median and the slowest of `REPEAT` requests. A throwaway PostgreSQL unless
SQLATASKS_BENCH_DATABASE_URL (as every benchmark); `--quick` for 100,000 tasks.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks import database
from sqlatasks.dashboard import create_app

REPEAT = 9
PAGES = [
    "/", "/tasks", "/tasks?queue=q3", "/tasks?state=running", "/tasks?state=scheduled",
    "/tasks?task=app:nothing", "/parked", "/parked?queue=q2", "/task/{parked}", "/periodic",
    "/workers",
]  # fmt: skip


async def _fill(engine: AsyncEngine, live: int) -> int:
    async with engine.begin() as conn:
        await conn.execute(
            text("TRUNCATE sqlatasks_tasks, sqlatasks_finished, sqlatasks_throughput")
        )
        await conn.execute(
            text("""
            INSERT INTO sqlatasks_throughput (minute, queue, worker, completed, failed, retried)
            SELECT date_trunc('minute', now()) - make_interval(mins => m), 'q' || q, 'w-' || w,
                   100 + m, m % 3, m % 5
            FROM generate_series(0, 119) AS m, generate_series(0, 4) AS q,
                 generate_series(0, 7) AS w""")
        )
        await conn.execute(
            text("""
            INSERT INTO sqlatasks_tasks (task_name, payload, queue, failed_at, last_error)
            SELECT 'app:broken', '{}', 'q' || (n % 5), now(), 'E: broken ' || n
            FROM generate_series(1, 1000) AS n""")
        )
        await conn.execute(
            text(f"""
            INSERT INTO sqlatasks_tasks (task_name, payload, queue, priority, scheduled_at,
                                         locked_until, locked_by)
            SELECT 'app:t' || (n % 10), '{{}}', 'q' || (n % 5), (n % 3)::smallint,
                   now() + make_interval(secs => CASE WHEN n % 3 = 0 THEN 3600 ELSE -n END),
                   CASE WHEN n % 50000 = 1 THEN now() + interval '1 hour' END,
                   CASE WHEN n % 50000 = 1 THEN 'w-' || n END
            FROM generate_series(1, {live}) AS n""")
        )
        await conn.execute(
            text("""
            INSERT INTO sqlatasks_finished (id, task_name, queue, state, payload, attempts,
                                            created_at, finished_at, keep_until)
            SELECT -n, 'app:t', 'q1', 'completed', '{}', 1, now(), now(),
                   now() + make_interval(secs => n)
            FROM generate_series(1, 50000) AS n""")
        )
        parked = (
            await conn.execute(
                text("SELECT max(id) FROM sqlatasks_tasks WHERE failed_at IS NOT NULL")
            )
        ).scalar_one()
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.commit()
    return int(parked)


async def run(url: str, quick: bool) -> dict[str, dict[str, float]]:
    engine = create_async_engine(url, pool_size=2)
    live = 100_000 if quick else 1_000_000
    parked = await _fill(engine, live)
    app = create_app(engine)
    times: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
        for page in PAGES:
            path = page.format(parked=parked)
            assert (await c.get(path)).status_code == 200, path
            took = []
            for _ in range(REPEAT):
                start = time.perf_counter()
                await c.get(path)
                took.append((time.perf_counter() - start) * 1000)
            times[page] = {"median_ms": statistics.median(took), "max_ms": max(took)}
            print(
                f"{page:28} median {times[page]['median_ms']:7.1f} ms"
                f"  max {times[page]['max_ms']:7.1f} ms",
                flush=True,
            )
    await engine.dispose()
    return {"live_tasks": {"count": live}, **times}


def main() -> None:
    quick = "--quick" in sys.argv
    with database.provisioned() as (url, label):
        database.prepare(url, durable=False)
        print(f"dashboard pages over {'100,000' if quick else '1,000,000'} tasks ({label})")
        result = asyncio.run(run(url, quick))
    if not quick:
        with open("docs/results/dashboard.json", "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
