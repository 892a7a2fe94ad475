"""Task status with a real runner: each state through `get_task`, pruning, `wait_for` woken by
NOTIFY and by its poll, a session task's result (docs/status.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqlatasks import TaskInfo, cancel, enqueue, get_task, wait_for
from tests import ledger
from tests import status_tasks as t
from tests.eventually import eventually
from tests.processes import Runners

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
IMPORTS = ["tests.status_tasks"]


async def _enqueue(engine: AsyncEngine, *queued: object) -> list[int]:
    async with AsyncSession(engine) as session, session.begin():
        session.add_all(queued)
        await session.flush()
        return [int(q.id) for q in queued]  # type: ignore[attr-defined]


async def _get(engine: AsyncEngine, task_id: int) -> TaskInfo | None:
    async with AsyncSession(engine) as session:
        return await get_task(session, task_id)


def _state(expected: str) -> Callable[[TaskInfo | None], bool]:
    return lambda info: info is not None and info.state == expected


async def test_each_state_through_get_task(
    engine: AsyncEngine, tmp_path: Path, start_runner: Runners
) -> None:
    scheduled, running, broken = await _enqueue(
        engine,
        enqueue(t.export, t.Export(rows=1), delay=3600),
        enqueue(t.export, t.Export(rows=2, gate="go")),
        enqueue(t.broken, t.Export(rows=3)),
    )
    runner = start_runner("--workers", "1", imports=IMPORTS)
    await runner.started(1)
    await ledger.wait_for_entries(tmp_path, "waiting", 1)
    shown = await eventually(lambda: _get(engine, running), _state("running"), what="running")
    assert shown is not None
    assert shown.worker is not None
    assert shown.attempts == 1
    assert _state("scheduled")(await _get(engine, scheduled))
    await eventually(lambda: _get(engine, broken), _state("failed"), what="parked")
    ledger.open_gate(tmp_path, "go")
    done = await wait_for(engine, running, timeout=60)
    assert done is not None
    assert done.state == "completed"
    assert done.result == t.ExportDone(url="s3://exports/2.csv", rows=2)


async def test_a_cancelled_running_task_is_kept_as_cancelled(
    engine: AsyncEngine, tmp_path: Path, start_runner: Runners
) -> None:
    [task_id] = await _enqueue(engine, enqueue(t.export, t.Export(rows=4, gate="never")))
    runner = start_runner("--workers", "1", imports=IMPORTS)
    await runner.started(1)
    await ledger.wait_for_entries(tmp_path, "waiting", 1)
    async with AsyncSession(engine) as session, session.begin():
        assert await cancel(session, task_id) == "cancelling"
    done = await wait_for(engine, task_id, timeout=60)
    assert done is not None
    assert (done.state, done.result) == ("cancelled", None)


async def test_kept_tasks_are_pruned_after_their_time(
    engine: AsyncEngine, start_runner: Runners
) -> None:
    [task_id] = await _enqueue(engine, enqueue(t.short_lived, t.Export(rows=6)))  # keep=1
    runner = start_runner("--workers", "1", "--check-interval", "0.5", imports=IMPORTS)
    await runner.started(1)
    done = await wait_for(engine, task_id, timeout=60)
    assert done is not None
    assert done.result == 12
    await eventually(lambda: _get(engine, task_id), lambda info: info is None, what="pruned")


async def test_wait_for_is_woken_by_notify_not_its_poll(
    engine: AsyncEngine, start_runner: Runners
) -> None:
    runner = start_runner("--workers", "1", imports=IMPORTS)
    await runner.started(1)
    ids = await _enqueue(engine, *(enqueue(t.export, t.Export(rows=n)) for n in range(5)))
    found: dict[int, TaskInfo | None] = {}

    async def wait(task_id: int) -> None:
        # A poll an hour apart: only the NOTIFY can end these waits within the bound.
        found[task_id] = await wait_for(engine, task_id, timeout=60, poll_interval=3600)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as waiters:  # five waiters, one LISTEN connection
            for task_id in ids:
                waiters.start_soon(wait, task_id)
    assert {i: info.state for i, info in found.items() if info} == dict.fromkeys(ids, "completed")


async def test_wait_for_without_notify_finds_the_end_by_polling(
    engine: AsyncEngine, start_runner: Runners
) -> None:
    kept, gone = await _enqueue(
        engine,
        enqueue(t.export, t.Export(rows=1), delay=1),
        enqueue(t.unkept, t.Export(rows=2), delay=1),
    )
    runner = start_runner("--workers", "1", "--idle-sleep", "0.5", imports=IMPORTS)
    await runner.started(1)
    # An unkept task's end sends no NOTIFY: the poll sees it gone (None).
    assert await wait_for(engine, gone, timeout=30, poll_interval=0.5) is None
    done = await wait_for(engine, kept, timeout=30, poll_interval=0.5)
    assert done is not None
    assert done.state == "completed"
    with pytest.raises(TimeoutError):
        [never] = await _enqueue(engine, enqueue(t.export, t.Export(rows=3), delay=3600))
        await wait_for(engine, never, timeout=0.5, poll_interval=0.1)


async def test_a_session_tasks_result_commits_with_its_writes(
    engine: AsyncEngine, start_runner: Runners
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE status_exports (rows int)"))
    ok, lost = await _enqueue(
        engine,
        enqueue(t.export_in_session, t.Export(rows=1)),
        enqueue(t.export_in_session, t.Export(rows=2, gate="lose-lease")),
    )
    runner = start_runner("--workers", "1", imports=IMPORTS)
    await runner.started(1)
    done = await wait_for(engine, ok, timeout=60)
    assert done is not None
    assert done.result == t.ExportDone(url="db", rows=1)
    await runner.wait_for_log(f"task {lost} .* lost its lease")
    lost_info = await _get(engine, lost)
    assert lost_info is None or lost_info.state != "completed"  # its result rolled back
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT rows FROM status_exports"))).scalars().all()
    assert rows == [1]
