"""Tasks for tests/test_robust_tasks.py: tasks that misbehave in ways a worker must survive.
Each execution appends a line to a ledger file of its own process (the format of
tests/runner_tasks.py, read by tests.processes.ledger_entries)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import anyio
from pydantic import BaseModel

from sqlatasks import task


class Job(BaseModel):
    key: int


def _ledger(event: str, data: Job) -> None:
    folder = Path(os.environ["SQLATASKS_TEST_LEDGER"])
    line = f"{event} {data.key} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(folder / f"{os.getpid()}.ledger", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def _released(data: Job) -> None:
    """Return once the test creates the file `release-<key>` in the ledger folder."""
    marker = anyio.Path(os.environ["SQLATASKS_TEST_LEDGER"], f"release-{data.key}")
    with anyio.fail_after(120):
        while not await marker.exists():
            await anyio.sleep(0.05)


@task
async def record(data: Job) -> None:
    _ledger("start", data)
    await anyio.sleep(0.1)
    _ledger("end", data)


@task(retry_delay=0, max_attempts=3)
async def raises_cancelled(data: Job) -> None:
    """Raises a cancellation that no scope of the runner issued."""
    _ledger("start", data)
    raise asyncio.CancelledError()


async def _cancelled_child() -> None:
    raise anyio.get_cancelled_exc_class()()


@task(retry_delay=0, max_attempts=2)
async def cancelled_elsewhere(data: Job) -> None:
    """Meets a cancellation it did not ask for, one of three ways (by key % 3)."""
    _ledger("start", data)
    if data.key % 3 == 0:  # awaits a future that other code cancels
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, future.cancel)
        await future
    elif data.key % 3 == 1:  # a nested task group whose child raises a cancellation
        async with anyio.create_task_group() as group:
            group.start_soon(_cancelled_child)
            await anyio.sleep(5)
    else:  # cancels its own asyncio task
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        await anyio.sleep(5)
    _ledger("end", data)


@task(timeout=0.5, max_attempts=1)
async def sleeps_past_its_timeout(data: Job) -> None:
    """Cancelled by its deadline, as any task: the worker's own cancellation still works."""
    _ledger("start", data)
    await anyio.sleep(30)
    _ledger("end", data)


@task(retry_delay=0)
async def fails_at_once(data: Job) -> None:
    """Fails every time, due again at once: it runs until it is cancelled."""
    _ledger("start", data)
    await anyio.sleep(0)
    raise RuntimeError(f"job {data.key} fails")


@task(retry_delay=0)
async def fails_when_released(data: Job) -> None:
    _ledger("start", data)
    await _released(data)
    raise RuntimeError(f"job {data.key} fails")


@task(timeout=0.5, max_attempts=1)
async def overruns(data: Job) -> None:
    """Ignores its cancellation (shielded) long past its time limit."""
    _ledger("start", data)
    with anyio.CancelScope(shield=True):
        await anyio.sleep(120)
    _ledger("end", data)


@task(timeout=150, max_attempts=1)
async def until_released(data: Job) -> None:
    _ledger("start", data)
    await _released(data)
    _ledger("end", data)


HUGE = 20 * 1024 * 1024


@task(max_attempts=1)
async def huge_error(data: Job) -> None:
    _ledger("start", data)
    raise ValueError("HEAD" + "x" * HUGE + "TAIL")
