"""Helpers shared by tests/test_execution_*.py (tasks in tests/execution_tasks.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqlatasks import Task, enqueue
from tests import ledger
from tests.eventually import eventually
from tests.execution_tasks import Job

MODULE = "tests.execution_tasks"


async def put_in_order(engine: AsyncEngine, *jobs: tuple[Task[Any], Job]) -> list[int]:
    """Enqueue `jobs` in one transaction, claimed in this order (falling priorities); their
    ids."""
    async with AsyncSession(engine) as session, session.begin():
        rows = [
            enqueue(fn, job, priority=len(jobs) - index) for index, (fn, job) in enumerate(jobs)
        ]
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]


async def row(engine: AsyncEngine, task_id: int) -> dict[str, Any] | None:
    """The queue row of `task_id` (None when gone), with `due_in`: seconds until it is due."""
    query = text(
        "SELECT attempts, last_error, failed_at, locked_by, lease_token, locked_until, "
        "EXTRACT(EPOCH FROM scheduled_at - now()) AS due_in FROM sqlatasks_tasks WHERE id = :id"
    )
    async with engine.connect() as conn:
        found = (await conn.execute(query, {"id": task_id})).mappings().one_or_none()
    return dict(found) if found is not None else None


async def wait_for_row(
    engine: AsyncEngine, task_id: int, what: str, timeout: float = 60
) -> dict[str, Any]:
    """Wait until `task_id`'s row has an outcome written: unleased, `last_error` set."""
    found = await eventually(
        lambda: row(engine, task_id),
        # Gone: it completed (or was cancelled), which no caller of this expects.
        lambda r: r is None or (r["lease_token"] is None and r["last_error"] is not None),
        what=what,
        timeout=timeout,
    )
    assert found is not None, f"task {task_id} was deleted (completed) while waiting for {what}"
    return found


async def wait_gone(engine: AsyncEngine, task_id: int, what: str, timeout: float = 60) -> None:
    await eventually(lambda: row(engine, task_id), lambda r: r is None, what=what, timeout=timeout)


def events_of(folder: Path, key: int) -> list[str]:
    return [e.event for e in ledger.entries(folder) if e.key == key]


def entry(folder: Path, event: str, key: int) -> ledger.Entry:
    (found,) = [e for e in ledger.entries(folder, event) if e.key == key]
    return found


def assert_timed_out(found: dict[str, Any], limit: str) -> None:
    """A first attempt that failed by its time limit: counted, kept, due after its delay."""
    assert found["attempts"] == 1, found
    assert found["failed_at"] is None, found
    assert str(found["last_error"]).startswith(f"TimeoutError: exceeded its {limit} s limit"), found
    assert float(found["due_in"]) > 200, found  # RETRY_DELAY (300 s), not at once
