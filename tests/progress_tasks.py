"""Tasks of the progress tests (tests/test_progress.py, tests/test_progress_runner.py): ones that
report progress step by step, as fast as they can, after losing their lease, then fail or
return."""

from __future__ import annotations

import time

import anyio
from pydantic import BaseModel

from sqlatasks import current_task, task
from tests import ledger


class Steps(BaseModel):
    steps: int = 3
    reports: int = 0


class Done(BaseModel):
    done: int
    of: int


@task(keep=3600)
async def stepwise(data: Steps) -> int:
    """Reports each step, then waits until the test has seen it (gate `seen-<step>`)."""
    for step in range(1, data.steps + 1):
        current_task().report(Done(done=step, of=data.steps))
        await ledger.gate(f"seen-{step}")
    return data.steps


@task
async def chatty(data: Steps) -> None:
    """Reports 1, 2, … `reports` as fast as it can, waits until the test has seen the last
    one written (gate `last-seen`), and ledgers the seconds from its first report to then."""
    run = current_task()
    first = time.monotonic()
    for value in range(1, data.reports + 1):
        run.report(value)
        await anyio.sleep(0.002)
    await ledger.gate("last-seen")
    ledger.write("span", seconds=time.monotonic() - first)


@task
async def loses_lease(data: Steps) -> None:
    """Reports "before"; once the test has passed its lease to another claim (gate
    `taken-over`), reports "after" and runs on until cancelled."""
    run = current_task()
    run.report("before")
    await ledger.gate("taken-over")
    run.report("after")
    ledger.write("reported-after")
    await anyio.sleep(3600)


@task(max_attempts=1)
async def reports_then_fails(data: Steps) -> None:
    for step in range(1, data.steps + 1):
        current_task().report(Done(done=step, of=data.steps))
    raise ValueError("failed after its last step")


@task(keep=3600)
async def reports_then_returns(data: Steps) -> int:
    for step in range(1, data.steps + 1):
        current_task().report({"done": step})
    return data.steps
