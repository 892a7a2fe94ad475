"""Tasks the runner tests run. Each execution appends one line to a ledger file of its own
process (SQLATASKS_TEST_LEDGER directory): evidence that lives outside the queue."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
from pydantic import BaseModel

from sqlatasks import Snooze, task


class Job(BaseModel):
    key: int
    sleep: float = 0.0


def _ledger(event: str, data: Job) -> None:
    folder = Path(os.environ["SQLATASKS_TEST_LEDGER"])
    line = f"{event} {data.key} {os.getpid()} {time.time():.6f}\n"
    # One short O_APPEND write per event: atomic, and safe across processes.
    fd = os.open(folder / f"{os.getpid()}.ledger", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@task
async def record(data: Job) -> None:
    _ledger("start", data)
    await anyio.sleep(data.sleep)
    _ledger("end", data)


def _first_time(what: str, data: Job) -> bool:
    """True on the first call for this key (a marker file remembers, across processes)."""
    marker = Path(os.environ["SQLATASKS_TEST_LEDGER"], f"{what}-{data.key}")
    if marker.exists():
        return False
    marker.touch()
    return True


def _fail_first_time(data: Job) -> None:
    """Fails on the first execution for each key, succeeds after."""
    _ledger("start", data)
    if _first_time("failed", data):
        raise RuntimeError(f"first try for {data.key} fails")
    _ledger("end", data)


@task(retry_delay=0.5)
async def fail_once(data: Job) -> None:
    _fail_first_time(data)


@task
async def fail_once_default(data: Job) -> None:
    """No retry_delay of its own: the runner's --retry-delay applies."""
    _fail_first_time(data)


@task(retry_delay=0.2, max_attempts=3)
async def always_fail(data: Job) -> None:
    _ledger("start", data)
    raise ValueError(f"job {data.key} is broken")


@task(timeout=0.5, retry_delay=60)
async def too_slow(data: Job) -> None:
    _ledger("start", data)
    await anyio.sleep(30)
    _ledger("end", data)


@task(timeout=0.5, retry_delay=60)
async def swallows_cancel(data: Job) -> None:
    _ledger("start", data)
    try:  # noqa: SIM105
        await anyio.sleep(30)
    except BaseException:
        pass  # a badly written task: it ignores its cancellation and returns
    _ledger("end", data)


@task(retry_delay=60)
async def calls_exit(data: Job) -> None:
    """A task that calls sys.exit, as a CLI library inside it might."""
    _ledger("start", data)
    raise SystemExit(3)


@task(retry_delay=60)
async def nul_in_error(data: Job) -> None:
    _ledger("start", data)
    raise ValueError("reply was b'\x00\x01' and \udcff")


@task
async def not_yet(data: Job) -> None:
    """Asks to run again in 0.5 s the first time (not a failure), then finishes."""
    _ledger("start", data)
    if _first_time("snoozed", data):
        raise Snooze(after=0.5)
    _ledger("end", data)


@task
async def until_released(data: Job) -> None:
    """Runs until the test creates the file `release-<key>` in the ledger folder."""
    _ledger("start", data)
    marker = anyio.Path(os.environ["SQLATASKS_TEST_LEDGER"], f"release-{data.key}")
    with anyio.fail_after(60):
        while not await marker.exists():
            await anyio.sleep(0.05)
    _ledger("end", data)


@task(retry_delay=0)
async def fail_once_now(data: Job) -> None:
    """Fails the first time and is due again at once."""
    _fail_first_time(data)


@task(retry_delay=0.2)
async def dies_once(data: Job) -> None:
    """Kills its own worker on the first execution for each key (a segfault, an OOM kill)."""
    _ledger("start", data)
    if _first_time("died", data):
        os.kill(os.getpid(), signal.SIGKILL)
    _ledger("end", data)


@task(timeout=5, retry_delay=60)
async def takes_its_time(data: Job) -> None:
    """Longer than a 1 s --task-timeout, well within its own 5 s."""
    await anyio.sleep(data.sleep)
