"""A task knows when its time limit runs out: `current_task().deadline`.

Before issue 17's fourth round each task ran in a cancel scope of its own whose deadline was
its time limit, so `anyio.current_effective_deadline()` told it too. Tasks now run in their
execution slot's long-lived scope, cancelled by the worker's watchdog; the limit is given to
the task on `current_task()` instead (cold review, issue 17). Real runner, real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests import execution_tasks as t
from tests import ledger
from tests.execution_support import MODULE, put_in_order
from tests.execution_tasks import Job
from tests.processes import Runners


@pytest.mark.slow
async def test_a_task_sees_when_its_time_limit_runs_out(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", imports=[MODULE])
    await runner.started(1)
    await put_in_order(engine, (t.reads_its_deadline, Job(key=1)))  # timeout=5
    (started,) = await ledger.wait_for_entries(tmp_path, "start", 1)
    left = started.fields["left"]  # None: no deadline at all (inf)
    assert left is not None, "inside the task, current_task().deadline is inf"
    assert 4.0 < left <= 5.0, left
