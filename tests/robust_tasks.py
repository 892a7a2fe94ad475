"""Tasks for tests/test_robust_tasks.py: tasks that misbehave in ways a worker must survive.
Each execution writes its `start` (and `end`, if it gets there) to the ledger
(tests/ledger.py)."""

from __future__ import annotations

import asyncio
import time

import anyio
import anyio.lowlevel
from pydantic import BaseModel

from sqlatasks import task
from tests import ledger


class Job(BaseModel):
    key: int


@task
async def record(data: Job) -> None:
    ledger.write("start", data.key)
    await anyio.sleep(0.1)
    ledger.write("end", data.key)


@task(retry_delay=0, max_attempts=3)
async def raises_cancelled(data: Job) -> None:
    """Raises a cancellation that no scope of the runner issued."""
    ledger.write("start", data.key)
    raise asyncio.CancelledError()


@task(retry_delay=0, max_attempts=2)
async def cancelled_elsewhere(data: Job) -> None:
    """Meets a cancellation it did not ask for, one of three ways (by key % 3)."""
    ledger.write("start", data.key)
    if data.key % 3 == 0:  # awaits a future that other code cancels
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, future.cancel)
        await future
    elif data.key % 3 == 1:  # awaits an asyncio task that other code cancels
        inner = asyncio.ensure_future(asyncio.sleep(5))
        asyncio.get_running_loop().call_later(0.01, inner.cancel)
        await inner
    else:  # cancels its own asyncio task
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        await anyio.sleep(5)
    ledger.write("end", data.key)


@task(timeout=0.5, max_attempts=1)
async def sleeps_past_its_timeout(data: Job) -> None:
    """Cancelled by its deadline, as any task: the worker's own cancellation still works."""
    ledger.write("start", data.key)
    await anyio.sleep(30)
    ledger.write("end", data.key)


@task(retry_delay=0)
async def fails_at_once(data: Job) -> None:
    """Fails every time, due again at once: it runs until it is cancelled."""
    ledger.write("start", data.key)
    await anyio.lowlevel.checkpoint()
    raise RuntimeError(f"job {data.key} fails")


@task(retry_delay=0)
async def fails_when_released(data: Job) -> None:
    ledger.write("start", data.key)
    await ledger.gate(f"release-{data.key}", timeout=120)
    ledger.write("failing", data.key)
    raise RuntimeError(f"job {data.key} fails")


@task(timeout=0.5, max_attempts=1)
async def overruns(data: Job) -> None:
    """Ignores its cancellation (shielded) long past its time limit."""
    ledger.write("start", data.key)
    with anyio.CancelScope(shield=True):
        await anyio.sleep(120)
    ledger.write("end", data.key)


@task(timeout=1, max_attempts=1)
async def blocks_the_loop(data: Job) -> None:
    """Blocks its worker's event loop far past its time limit: no heartbeat, no cancellation."""
    ledger.write("start", data.key)
    time.sleep(120)  # noqa: ASYNC251 - the point: a task that blocks the loop


@task(timeout=150, max_attempts=1)
async def until_released(data: Job) -> None:
    ledger.write("start", data.key)
    await ledger.gate(f"release-{data.key}", timeout=120)
    ledger.write("end", data.key)


HUGE = 20 * 1024 * 1024


@task(max_attempts=1)
async def huge_error(data: Job) -> None:
    ledger.write("start", data.key)
    raise ValueError("HEAD" + "x" * HUGE + "TAIL")
