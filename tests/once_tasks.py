"""Session tasks for the exactly-once tests: each execution inserts one row into `effects`
(a table each test creates) through the session the runner passes, and may fail, wait or
steal its own lease around that write. The `effects` rows are the evidence here; the ledger
(tests/ledger.py) only tells the test when a write happened."""

from __future__ import annotations

import os

import anyio
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import current_task, task
from tests import ledger

EFFECTS_DDL = """
CREATE TABLE effects (
    task_key int NOT NULL,   -- no unique key: a second effect must show, not fail
    attempt int NOT NULL,
    pid int NOT NULL
)
"""


class Effect(BaseModel):
    key: int
    before: float = 0.0
    """Seconds to sleep before the write."""
    after: float = 0.0
    """Seconds to sleep after the write, before returning."""
    fail_first: bool = False
    """Raise after the write (and after session.commit()) on the first attempt."""
    steal_lease: bool = False
    """Give the row a new lease token in the task's own transaction, as another claim would."""
    wait_for: str | None = None
    """After the write, wait for the test to open the gate of this name (ledger.open_gate)."""


@task(retry_delay=0)
async def write_effect(data: Effect, session: AsyncSession) -> None:
    run = current_task()
    await anyio.sleep(data.before)
    await session.execute(
        text("INSERT INTO effects (task_key, attempt, pid) VALUES (:key, :attempt, :pid)"),
        {"key": data.key, "attempt": run.attempt, "pid": os.getpid()},
    )
    if data.steal_lease:
        await session.execute(
            text("UPDATE sqlatasks_tasks SET lease_token = gen_random_uuid() WHERE id = :id"),
            {"id": run.id},
        )
    if data.wait_for is not None:
        ledger.write("wrote", data.key)
        await ledger.gate(data.wait_for, timeout=3600)  # bounded by the task's time limit
    await anyio.sleep(data.after)
    if data.fail_first and run.attempt == 1:
        await session.commit()  # a SAVEPOINT release: it cannot end the runner's transaction
        raise RuntimeError(f"effect {data.key}: the first attempt fails after writing")
