"""Each task runs in its own copy of its execution slot's context (docs/performance.md): a
ContextVar that one task, or a middleware around it, set and never reset is not seen by the
next task in that slot. Real runners, a real PostgreSQL; and `context.isolated` alone."""

from __future__ import annotations

import asyncio
import uuid
from contextvars import ContextVar
from pathlib import Path

import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from sqlatasks import enqueue
from sqlatasks.context import TaskRun, current_task, isolated
from tests import context_tasks, ledger
from tests.conftest import count_tasks
from tests.processes import Runners

MODULE = "tests.context_tasks"


async def drain_one_slot(engine: AsyncEngine, start_runner: Runners, *flags: str) -> None:
    """Tasks A (sets), B (reports), A, B, one transaction each (claimed in that order), run
    one after another in a single slot (--concurrency 1, --burst) by one worker."""
    sets, reports = context_tasks.sets_and_keeps, context_tasks.reports_what_it_sees
    for fn, key in [(sets, 1), (reports, 2), (sets, 3), (reports, 4)]:
        async with async_sessionmaker(engine)() as session, session.begin():
            session.add(enqueue(fn, context_tasks.Job(key=key)))
    runner = start_runner(
        "--workers", "1", "--concurrency", "1", "--burst", *flags, imports=[MODULE]
    )
    assert await runner.wait_exit(120) == 0
    assert runner.log().count("sqlatasks.worker: started") == 1
    assert await count_tasks(engine) == 0


@pytest.mark.slow
async def test_a_contextvar_set_by_one_task_is_not_seen_by_the_next_in_its_slot(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await drain_one_slot(engine, start_runner, "--middleware", f"{MODULE}:sets_a_variable")
    ended = ledger.entries(tmp_path, "end")
    assert [e.key for e in ended] == [1, 2, 3, 4]
    seen = [e.fields for e in ended if e.key in (2, 4)]
    # Task B ran after A in the one slot; it saw neither A's value nor the middleware's.
    assert [(s["tenant"], s["by_middleware"]) for s in seen] == [(-1, -1), (-1, -1)]
    assert [s["own_id_seen"] for s in seen] == sorted(s["own_id_seen"] for s in seen)


variable: ContextVar[str] = ContextVar("variable", default="outer")
RUN = TaskRun(1, "t", "default", attempt=1, max_attempts=None, lease_token=uuid.uuid4())


async def test_isolated_sees_the_outer_context_and_keeps_its_own_sets() -> None:
    async def sets_and_suspends() -> str:
        seen = variable.get()
        assert current_task() is RUN
        variable.set("inner")
        await asyncio.sleep(0)
        return f"{seen}, then {variable.get()}"

    assert await isolated(sets_and_suspends(), RUN) == "outer, then inner"
    assert variable.get() == "outer"
    with pytest.raises(LookupError):
        current_task()


async def test_isolated_passes_exceptions_and_cancellation_through() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("its own")

    with pytest.raises(ValueError, match="its own"):
        await isolated(fails(), RUN)

    finished = False

    async def sleeps() -> None:
        nonlocal finished
        await anyio.sleep(30)
        finished = True

    with anyio.move_on_after(0.05) as scope:
        await isolated(sleeps(), RUN)
    assert scope.cancelled_caught
    assert not finished
