"""`churn`: a steady 1,000 tasks/s in and out for 10 minutes; does the queue table stay small?

A producer paces itself to 1,000 no-op tasks a second (`enqueue_many` of 20 every 20 ms, each
batch its own transaction, catching up if it falls behind), while `python -m sqlatasks.runner
--workers 1 --concurrency 50` drains them. Every few seconds the table's size, its indexes'
size and its dead row versions are sampled (`pg_relation_size`, `pg_indexes_size`,
`pg_stat_user_tables.n_dead_tup`). The figure that counts is the whole relation's size (heap,
indexes, TOAST) at the end over its size after the first minute: the issue's target is ≤ 2.
Quick: 6 seconds, with the "first minute" mark at 1 second.

Afterwards the producer stops and the queue must drain to empty: every task is processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from functools import partial

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks import database, measure, pacing
from sqlatasks.models import TABLE_NAME

RATE = 1000
"""Tasks per second, in and out."""
BATCH = 20
DURATION, QUICK_DURATION = 600.0, 6.0
MARK, QUICK_MARK = 60.0, 1.0
"""The "after one minute" size that the end is compared with."""
SAMPLE_EVERY, QUICK_SAMPLE_EVERY = 5.0, 0.5
DRAIN_LIMIT = 120.0
"""Seconds the runner gets to empty the queue after the producer stops (an anti-hang bound)."""

_SIZES = text(f"""
SELECT pg_relation_size('{TABLE_NAME}'), pg_indexes_size('{TABLE_NAME}'),
       pg_total_relation_size('{TABLE_NAME}'),
       coalesce(s.n_dead_tup, 0), coalesce(s.autovacuum_count, 0),
       (SELECT count(*) FROM {TABLE_NAME})
FROM pg_stat_user_tables AS s WHERE s.relname = '{TABLE_NAME}'
""")


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    table_bytes: int
    index_bytes: int
    total_bytes: int
    dead_tuples: int
    autovacuums: int
    queued: int


async def run(url: str, quick: bool) -> list[measure.Row]:
    duration = QUICK_DURATION if quick else DURATION
    mark = QUICK_MARK if quick else MARK
    every = QUICK_SAMPLE_EVERY if quick else SAMPLE_EVERY
    engine = create_async_engine(url)
    samples: list[Sample] = []
    try:
        await database.truncate(engine)
        runner, log = await _start_runner(url)
        try:
            start = time.monotonic()
            sampling = asyncio.ensure_future(_sample(engine, start, every, samples))
            try:
                sent, _ = await pacing.produce(
                    engine, rate=RATE, batch=BATCH, stop_at=start + duration
                )
                await asyncio.sleep(max(0.0, start + duration - time.monotonic()))
            finally:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
            end = await _sizes(engine, time.monotonic() - start)
            samples.append(end)
            left = await pacing.drained(partial(_queued, engine), DRAIN_LIMIT)
        finally:
            runner.send_signal(signal.SIGTERM)
            await runner.wait()
            await log
    finally:
        await database.truncate(engine)
        await engine.dispose()
    if left:
        raise SystemExit(f"benchmarks: churn left {left} tasks unprocessed after {DRAIN_LIMIT} s")
    at_mark = next(s for s in samples if s.seconds >= mark)
    _print_minutes(samples, 1.0 if quick else 60.0)
    producer = f"producer, paced at {RATE:,}/s (enqueue_many of {BATCH})"
    return [
        measure.Row(producer, sent, (end.seconds,)),
        measure.Row(
            "runner 1x50 draining it",
            sent - end.queued,
            (end.seconds,),
            baselines=(producer,),
            notes={
                "size ratio, end / first minute": round(end.total_bytes / at_mark.total_bytes, 2),
                "total MiB after the first minute": round(at_mark.total_bytes / 2**20, 2),
                "total MiB at the end": round(end.total_bytes / 2**20, 2),
                "table MiB at the end": round(end.table_bytes / 2**20, 2),
                "index MiB at the end": round(end.index_bytes / 2**20, 2),
                "most dead tuples seen": float(max(s.dead_tuples for s in samples)),
                "most tasks queued seen": float(max(s.queued for s in samples)),
                "autovacuum runs": float(end.autovacuums - samples[0].autovacuums),
                "unprocessed tasks": float(left),
            },
            series={
                "seconds": tuple(s.seconds for s in samples),
                "table_bytes": tuple(float(s.table_bytes) for s in samples),
                "index_bytes": tuple(float(s.index_bytes) for s in samples),
                "total_bytes": tuple(float(s.total_bytes) for s in samples),
                "dead_tuples": tuple(float(s.dead_tuples) for s in samples),
                "queued": tuple(float(s.queued) for s in samples),
            },
        ),
    ]


async def _start_runner(url: str) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
    """The runner, once its worker has started; and the task that keeps reading its log."""
    runner = await database.start_runner(
        url, "--workers", "1", "--concurrency", "50", "--log-level", "INFO"
    )
    assert runner.stderr is not None
    started = asyncio.Event()

    async def read(stream: asyncio.StreamReader) -> None:
        # Keep reading to the end: a full pipe would block the runner's logging.
        while line := await stream.readline():
            if b"sqlatasks.worker: started" in line:
                started.set()
            elif b" WARNING " in line or b" ERROR " in line:
                print(f"  runner: {line.decode().rstrip()}", flush=True)

    log = asyncio.ensure_future(read(runner.stderr))
    await asyncio.wait_for(started.wait(), timeout=60)
    return runner, log


async def _sample(engine: AsyncEngine, start: float, every: float, into: list[Sample]) -> None:
    while True:
        into.append(await _sizes(engine, time.monotonic() - start))
        await asyncio.sleep(every)


async def _sizes(engine: AsyncEngine, seconds: float) -> Sample:
    async with engine.connect() as conn:
        row = (await conn.execute(_SIZES)).one()
    return Sample(round(seconds, 2), *(int(value) for value in row))


def _print_minutes(samples: list[Sample], step: float) -> None:
    print(f"  {'t (s)':>6} {'table KiB':>10} {'index KiB':>10} {'dead tuples':>12} {'queued':>7}")
    shown, next_at = [], 0.0
    for sample in samples:
        if sample.seconds >= next_at:
            shown.append(sample)
            next_at += step
    if shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    for s in shown:
        print(
            f"  {s.seconds:6.0f} {s.table_bytes // 1024:10,} {s.index_bytes // 1024:10,}"
            f" {s.dead_tuples:12,} {s.queued:7,}"
        )


async def _queued(engine: AsyncEngine) -> int:
    return (await _sizes(engine, 0)).queued
