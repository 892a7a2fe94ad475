"""`enqueue_bulk`: many tasks in one transaction, `enqueue_many` against a raw COPY.

- raw asyncpg: `copy_records_to_table` of tuples built beforehand, the limit;
- sqlatasks: `await enqueue_many(session, send_email, <generator of EmailInput>)` and commit,
  as an application writes it (building and validating each model is part of the cost);
- sqlatasks with the models built beforehand, which separates what enqueue_many itself costs
  from what making the pydantic models costs.

Peak RSS growth while streaming the generator is measured once, first, on Linux by restarting
the process's peak count (/proc/self/clear_refs) and reading VmHWM.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from itertools import islice

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from benchmarks import database, measure
from examples.app import EmailInput, send_email
from sqlatasks import enqueue_many
from sqlatasks.models import TABLE_NAME

OPERATIONS, QUICK_OPERATIONS = 100_000, 10_000
WARMUP = 1000
ROUNDS, QUICK_ROUNDS = 5, 3

RAW = "raw asyncpg COPY (pre-built tuples)"
STREAMED = "enqueue_many (generator of EmailInput)"
PREBUILT = "enqueue_many (list of EmailInput)"

_COLUMNS = ("task_name", "queue", "priority", "payload")


def _payloads(n: int) -> Iterator[EmailInput]:
    return (EmailInput(to=f"user{i}@example.com", subject="hi") for i in range(n))


async def run(url: str, quick: bool) -> list[measure.Row]:
    operations = QUICK_OPERATIONS if quick else OPERATIONS
    engine = create_async_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    raw = await database.raw_connection(url)
    try:

        async def streamed(n: int) -> None:
            async with sessions() as session, session.begin():
                await _enqueue(session, _payloads(n), n)

        before = measure.memory_mark()
        await streamed(operations)
        streaming_growth = measure.memory_peak() - before
        await database.truncate(engine)

        before = measure.memory_mark()
        records = [
            (
                send_email.name,
                send_email.queue,
                0,
                json.dumps({"to": f"user{i}@example.com", "subject": "hi"}),
            )
            for i in range(operations)
        ]
        models = list(_payloads(operations))
        prebuilt_growth = measure.memory_peak() - before

        async def raw_copy(n: int) -> None:
            async with raw.transaction():
                await raw.copy_records_to_table(
                    TABLE_NAME, records=islice(records, n), columns=_COLUMNS
                )

        async def prebuilt(n: int) -> None:
            async with sessions() as session, session.begin():
                await _enqueue(session, islice(models, n), n)

        variants = [
            measure.Variant(RAW, raw_copy, operations, WARMUP),
            measure.Variant(STREAMED, streamed, operations, WARMUP, baselines=(RAW,)),
            measure.Variant(PREBUILT, prebuilt, operations, WARMUP, baselines=(RAW, STREAMED)),
        ]
        rows = await measure.measure(
            variants,
            rounds=QUICK_ROUNDS if quick else ROUNDS,
            reset=lambda: database.truncate(engine),
        )
    finally:
        await raw.close()
        await engine.dispose()
    notes = {
        STREAMED: {"peak RSS growth, first run (MiB)": streaming_growth},
        RAW: {"peak RSS growth, building the tuples and the models (MiB)": prebuilt_growth},
    }
    return [dataclasses.replace(row, notes=notes.get(row.name, {})) for row in rows]


async def _enqueue(session: AsyncSession, payloads: Iterator[EmailInput], expected: int) -> None:
    count = await enqueue_many(session, send_email, payloads)
    if count != expected:
        raise RuntimeError(f"enqueue_many reported {count} tasks, expected {expected}")
