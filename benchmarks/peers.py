"""`peers`: sqlatasks beside other PostgreSQL task queues for Python, drained in one run.

The same number of no-op tasks (20,000; `SQLATASKS_BENCH_PEERS_TASKS` for fewer or more),
queued beforehand, drained on the same server and database, one after another in turns:

- the raw loop and the sqlatasks runner at each shape of the `process` scenario, on asyncio
  and, when the `uvloop` extra is installed, on uvloop (pgqueuer's benchmark runs on uvloop);
- pgqueuer (https://github.com/janbjorge/pgqueuer), one process, its asyncpg driver and uvloop
  (its own benchmark tool's choices, docs/development/benchmark.md there), `mode=drain`, at a
  few batch sizes and concurrency caps (`QueueManager.run(batch_size=…,
  max_concurrent_tasks=…)`), with `PGQUEUER_DURABILITY=balanced` (its log and statistics
  tables unlogged, the queue table logged like ours);
- procrastinate (https://procrastinate.readthedocs.io), one process, its psycopg connector,
  `run_worker_async(wait=False, concurrency=…, delete_jobs="successful")` (finished jobs
  deleted, as ours are), at a few concurrencies.

Each peer runs as its own process (`python -m benchmarks.peers <peer> …`): it queues the tasks
with its own bulk call, then times from its worker's start until it returns with the queue
empty. Both are benchmark-only dependencies (the `bench` dependency group). The best setting
of each peer counts; the ratios are sqlatasks' rates to it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import time
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks import database, measure, process

TASKS, QUICK_TASKS = 20_000, 2_000
PGQUEUER = ((10, 20), (50, 100), (100, 200))
"""(batch_size, max_concurrent_tasks); pgqueuer needs the cap at least twice the batch."""
PROCRASTINATE = (10, 100)
"""Worker concurrencies."""


async def run(url: str, quick: bool) -> list[measure.Row]:
    tasks = QUICK_TASKS if quick else int(os.environ.get("SQLATASKS_BENCH_PEERS_TASKS", TASKS))
    engine = create_async_engine(url)
    rows: list[measure.Row] = []
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        peers: list[measure.Row] = []
        for batch, cap in PGQUEUER if _installed("pgqueuer") else ():
            name = f"pgqueuer 1 process, batch {batch}, concurrency {cap}"
            seconds = await _peer("pgqueuer", dsn, tasks, batch, cap)
            peers.append(measure.Row(name, tasks, (seconds,)))
        for concurrency in PROCRASTINATE if _installed("procrastinate") else ():
            name = f"procrastinate 1 process, concurrency {concurrency}"
            seconds = await _peer("procrastinate", dsn, tasks, concurrency)
            peers.append(measure.Row(name, tasks, (seconds,)))
        best = {
            peer: max((r for r in peers if r.name.startswith(peer)), key=lambda r: r.rate).name
            for peer in ("pgqueuer", "procrastinate")
            if any(r.name.startswith(peer) for r in peers)
        }
        for workers, concurrency in process.SHAPES:
            raw_name = f"raw asyncpg claim+delete, {workers} conn x batch {concurrency}"
            await database.truncate(engine)
            await process.fill(engine, tasks)
            rows.append(
                measure.Row(raw_name, tasks, (await process.raw_drain(url, workers, concurrency),))
            )
            for loop in process.LOOPS:
                ours = f"sqlatasks runner --burst {workers}x{concurrency}" + (
                    "" if loop == "asyncio" else f" {loop}"
                )
                row = await process.runner_row(
                    engine, url, tasks, ours, raw_name, workers, concurrency, loop
                )
                compared = (raw_name, *best.values())
                rows.append(measure.Row(ours, tasks, row.round_seconds, compared, row.notes))
            print(f"  {workers}x{concurrency}: done", flush=True)
        rows += peers
    finally:
        await database.truncate(engine)
        await engine.dispose()
    return rows


def _installed(peer: str) -> bool:
    """Whether `peer` can be imported here (the `bench` dependency group); if not, its rows are
    left out, with a line saying so."""
    if importlib.util.find_spec(peer) is not None:
        return True
    print(f"  {peer}: not installed (the bench dependency group); skipped", flush=True)
    return False


async def _peer(peer: str, dsn: str, tasks: int, *settings: int) -> float:
    """Run one peer's drain as its own process; the seconds it reported."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.peers", peer, dsn, str(tasks), *map(str, settings),
        cwd=database.ROOT,
        env={**os.environ, "PGQUEUER_DURABILITY": "balanced"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"benchmarks: {peer} failed:\n{err.decode()[-3000:]}")
    print(f"  {peer} {settings}: {tasks / float(out):,.0f}/s", flush=True)
    return float(out)


async def _pgqueuer(dsn: str, tasks: int, batch: int, cap: int) -> float:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(conn))
    if not await queries.schema_is_installed():
        await queries.install()
    await queries.clear_queue()
    await queries.clear_queue_log()
    await queries.clear_statistics_log()
    await queries.enqueue(["noop"] * tasks, [None] * tasks, [0] * tasks)
    manager = QueueManager(queries)

    @manager.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    started = time.perf_counter()
    await manager.run(batch_size=batch, max_concurrent_tasks=cap, mode=QueueExecutionMode.drain)
    seconds = time.perf_counter() - started
    left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
    await conn.close()
    if left:
        raise SystemExit(f"pgqueuer left {left} jobs")
    return seconds


async def _procrastinate(dsn: str, tasks: int, concurrency: int) -> float:
    import procrastinate
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        found = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
        installed = (await found.fetchone() or (False,))[0]
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop(i: int) -> None:
        return None

    async with app.open_async():
        if not installed:
            await app.schema_manager.apply_schema_async()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("TRUNCATE procrastinate_jobs CASCADE")
        jobs: list[dict[str, Any]] = [{"i": i} for i in range(tasks)]
        await noop.batch_defer_async(*jobs)
        started = time.perf_counter()
        await app.run_worker_async(
            concurrency=concurrency,
            wait=False,
            delete_jobs="successful",
            install_signal_handlers=False,
        )
        seconds = time.perf_counter() - started
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        left = await (await conn.execute("SELECT count(*) FROM procrastinate_jobs")).fetchone()
    if left and left[0]:
        raise SystemExit(f"procrastinate left {left[0]} jobs")
    return seconds


def _main(argv: list[str]) -> None:
    """`python -m benchmarks.peers pgqueuer DSN TASKS BATCH CAP` or `… procrastinate DSN
    TASKS CONCURRENCY`: queue TASKS no-op jobs, drain them, print the seconds."""
    peer, dsn, tasks, *settings = argv
    if peer == "pgqueuer":
        import uvloop

        seconds = uvloop.run(_pgqueuer(dsn, int(tasks), *map(int, settings)))
    else:
        seconds = asyncio.run(_procrastinate(dsn, int(tasks), *map(int, settings)))
    print(seconds)


if __name__ == "__main__":
    _main(sys.argv[1:])
