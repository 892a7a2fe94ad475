"""Progress with a real runner (docs/status.md#progress): `get_task` sees a running task's
progress, the writes are rate-limited, and an attempt that lost its lease writes nothing.

Writes are counted exactly, by a test-only trigger on the queue table's `progress` column (no
timing in the count); the rate limit's bound comes from the span the task itself measured."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqlatasks import TaskInfo, enqueue, get_task, wait_for
from sqlatasks.context import PROGRESS_PERIOD
from tests import ledger
from tests import progress_tasks as t
from tests.eventually import eventually
from tests.processes import Runners

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
IMPORTS = ["tests.progress_tasks"]
COUNT_WRITES = (
    "CREATE TABLE progress_writes (id bigint, value jsonb)",
    """CREATE FUNCTION progress_written() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO progress_writes VALUES (NEW.id, NEW.progress -> 'value');
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER progress_written AFTER UPDATE OF progress ON sqlatasks_tasks
    FOR EACH ROW EXECUTE FUNCTION progress_written()""",
)


async def _count_writes(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for statement in COUNT_WRITES:
            await conn.execute(text(statement))


async def _writes(engine: AsyncEngine, task_id: int) -> list[Any]:
    async with engine.connect() as conn:
        query = text("SELECT value FROM progress_writes WHERE id = :id")
        return list((await conn.execute(query, {"id": task_id})).scalars())


async def _enqueue(engine: AsyncEngine, queued: Any) -> int:
    async with AsyncSession(engine) as session, session.begin():
        session.add(queued)
        await session.flush()
        return int(queued.id)


async def _get(engine: AsyncEngine, task_id: int) -> TaskInfo | None:
    async with AsyncSession(engine) as session:
        return await get_task(session, task_id)


def _showing(value: Any) -> Callable[[TaskInfo | None], bool]:
    return lambda info: (
        info is not None and info.progress is not None and info.progress.value == value
    )


async def test_get_task_sees_a_running_tasks_progress_step_by_step(
    engine: AsyncEngine, tmp_path: Path, start_runner: Runners
) -> None:
    await _count_writes(engine)
    task_id = await _enqueue(engine, enqueue(t.stepwise, t.Steps(steps=3)))
    runner = start_runner("--workers", "1", imports=IMPORTS)
    await runner.started(1)
    for step in (1, 2, 3):
        value = {"done": step, "of": 3}
        seen = await eventually(lambda: _get(engine, task_id), _showing(value), what=f"{value}")
        assert seen is not None
        assert seen.state == "running"
        assert seen.progress is not None
        assert seen.progress.attempt == 1
        ledger.open_gate(tmp_path, f"seen-{step}")
    done = await wait_for(engine, task_id, timeout=60)
    assert done is not None
    assert (done.state, done.result) == ("completed", 3)
    assert done.progress is not None
    assert done.progress.value == {"done": 3, "of": 3}  # kept with the task
    assert await _writes(engine, task_id) == [{"done": s, "of": 3} for s in (1, 2, 3)]


async def test_the_rate_limit_bounds_the_writes(
    engine: AsyncEngine, tmp_path: Path, start_runner: Runners
) -> None:
    await _count_writes(engine)
    reports = 500
    task_id = await _enqueue(engine, enqueue(t.chatty, t.Steps(reports=reports)))
    runner = start_runner("--workers", "1", imports=IMPORTS)
    await runner.started(1)
    await eventually(lambda: _get(engine, task_id), _showing(reports), what="the last value")
    ledger.open_gate(tmp_path, "last-seen")
    [span] = await ledger.wait_for_entries(tmp_path, "span", 1)
    writes = await _writes(engine, task_id)
    # Writes start at least PROGRESS_PERIOD apart, from the first report until the last value
    # was seen written (after which the task reported nothing): the span the task measured.
    bound = math.floor(span.fields["seconds"] / PROGRESS_PERIOD) + 1
    assert 1 <= len(writes) <= bound, (len(writes), span.fields["seconds"])
    assert writes == sorted(writes)  # each write the latest value at its time
    assert writes[-1] == reports
    assert len(writes) < reports


async def test_an_attempt_that_lost_its_lease_writes_no_progress(
    engine: AsyncEngine, tmp_path: Path, start_runner: Runners
) -> None:
    await _count_writes(engine)
    task_id = await _enqueue(engine, enqueue(t.loses_lease, t.Steps()))
    # A lease of 600 s is renewed every 150 s: only the progress write can find it gone here.
    runner = start_runner("--workers", "1", "--lease", "600", imports=IMPORTS)
    await runner.started(1)
    await eventually(lambda: _get(engine, task_id), _showing("before"), what="'before'")
    async with engine.begin() as conn:  # what another claim does: a fresh token
        await conn.execute(
            text("UPDATE sqlatasks_tasks SET lease_token = gen_random_uuid() WHERE id = :id"),
            {"id": task_id},
        )
    ledger.open_gate(tmp_path, "taken-over")
    await ledger.wait_for_entries(tmp_path, "reported-after", 1)

    async def outcome() -> tuple[bool, TaskInfo | None]:
        return "lost its lease (taken over" in runner.log(), await _get(engine, task_id)

    lost, info = await eventually(
        outcome,
        lambda found: found[0] or _showing("after")(found[1]),
        what="the write of 'after' to find the lease gone",
    )
    assert lost  # the write found the lease gone, and the task was cancelled
    assert _showing("before")(info)
    assert await _writes(engine, task_id) == ["before"]
