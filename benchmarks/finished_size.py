"""`finished_size`: does the finished-tasks table stay bounded under churn with a 60 s retention?

A producer paces itself to RATE no-op tasks a second (`enqueue_many` of BATCH, each batch its
own transaction), drained by `python -m sqlatasks.runner --workers 1 --concurrency 50 --keep
60`: every task is kept 60 s in `sqlatasks_finished`, then deleted by the scheduler of worker 0
(each tick, one check interval apart: at most 10 DELETEs of 1,000 rows, oldest first). Every
SAMPLE_EVERY seconds the table's rows, `pg_total_relation_size` (heap, indexes, TOAST) and
dead row versions (`pg_stat_user_tables.n_dead_tup`) are sampled, for `--minutes` (default
10). The figures: the size at the end over the size half-way (1.0 when the size has levelled
off; 2.0 when it grows in step with the work done), and the rows at the end against RATE x
KEEP (what one retention time of work holds).

Pruning DELETEs leave dead row versions; only VACUUM makes their space reusable. With
autovacuum on, the table's own thresholds (schema v4: 10,000 dead rows, no scale factor) vacuum
it every few seconds of churn; with autovacuum off (a server set so), nothing does, and the
size keeps growing with every task ever kept: that is what this scenario shows on such a server.
Quick: 8 seconds, a 2 s retention, sampled every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from functools import partial

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from benchmarks import database, measure, pacing
from benchmarks.noop import Nothing, noop
from sqlatasks import enqueue_many
from sqlatasks.models import FINISHED_TABLE_NAME, TABLE_NAME

RATE = 500
"""Tasks per second, in and out (half of `churn`'s: the machine runs two such loads at once
when both scenarios are compared)."""
BATCH = 20
MINUTES = 10.0
KEEP, QUICK_KEEP = 60, 2
SAMPLE_EVERY, QUICK_SAMPLE_EVERY = 30.0, 1.0
QUICK_SECONDS = 8.0
DRAIN_LIMIT = 120.0
"""Seconds the runner gets to empty the queue after the producer stops (an anti-hang bound)."""

_SAMPLE = text(f"""
SELECT (SELECT count(*) FROM {FINISHED_TABLE_NAME}),
       pg_total_relation_size('{FINISHED_TABLE_NAME}'),
       coalesce(s.n_dead_tup, 0), coalesce(s.autovacuum_count, 0),
       (SELECT count(*) FROM {TABLE_NAME})
FROM pg_stat_user_tables AS s WHERE s.relname = '{FINISHED_TABLE_NAME}'
""")


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    rows: int
    total_bytes: int
    dead_tuples: int
    autovacuums: int
    queued: int


async def run(url: str, quick: bool, minutes: float = MINUTES) -> list[measure.Row]:
    duration = QUICK_SECONDS if quick else minutes * 60
    keep = QUICK_KEEP if quick else KEEP
    every = QUICK_SAMPLE_EVERY if quick else SAMPLE_EVERY
    engine = create_async_engine(url)
    samples: list[Sample] = []
    try:
        await _empty(engine)
        flags = ("--keep", str(keep), "--check-interval", "1" if quick else "5")
        runner = await database.start_runner(
            url, "--workers", "1", "--concurrency", "50", *flags, log=False
        )
        try:
            await _wait_for_worker(engine)
            start = time.monotonic()
            sampling = asyncio.ensure_future(_sample(engine, start, every, samples))
            try:
                sent, refused = await pacing.produce(
                    engine, rate=RATE, batch=BATCH, stop_at=start + duration
                )
            finally:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
            samples.append(end := await _take(engine, time.monotonic() - start))
            left = await pacing.drained(partial(_queued, engine), DRAIN_LIMIT)
        finally:
            runner.send_signal(signal.SIGTERM)
            await runner.wait()
    finally:
        await _empty(engine)
        await engine.dispose()
    if left:
        raise SystemExit(f"benchmarks: finished_size left {left} tasks after {DRAIN_LIMIT} s")
    half = next(s for s in samples if s.seconds >= end.seconds / 2)
    producer = f"producer, paced at {RATE:,}/s; runner 1x50 --keep {keep}"
    notes: dict[str, float | str] = {
        "size ratio, end / half-way": round(end.total_bytes / half.total_bytes, 2),
        "MiB half-way": round(half.total_bytes / 2**20, 2),
        "MiB at the end": round(end.total_bytes / 2**20, 2),
        "rows at the end": float(end.rows),
        "rows in one retention time (rate x keep)": float(RATE * keep),
        "most rows seen": float(max(s.rows for s in samples)),
        "most dead tuples seen": float(max(s.dead_tuples for s in samples)),
        "autovacuum runs": float(end.autovacuums - samples[0].autovacuums),
        "unprocessed tasks": float(left),
        "producer batches refused and sent again": float(refused),
    }
    series = {
        "seconds": tuple(s.seconds for s in samples),
        "rows": tuple(float(s.rows) for s in samples),
        "total_bytes": tuple(float(s.total_bytes) for s in samples),
        "dead_tuples": tuple(float(s.dead_tuples) for s in samples),
    }
    return [measure.Row(producer, sent, (end.seconds,), notes=notes, series=series)]


async def _empty(engine: AsyncEngine) -> None:
    await database.truncate(engine)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {FINISHED_TABLE_NAME}"))


async def _wait_for_worker(engine: AsyncEngine) -> None:
    """Until a worker has claimed a first task: the churn starts on a running runner."""
    async with async_sessionmaker(engine)() as session, session.begin():
        await enqueue_many(session, noop, [Nothing(i=-1)])
    deadline = time.monotonic() + 60
    while (await _take(engine, 0)).queued:
        if time.monotonic() > deadline:
            raise SystemExit("benchmarks: finished_size's runner took no task within 60 s")
        await asyncio.sleep(0.2)


async def _sample(engine: AsyncEngine, start: float, every: float, into: list[Sample]) -> None:
    print(f"  {'t (s)':>6} {'rows':>8} {'MiB':>8} {'dead tuples':>12} {'queued':>7}", flush=True)
    while True:
        sample = await _take(engine, time.monotonic() - start)
        into.append(sample)
        print(
            f"  {sample.seconds:6.0f} {sample.rows:8,} {sample.total_bytes / 2**20:8.2f}"
            f" {sample.dead_tuples:12,} {sample.queued:7,}",
            flush=True,
        )
        await asyncio.sleep(every)


async def _take(engine: AsyncEngine, seconds: float) -> Sample:
    async with engine.connect() as conn:
        row = (await conn.execute(_SAMPLE)).one()
    return Sample(round(seconds, 2), *(int(value) for value in row))


async def _queued(engine: AsyncEngine) -> int:
    return (await _take(engine, 0)).queued
