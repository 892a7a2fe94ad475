"""Progress, fast tier: what `report()` accepts, `run_pending` writing the last value, the
progress statement's lease rule, and where progress is shown (docs/status.md#progress)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqlatasks import ProgressError, TaskRun, enqueue, get_task
from sqlatasks.context import PROGRESS_LIMIT
from sqlatasks.dashboard import create_app
from sqlatasks.sql import claim
from sqlatasks.testing import run_pending
from tests import progress_tasks as t

pytestmark = pytest.mark.anyio


def _run(sink: list[str]) -> TaskRun:
    return TaskRun(1, "reporter", "default", 1, None, uuid.uuid4(), on_report=sink.append)


async def test_report_takes_small_json_and_refuses_the_rest() -> None:
    sink: list[str] = []
    run = _run(sink)
    run.report(t.Done(done=1, of=2))
    run.report({"pct": float("nan")})
    run.report("x" * (PROGRESS_LIMIT - 2))  # two quotes: exactly the limit
    assert sink[:2] == ['{"done":1,"of":2}', '{"pct":null}']
    assert len(sink[2].encode()) == PROGRESS_LIMIT
    refused: list[Any] = [object(), "x" * (PROGRESS_LIMIT - 1), "é" * PROGRESS_LIMIT]
    refused += ["a\x00b", {"rows": ["ok", "a\x00"]}]
    problems = []
    for value in refused:
        with pytest.raises(ProgressError) as caught:
            run.report(value)
        assert caught.value.task_name == "reporter"
        problems.append(caught.value.problem)
    assert "Unable to serialize" in problems[0]
    assert problems[1] == f"{PROGRESS_LIMIT + 1} bytes of JSON, over the limit of {PROGRESS_LIMIT}"
    assert problems[2].startswith(f"{2 * PROGRESS_LIMIT + 2} bytes")  # bytes, not characters
    assert problems[3].startswith("a NUL character (\\x00) in the value")
    assert problems[4].startswith("a NUL character (\\x00) in rows[1]")
    assert len(sink) == 3  # nothing refused reached the worker


async def _add(session: AsyncSession, queued: Any) -> int:
    session.add(queued)
    await session.flush()
    return int(queued.id)


async def test_run_pending_writes_the_last_progress_of_a_parked_and_a_kept_task(
    session: AsyncSession,
) -> None:
    parked = await _add(session, enqueue(t.reports_then_fails, t.Steps(steps=4)))
    kept = await _add(session, enqueue(t.reports_then_returns, t.Steps(steps=2)))
    before = await get_task(session, parked)
    assert before is not None
    assert before.progress is None
    outcomes = await run_pending(session)
    assert sorted(type(o).__name__ for o in outcomes) == ["Completed", "Failed"]
    failed, done = await get_task(session, parked), await get_task(session, kept)
    assert failed is not None
    assert done is not None
    assert (failed.state, done.state) == ("failed", "completed")
    assert failed.progress is not None
    assert failed.progress.value == {"done": 4, "of": 4}  # the last value wins; a model as JSON
    assert failed.progress.attempt == 1
    now = datetime.now(UTC)
    reported_at = failed.progress.reported_at
    assert reported_at is not None  # written by a worker, not by hand
    assert now - timedelta(minutes=5) < reported_at <= now + timedelta(minutes=5)
    assert done.progress is not None
    assert done.progress.value == {"done": 2}  # carried to the finished table


async def _claimed(engine: AsyncEngine, count: int) -> list[Any]:
    async with AsyncSession(engine) as session, session.begin():
        session.add_all(enqueue(t.chatty, t.Steps()) for _ in range(count))
    async with engine.connect() as conn:
        found = await claim.task_claim(
            conn, queues=(), limit=count, lease_seconds=600, worker_id="w", token=uuid.uuid4()
        )
        await conn.commit()
    return sorted(found, key=lambda c: c.id)


async def _progress(engine: AsyncEngine) -> dict[int, Any]:
    async with engine.connect() as conn:
        query = text("SELECT id, progress -> 'value' FROM sqlatasks_tasks")
        return {row[0]: row[1] for row in await conn.execute(query)}


async def test_a_progress_write_needs_the_lease_and_waits_for_no_lock(engine: AsyncEngine) -> None:
    # Three tasks of one claim: one still ours, one taken over, one locked by a transaction.
    ours, taken, locked = await _claimed(engine, 3)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE sqlatasks_tasks SET lease_token = gen_random_uuid() WHERE id = :id"),
            {"id": taken.id},
        )
    reports = [(c.id, c.lease_token, f'"{c.id}"', 1.5) for c in (ours, taken, locked)]
    async with engine.connect() as locker, locker.begin():
        lock = text("SELECT 1 FROM sqlatasks_tasks WHERE id = :id FOR UPDATE")
        await locker.execute(lock, {"id": locked.id})
        async with engine.connect() as conn:
            with anyio.fail_after(10):  # SKIP LOCKED: no wait for the locker
                written, busy = await claim.task_progress(conn, reports)
            await conn.commit()
    assert (written, busy) == ({ours.id}, {locked.id})  # the taken one: gone
    assert await _progress(engine) == {ours.id: str(ours.id), taken.id: None, locked.id: None}
    async with AsyncSession(engine) as session:
        info = await get_task(session, ours.id)
    assert info is not None
    assert info.state == "running"
    assert info.progress is not None
    assert info.progress.attempt == 1
    async with engine.connect() as conn:
        age = "SELECT extract(epoch FROM now() - (progress ->> 'reported_at')::timestamptz)"
        query = text(f"{age} FROM sqlatasks_tasks WHERE id = :id")
        seconds = (await conn.execute(query, {"id": ours.id})).scalar_one()
    assert seconds >= 1.5  # reported 1.5 s before the write, by the worker's count


async def test_the_task_page_shows_the_progress(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session, session.begin():
        task_id = await _add(session, enqueue(t.reports_then_fails, t.Steps(steps=2)))
        await run_pending(session)
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
        page = await client.get(f"/task/{task_id}")
    assert page.status_code == 200
    assert "<h2>Progress</h2>" in page.text
    assert "&quot;done&quot;: 2" in page.text
    assert "attempt 1, reported" in page.text
