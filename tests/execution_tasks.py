"""Tasks for tests/test_execution_*.py: tasks that meet their time limit, an operator's
cancel, a lost lease or shutdown in the ways a slot's long-lived cancel scope and the worker's
deadline watchdog (sqlatasks/slots.py, sqlatasks/leases.py) must handle.

Each execution writes to the ledger (tests/ledger.py): `start`; `end` if it ran to its end;
`cancelled` with `after` (seconds since its start, by time.monotonic) if a cancellation
reached it; what else it saw, by event name.
"""

from __future__ import annotations

import asyncio
import contextvars
import time

import anyio
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from examples.app import Order
from sqlatasks import current_task, task
from tests import ledger

RETRY_DELAY = 300
"""Seconds a timed-out attempt waits before its retry: long enough that a test sees the first
attempt's outcome, not a second attempt."""

SEEN: contextvars.ContextVar[int | None] = contextvars.ContextVar("qa_seen", default=None)
"""Set by `sets_context_and_times_out`; `normal` reports what it sees of it."""


class Job(BaseModel):
    key: int
    sleep: float = 0.0


async def _sleep_recording(key: int, seconds: float, started: float) -> None:
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        ledger.write("cancelled", key, after=time.monotonic() - started)
        raise


async def _sleeps(data: Job, *, end_after: bool = False) -> None:
    """Records its start, sleeps `data.sleep` s (recording a cancellation), records its end
    (with the seconds it took when `end_after`): the body of the tasks below that differ only
    in their time limits."""
    started = time.monotonic()
    ledger.write("start", data.key)
    await _sleep_recording(data.key, data.sleep, started)
    if end_after:
        ledger.write("end", data.key, after=time.monotonic() - started)
    else:
        ledger.write("end", data.key)


@task(timeout=60, max_attempts=1)
async def normal(data: Job) -> None:
    """Sleeps `sleep` seconds in five awaits; reports the ContextVar it sees."""
    started = time.monotonic()
    ledger.write("start", data.key, seen=SEEN.get())
    for _ in range(5):
        await _sleep_recording(data.key, data.sleep / 5, started)
    ledger.write("end", data.key, after=time.monotonic() - started)


@task(timeout=30, max_attempts=1)
async def long_limit(data: Job) -> None:
    await _sleeps(data, end_after=True)


@task(timeout=2, retry_delay=RETRY_DELAY, max_attempts=3)
async def two_second_limit(data: Job) -> None:
    await _sleeps(data)


@task(timeout=0.5, retry_delay=RETRY_DELAY, max_attempts=3)
async def half_second_limit(data: Job) -> None:
    await _sleeps(data)


@task(timeout=0.5, retry_delay=RETRY_DELAY, max_attempts=3)
async def swallows_and_returns(data: Job) -> None:
    """Catches its time limit's cancellation and returns: still a timeout (docs/runner.md)."""
    started = time.monotonic()
    ledger.write("start", data.key)
    try:
        await anyio.sleep(30)
    except anyio.get_cancelled_exc_class():
        ledger.write("swallowed", data.key, after=time.monotonic() - started)
        return
    ledger.write("end", data.key)


@task(timeout=0.5, retry_delay=RETRY_DELAY, max_attempts=3)
async def swallows_and_awaits(data: Job) -> None:
    """Catches its cancellation, then awaits again: the cancel must still hold (a scope's
    cancellation is level-triggered), so the next await ends at once."""
    started = time.monotonic()
    ledger.write("start", data.key)
    try:
        await anyio.sleep(30)
    except anyio.get_cancelled_exc_class():
        ledger.write("swallowed", data.key, after=time.monotonic() - started)
    again = time.monotonic()
    try:
        await anyio.sleep(data.sleep)
    except anyio.get_cancelled_exc_class():
        ledger.write("cancelled again", data.key, waited=time.monotonic() - again)
        raise
    ledger.write("end", data.key)


@task(timeout=0.3, retry_delay=RETRY_DELAY, max_attempts=3)
async def blocks_then_awaits(data: Job) -> None:
    """Holds the event loop (a sync call) past its limit, then awaits: cut off there."""
    started = time.monotonic()
    ledger.write("start", data.key)
    time.sleep(data.sleep)  # noqa: ASYNC251 - the point: it holds the event loop
    await _sleep_recording(data.key, 30, started)
    ledger.write("end", data.key)


@task(timeout=0.3, retry_delay=RETRY_DELAY, max_attempts=3)
async def sets_context_and_times_out(data: Job) -> None:
    started = time.monotonic()
    SEEN.set(data.key)
    ledger.write("start", data.key)
    await _sleep_recording(data.key, 30, started)


@task(retry_delay=RETRY_DELAY, max_attempts=3)
async def cancels_itself_and_returns(data: Job) -> None:
    """Asks its own asyncio task (the slot's) to cancel, and returns before any await."""
    ledger.write("start", data.key)
    current = asyncio.current_task()
    assert current is not None
    current.cancel()
    ledger.write("end", data.key)


@task(retry_delay=RETRY_DELAY, max_attempts=3)
async def cancels_itself_next_turn_and_returns(data: Job) -> None:
    """Schedules its own asyncio task's (the slot's) cancellation for the event loop's next
    turn, and returns: the request lands after the task, on whatever the slot awaits next."""
    ledger.write("start", data.key)
    current = asyncio.current_task()
    assert current is not None
    asyncio.get_running_loop().call_soon(current.cancel)
    ledger.write("end", data.key)


@task(retry_delay=RETRY_DELAY, max_attempts=3)
async def cancels_itself_and_swallows(data: Job) -> None:
    """Cancels its own asyncio task, swallows the CancelledError at its next await, returns."""
    ledger.write("start", data.key)
    current = asyncio.current_task()
    assert current is not None
    current.cancel()
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        ledger.write("swallowed", data.key)
    ledger.write("end", data.key)


@task(retry_delay=RETRY_DELAY, max_attempts=3)
async def raises_cancelled(data: Job) -> None:
    ledger.write("start", data.key)
    raise asyncio.CancelledError()


@task(timeout=0.5, retry_delay=RETRY_DELAY, max_attempts=3)
async def session_sleeper(data: Job, session: AsyncSession) -> None:
    """Writes an order in its transaction, then runs past its time limit."""
    started = time.monotonic()
    session.add(Order(email=f"qa{data.key}@example.com", total_cents=data.key))
    await session.flush()
    ledger.write("start", data.key)
    await _sleep_recording(data.key, data.sleep, started)
    ledger.write("end", data.key)


@task(timeout=600, max_attempts=3)
async def waits(data: Job) -> None:
    """Sleeps `sleep` seconds under a long limit (for cancels, lost leases and shutdown)."""
    await _sleeps(data, end_after=True)


@task(timeout=0.5, max_attempts=1)
async def near_its_limit(data: Job) -> None:
    """Sleeps `sleep` seconds, in a few awaits, against a 0.5 s limit; parks if cut off."""
    started = time.monotonic()
    ledger.write("start", data.key)
    for _ in range(3):
        await _sleep_recording(data.key, data.sleep / 3, started)
    ledger.write("end", data.key, after=time.monotonic() - started)


@task(timeout=1, retry_delay=RETRY_DELAY, max_attempts=3)
async def session_commits_late(data: Job, session: AsyncSession) -> None:
    """Writes an order and returns once the test opens its gate; the test then holds the
    task's row, so the DELETE that finishes it (shielded, with the COMMIT) waits past its
    time limit."""
    session.add(Order(email=f"qa{data.key}@example.com", total_cents=data.key))
    await session.flush()
    ledger.write("start", data.key)
    await ledger.gate(f"finish-{data.key}")
    ledger.write("end", data.key)


@task(timeout=5, max_attempts=1)
async def reads_its_deadline(data: Job) -> None:
    """Records the time left before its time limit runs out, as current_task() tells it."""
    left = current_task().deadline - anyio.current_time()
    ledger.write("start", data.key, left=left if left != float("inf") else None)
    ledger.write("end", data.key)
