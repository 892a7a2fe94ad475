"""`current_task().report()` from a task's worker thread (`anyio.to_thread.run_sync`, the way
a task runs blocking work) reaches the worker's progress writer, with a real runner.

Found by a cold review: the report woke the progress writer's event from the thread, which
asyncio does not allow (in debug mode the attempt failed with "Non-thread-safe operation
invoked on an event loop other than the current one"; without it, the wake-up could wait for
the loop's next event). The runner here runs with PYTHONASYNCIODEBUG=1, which makes that check.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqlatasks import TaskInfo, enqueue, get_task, wait_for
from tests import ledger
from tests import thread_progress_tasks as t
from tests.eventually import eventually
from tests.processes import Runners

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def _get(engine: AsyncEngine, task_id: int) -> TaskInfo | None:
    async with AsyncSession(engine) as session:
        return await get_task(session, task_id)


async def test_a_report_from_a_worker_thread_is_written(
    engine: AsyncEngine,
    tmp_path: Path,
    start_runner: Runners,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONASYNCIODEBUG", "1")
    async with AsyncSession(engine) as session, session.begin():
        queued = enqueue(t.threaded, t.Work(chunks=2))
        session.add(queued)
        await session.flush()
        task_id = int(queued.id)
    runner = start_runner("--workers", "1", imports=["tests.thread_progress_tasks"])
    await runner.started(1)

    def written(info: TaskInfo | None) -> bool:
        return info is not None and info.progress is not None and info.progress.value == {"done": 2}

    seen = await eventually(lambda: _get(engine, task_id), written, what="the thread's report")
    assert seen is not None
    assert seen.state == "running"
    ledger.open_gate(tmp_path, "seen")
    info = await wait_for(engine, task_id, timeout=60)
    assert info is not None
    assert info.state == "completed", (info.last_error, runner.log())
    assert "Non-thread-safe" not in runner.log()
