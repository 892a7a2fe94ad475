"""Tasks for the lease renewal tests. The module also declares a task with a one-hour timeout:
before leases were renewed, every claim of a runner importing it held its task for over an
hour."""

from __future__ import annotations

import anyio

from sqlatasks import task
from tests import ledger
from tests.runner_tasks import Job


@task(timeout=3600)
async def hour_long(data: Job) -> None:
    """Never enqueued here: its timeout is the longest any task of this module has."""
    await anyio.sleep(data.sleep)


@task(timeout=600)
async def hangs_first_time(data: Job) -> None:
    """The first execution for a key never ends (until its runner dies); later ones finish."""
    ledger.write("start", data.key)
    if ledger.first_time(f"hung-{data.key}"):
        await anyio.sleep_forever()
    ledger.write("end", data.key)


@task(timeout=600)
async def sleeps(data: Job) -> None:
    ledger.write("start", data.key)
    await anyio.sleep(data.sleep)
    ledger.write("end", data.key)
