"""Tasks the runner tests run. Each execution writes its `start` and `end` to the ledger
(tests/ledger.py): evidence that lives outside the queue."""

from __future__ import annotations

import os
import signal

import anyio
from pydantic import BaseModel

from sqlatasks import Snooze, task
from tests import ledger


class Job(BaseModel):
    key: int
    sleep: float = 0.0


@task
async def record(data: Job) -> None:
    ledger.write("start", data.key)
    await anyio.sleep(data.sleep)
    ledger.write("end", data.key)


def _fail_first_time(data: Job) -> None:
    """Fails on the first execution for each key, succeeds after."""
    ledger.write("start", data.key)
    if ledger.first_time(f"failed-{data.key}"):
        raise RuntimeError(f"first try for {data.key} fails")
    ledger.write("end", data.key)


@task(retry_delay=0.5)
async def fail_once(data: Job) -> None:
    _fail_first_time(data)


@task
async def fail_once_default(data: Job) -> None:
    """No retry_delay of its own: the runner's --retry-delay applies."""
    _fail_first_time(data)


@task(retry_delay=0.2, max_attempts=3)
async def always_fail(data: Job) -> None:
    ledger.write("start", data.key)
    raise ValueError(f"job {data.key} is broken")


@task(timeout=0.5, retry_delay=60)
async def too_slow(data: Job) -> None:
    ledger.write("start", data.key)
    await anyio.sleep(30)
    ledger.write("end", data.key)


@task(timeout=0.5, retry_delay=60)
async def swallows_cancel(data: Job) -> None:
    ledger.write("start", data.key)
    try:  # noqa: SIM105
        await anyio.sleep(30)
    except BaseException:
        pass  # a badly written task: it ignores its cancellation and returns
    ledger.write("end", data.key)


@task(retry_delay=60)
async def calls_exit(data: Job) -> None:
    """A task that calls sys.exit, as a CLI library inside it might."""
    ledger.write("start", data.key)
    raise SystemExit(3)


@task(retry_delay=60)
async def nul_in_error(data: Job) -> None:
    ledger.write("start", data.key)
    raise ValueError("reply was b'\x00\x01' and \udcff")


@task
async def not_yet(data: Job) -> None:
    """Asks to run again in 0.5 s the first time (not a failure), then finishes."""
    ledger.write("start", data.key)
    if ledger.first_time(f"snoozed-{data.key}"):
        raise Snooze(after=0.5)
    ledger.write("end", data.key)


@task
async def until_released(data: Job) -> None:
    """Runs until the test opens the gate `release-<key>` (ledger.open_gate)."""
    ledger.write("start", data.key)
    await ledger.gate(f"release-{data.key}")
    ledger.write("end", data.key)


@task(retry_delay=0)
async def fail_once_now(data: Job) -> None:
    """Fails the first time and is due again at once."""
    _fail_first_time(data)


@task(retry_delay=0.2)
async def dies_once(data: Job) -> None:
    """Kills its own worker on the first execution for each key (a segfault, an OOM kill)."""
    ledger.write("start", data.key)
    if ledger.first_time(f"died-{data.key}"):
        os.kill(os.getpid(), signal.SIGKILL)
    ledger.write("end", data.key)


@task(timeout=5, retry_delay=60)
async def takes_its_time(data: Job) -> None:
    """Longer than a 1 s --task-timeout, well within its own 5 s."""
    await anyio.sleep(data.sleep)
