"""Tasks of the status tests (tests/test_status.py, tests/test_status_runner.py): kept ones that
return results, a session task, one that waits on a gate, one that fails for good."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import current_task, enqueue, task
from tests import ledger


class Export(BaseModel):
    rows: int
    gate: str | None = None


class ExportDone(BaseModel):
    url: str
    rows: int


@task(keep=3600)
async def export(data: Export) -> ExportDone:
    if data.gate is not None:
        ledger.write("waiting", data.rows)
        await ledger.gate(data.gate)
    return ExportDone(url=f"s3://exports/{data.rows}.csv", rows=data.rows)


@task(keep=1)
async def short_lived(data: Export) -> int:
    return data.rows * 2


@task
async def unkept(data: Export) -> int:
    return data.rows


@task(keep=3600, max_attempts=1)
async def broken(data: Export) -> None:
    raise ValueError(f"cannot export {data.rows} rows")


@task(keep=3600)
async def export_in_session(data: Export, session: AsyncSession) -> ExportDone:
    """Writes a row and returns a result: both commit with the task's row, or neither."""
    await session.execute(
        text("INSERT INTO status_exports (rows) VALUES (:rows)"), {"rows": data.rows}
    )
    if data.gate == "lose-lease":  # the lease passes to another claim before the commit
        await session.execute(
            text("UPDATE sqlatasks_tasks SET lease_token = :token WHERE id = :id"),
            {"token": uuid.uuid4(), "id": current_task().id},
        )
    return ExportDone(url="db", rows=data.rows)


@task(keep=3600)
async def export_then_notify(data: Export, session: AsyncSession) -> ExportDone:
    """Chaining: the follow-up task is enqueued in the task's own transaction, so it exists
    if and only if this task completes."""
    session.add(enqueue(export, Export(rows=data.rows + 1)))
    return ExportDone(url="chained", rows=data.rows)


@task(keep=3600)
async def nul_result(data: Export) -> str:
    """Returns text PostgreSQL's jsonb cannot store (a NUL character)."""
    return f"row\x00{data.rows}"
