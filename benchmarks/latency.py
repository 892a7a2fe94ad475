"""`latency`: an idle runner; tasks enqueued one at a time at random gaps; commit to start.

Each task is `session.add(enqueue(stamp, ...))` and commit in its own transaction, at random
gaps of 5-50 ms; the time from the commit returning to the task's first line running (both
wall clocks of this machine) is the pickup latency. Reported as p50, p95 and p99, once with
LISTEN/NOTIFY and once polling only (`--no-notify`, idle sleep 1 s) as the baseline that
NOTIFY is there to beat. The runner is 1 worker x 10; the table's rate is 1 / mean latency.
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from benchmarks import database, measure
from benchmarks.noop import Stamp, stamp
from sqlatasks import enqueue

TASKS, QUICK_TASKS = 500, 100


async def run(url: str, quick: bool) -> list[measure.Row]:
    tasks = QUICK_TASKS if quick else TASKS
    rows: list[measure.Row] = []
    for label, flags in [("polling only (--no-notify, idle sleep 1 s)", ["--no-notify"]),
                         ("LISTEN/NOTIFY (idle sleep 1 s)", [])]:  # fmt: skip
        latencies = await _measure(url, tasks, flags)
        q = statistics.quantiles(latencies, n=100)
        rows.append(
            measure.Row(
                f"pickup latency, {label}",
                tasks,
                (sum(latencies),),
                baselines=() if "polling" in label else (rows[0].name,),
                notes={
                    "p50_ms": round(q[49] * 1000, 1),
                    "p95_ms": round(q[94] * 1000, 1),
                    "p99_ms": round(q[98] * 1000, 1),
                    "unprocessed tasks": 0.0,  # _wait_for gives up otherwise
                },
                series={"latency_seconds": tuple(latencies)},
            )
        )
    return rows


async def _measure(url: str, tasks: int, flags: list[str]) -> list[float]:
    engine = create_async_engine(url)
    await database.truncate(engine)
    sessions = async_sessionmaker(engine)
    stamps = Path(tempfile.mkdtemp(prefix="sqlatasks-stamps-")) / "stamps"
    process = await database.start_runner(
        url,
        *("--workers", "1", "--concurrency", "10", "--idle-sleep", "1", *flags),
        env={"SQLATASKS_BENCH_STAMPS": str(stamps)},
        log=False,
    )
    committed: dict[int, float] = {}
    try:
        await asyncio.sleep(4)  # start-up: an idle runner is what is measured
        for key in range(tasks):
            async with sessions() as session, session.begin():
                session.add(enqueue(stamp, Stamp(key=key)))
            committed[key] = time.time()
            await asyncio.sleep(random.uniform(0.005, 0.05))
        started = await _wait_for(stamps, tasks)
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
        await engine.dispose()
    return [started[key] - committed[key] for key in committed]


async def _wait_for(stamps: Path, tasks: int) -> dict[int, float]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = _read(stamps)
        if len(found) >= tasks:
            return found
        await asyncio.sleep(0.1)
    raise SystemExit("benchmarks: the latency tasks did not all run within 120 s")


def _read(stamps: Path) -> dict[int, float]:
    if not stamps.exists():
        return {}
    lines = stamps.read_text().split("\n")
    return {int(k): float(t) for k, t in (line.split() for line in lines if line)}
