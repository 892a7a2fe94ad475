"""Tasks for tests/test_metrics.py: quick ones, two of which fail their first attempt."""

from __future__ import annotations

import anyio
from pydantic import BaseModel

from sqlatasks import current_task, task
from tests import ledger


class Number(BaseModel):
    n: int


@task(queue="metered")
async def metered(payload: Number) -> None:
    await anyio.sleep(0.05)
    ledger.write("metered", payload.n)
    if payload.n < 2 and current_task().attempt == 1:
        raise RuntimeError(f"{payload.n} fails once")
