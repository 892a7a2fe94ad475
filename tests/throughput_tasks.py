"""Tasks for tests/test_throughput.py: what a long-lived execution slot must outlive, and what
the worker's event loop is. Each writes its `end` (or `loop`) to the ledger (tests/ledger.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from pydantic import BaseModel

from sqlatasks import task
from tests import ledger


class Job(BaseModel):
    key: int


@task
async def record(data: Job) -> None:
    await anyio.sleep(0.01)
    ledger.write("end", data.key)


@task(max_attempts=1)
async def cancels_itself_and_returns(data: Job) -> None:
    """Asks for its own asyncio task's cancellation, then returns before it is delivered."""
    current = asyncio.current_task()
    assert current is not None
    current.cancel()
    ledger.write("end", data.key)


@task(max_attempts=1)
async def swallows_its_own_cancel(data: Job) -> None:
    """Cancels its own asyncio task, catches the cancellation, and returns."""
    current = asyncio.current_task()
    assert current is not None
    current.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(5)
    ledger.write("end", data.key)


@task(timeout=0.5, max_attempts=1)
async def sleeps_past_its_timeout(data: Job) -> None:
    ledger.write("start", data.key)
    await anyio.sleep(30)
    ledger.write("end", data.key)


@task
async def loop_kind(data: Job) -> None:
    loop = asyncio.get_running_loop()
    ledger.write("loop", data.key, module=type(loop).__module__)


async def cancels_after_the_task(run: Any, call_next: Callable[[], Awaitable[None]]) -> None:
    """Middleware (--middleware tests.throughput_tasks:cancels_after_the_task) that leaves a
    cancel request on the asyncio task that ran it, after every task."""
    await call_next()
    current = asyncio.current_task()
    assert current is not None
    current.cancel()
