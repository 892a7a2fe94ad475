"""A producer paced to a rate, and the wait for a runner to drain what it sent: shared by the
scenarios that run the runner against a steady load (`churn`, `finished_size`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from benchmarks.noop import Nothing, noop
from sqlatasks import enqueue_many, errors


async def produce(engine: AsyncEngine, *, rate: int, batch: int, stop_at: float) -> tuple[int, int]:
    """Enqueue no-op tasks at `rate` per second, `enqueue_many` of `batch` at a time, until
    `time.monotonic()` reaches `stop_at`. Returns (tasks sent, batches the server refused and
    that were sent again: on a shared server another database's transaction can fill the lock
    table for a while)."""
    sessions = async_sessionmaker(engine)
    start, sent, refused = time.monotonic(), 0, 0
    while (now := time.monotonic()) < stop_at:
        due = int((now - start) * rate) - sent
        if due < batch:
            await asyncio.sleep((sent + batch) / rate - (now - start))
            continue
        count = min(due, 10 * batch)  # behind: catch up, in bounded batches
        try:
            async with sessions() as session, session.begin():
                await enqueue_many(session, noop, (Nothing(i=sent + i) for i in range(count)))
        except SQLAlchemyError as exc:
            refused += 1
            print(f"  producer: batch refused ({errors.one_line(exc)}); again", flush=True)
            await asyncio.sleep(0.5)
            continue
        sent += count
    return sent, refused


async def drained(queued: Callable[[], Awaitable[int]], limit: float) -> int:
    """Poll `queued()` (tasks left in the queue) until it is 0, at most `limit` seconds; the
    tasks left."""
    deadline = time.monotonic() + limit
    while (left := await queued()) and time.monotonic() < deadline:  # noqa: ASYNC110 (polls the database)
        await asyncio.sleep(0.2)
    return left
