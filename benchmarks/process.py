"""`process`: pre-enqueued no-op tasks drained by the real runner, against a raw claim loop.

- raw asyncpg, W connections x batch C: each connection loops "claim up to C due rows with
  SKIP LOCKED and a lease, then DELETE them by id and token" until nothing is due — the queue's
  limit on this machine and database, with no framework at all;
- sqlatasks: `python -m sqlatasks.runner --burst --workers W --concurrency C` on the same
  number of tasks, as a separate process. The rate counts from the first worker's start (its
  claim loop begins right after) to the last worker's exit (the queue drained, every outcome
  written, its connections closed), as the raw loop and the peers count to their return; the
  start-up (interpreter, imports, worker processes) and the runner's own exit (the process
  pool's and the interpreter's teardown, about 0.2 s here) are not throughput, and not
  counted.

Both run with the benchmark database's `synchronous_commit` (off unless `--durable`), and the
runner's own writes are `synchronous_commit = off` in any case (docs/runner.md).
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import time
import uuid
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from benchmarks import database, measure
from benchmarks.noop import Nothing, noop
from sqlatasks import enqueue_many
from sqlatasks.models import TABLE_NAME

TASKS, QUICK_TASKS = 50_000, 5_000
SHAPES = ((1, 10), (1, 100), (2, 50))
"""(workers, concurrency) pairs."""
LOOPS = ("asyncio", "uvloop") if importlib.util.find_spec("uvloop") else ("asyncio",)
"""The runner's --event-loop choices measured: uvloop when it is installed (the uvloop extra)."""
STARTED = re.compile(r"^(\S+ \S+) INFO worker-\d+\[\d+\] sqlatasks\.worker: started", re.M)
EXITED = re.compile(r"^(\S+ \S+) INFO worker-\d+\[\d+\] sqlatasks\.worker: exited", re.M)
WORKER_CPU = re.compile(r"sqlatasks\.worker: exited \(\w+\) after ([0-9.]+) s of CPU")
"""Each worker's CPU from its start to its exit (imports excluded): the runner's own cost."""

_CLAIM = f"""
WITH due AS MATERIALIZED (
    SELECT id FROM {TABLE_NAME}
    WHERE failed_at IS NULL AND scheduled_at <= now()
      AND (locked_until IS NULL OR locked_until < now())
    ORDER BY priority DESC, scheduled_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE {TABLE_NAME} AS t
SET attempts = t.attempts + 1, locked_until = now() + interval '5 minutes',
    locked_by = 'raw', lease_token = $2
FROM due WHERE t.id = due.id
RETURNING t.id, t.payload::text
"""
_ACK = f"""
DELETE FROM {TABLE_NAME} AS t
USING unnest($1::bigint[], $2::uuid[]) AS done(id, token)
WHERE t.id = done.id AND t.lease_token = done.token
"""


async def run(url: str, quick: bool) -> list[measure.Row]:
    tasks = QUICK_TASKS if quick else TASKS
    engine = create_async_engine(url)
    rows: list[measure.Row] = []
    try:
        for workers, concurrency in SHAPES:
            shape = f"{workers}x{concurrency}"
            raw_name = f"raw asyncpg claim+delete, {workers} conn x batch {concurrency}"

            await database.truncate(engine)
            await fill(engine, tasks)
            seconds = await raw_drain(url, workers, concurrency)
            rows.append(measure.Row(raw_name, tasks, (seconds,)))

            for loop in LOOPS:
                name = f"sqlatasks runner --burst {shape}" + (
                    "" if loop == "asyncio" else f" {loop}"
                )
                rows.append(
                    await runner_row(engine, url, tasks, name, raw_name, workers, concurrency, loop)
                )
            print(f"  {shape}: done", flush=True)
    finally:
        await database.truncate(engine)
        await engine.dispose()
    return rows


async def runner_row(
    engine: AsyncEngine,
    url: str,
    tasks: int,
    name: str,
    raw_name: str,
    workers: int,
    concurrency: int,
    loop: str,
) -> measure.Row:
    """The runner draining `tasks` no-op tasks on event loop `loop`, as a row beside the raw
    loop of the same shape."""
    await database.truncate(engine)
    await fill(engine, tasks)
    flags = ("--event-loop", loop)
    seconds, startup, cpu = await runner_drain(url, workers, concurrency, *flags)
    left = await queued(engine)
    if left:
        raise SystemExit(f"benchmarks: the runner --burst left {left} tasks unprocessed")
    notes = {
        "startup_seconds": round(startup, 2),
        "worker CPU µs per task": round(cpu / tasks * 1e6, 1),
        "unprocessed tasks": 0.0,
    }
    return measure.Row(name, tasks, (seconds,), baselines=(raw_name,), notes=notes)


async def fill(engine: AsyncEngine, tasks: int) -> None:
    """Queue `tasks` no-op tasks with one enqueue_many, then ANALYZE the table, as autovacuum
    would after such a load. Without statistics (a server with autovacuum off, or a drain
    started before autovacuum's next round), the planner takes the table for empty and claims
    by a bitmap scan and a sort of every due row: 3-4 ms a claim at 10,000 rows, what an index
    scan does in a tenth of that, and the claim of whichever loop was prepared first keeps the
    worse plan."""
    sessions = async_sessionmaker(engine)
    async with sessions() as session, session.begin():
        await enqueue_many(session, noop, (Nothing(i=i) for i in range(tasks)))
    # Committed: ANALYZE in a transaction that rolls back (what `engine.connect()` does when
    # left without a commit) leaves no statistics behind.
    async with engine.begin() as conn:
        await conn.execute(text(f"ANALYZE {TABLE_NAME}"))
    # Each round's TRUNCATE and ANALYZE leave dead rows in these catalogs; on a server with
    # autovacuum off they pile up (3,340 dead rows against 34 live in pg_class after an hour of
    # runs), and every plan's catalog look-ups walk through them.
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM pg_catalog.pg_class, pg_catalog.pg_statistic"))


async def queued(engine: AsyncEngine) -> int:
    """Tasks in the queue table."""
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {TABLE_NAME}"))).scalar_one())


async def raw_drain(url: str, connections: int, batch: int) -> float:
    """Drain the queue with `connections` bare claim+delete loops; the seconds it took."""

    async def loop() -> None:
        conn = await database.raw_connection(url)
        try:
            while True:  # asyncpg prepares and caches both statements on first use
                token = uuid.uuid4()
                claimed = await conn.fetch(_CLAIM, batch, token)
                if not claimed:
                    return
                await conn.execute(_ACK, [row[0] for row in claimed], [token] * len(claimed))
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(connections)))
    return time.perf_counter() - start


async def runner_drain(
    url: str, workers: int, concurrency: int, *flags: str
) -> tuple[float, float, float]:
    """(seconds from the first worker's start to the last worker's exit, seconds of start-up,
    CPU seconds of the workers from their start to their exit)."""
    launched = time.time()
    process = await database.start_runner(
        url, "--burst", "--workers", str(workers), "--concurrency", str(concurrency), *flags
    )
    _, stderr = await process.communicate()
    log = stderr.decode()
    if process.returncode != 0:
        raise SystemExit(f"benchmarks: the runner exited {process.returncode}:\n{log}")
    starts, ends = _stamps(STARTED, log), _stamps(EXITED, log)
    if not starts or not ends:
        raise SystemExit(f"benchmarks: no worker start or exit in the runner's log:\n{log}")
    first = min(starts)
    cpu = sum(float(seconds) for seconds in WORKER_CPU.findall(log))
    return max(ends) - first, first - launched, cpu


def _stamps(line: re.Pattern[str], log: str) -> list[float]:
    """The times of the log lines that `line` matches (the runner's log format)."""
    return [
        datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in line.findall(log)
    ]
