"""Hooks: middleware around each execution and events; a hook's own exception never changes a
task's outcome or its bookkeeping (run in-process by sqlatasks.testing.run_pending)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import enqueue, hooks
from sqlatasks.context import TaskRun
from sqlatasks.outcomes import Completed, Failed
from sqlatasks.testing import run_pending
from tests import hook_tasks
from tests.hook_tasks import Step


@pytest.fixture(autouse=True)
def clean_hooks() -> Iterator[None]:
    hooks.clear()
    hook_tasks.calls.clear()
    yield
    hooks.clear()


async def test_middleware_wraps_the_task_and_sees_its_exception(session: AsyncSession) -> None:
    seen: list[str] = []

    async def outer(run: TaskRun, call_next: hooks.CallNext) -> None:
        seen.append(f"outer {run.task_name} {run.attempt}")
        try:
            await call_next()
        except ValueError as exc:
            seen.append(f"outer saw {exc}")
            raise

    async def inner(run: TaskRun, call_next: hooks.CallNext) -> None:
        seen.append("inner")
        await call_next()
        hook_tasks.calls.append("after")

    hooks.add_middleware(outer)
    hooks.add_middleware(inner)
    session.add(enqueue(hook_tasks.step, Step()))
    session.add(enqueue(hook_tasks.step, Step(fail=True)))
    outcomes = await run_pending(session)
    assert [type(o) for o in outcomes].count(Completed) == 1
    assert seen[:2] == [f"outer {hook_tasks.step.name} 1", "inner"]
    assert "outer saw asked to fail" in seen
    assert hook_tasks.calls.count("after") == 1


async def test_a_failing_or_skipping_middleware_changes_nothing(session: AsyncSession) -> None:
    for where in ["before", "after", "skip"]:
        hooks.clear()
        hook_tasks.calls.clear()
        hooks.add_middleware(_broken(where))
        session.add(enqueue(hook_tasks.step, Step()))
        outcomes = await run_pending(session)
        assert [type(o) for o in outcomes] == [Completed], where
        assert hook_tasks.calls == ["task"], where  # ran exactly once


def _broken(where: str) -> hooks.Middleware:
    async def broken(run: TaskRun, call_next: hooks.CallNext) -> None:
        if where == "before":
            raise RuntimeError("hook broke before")
        if where == "after":
            await call_next()
            raise RuntimeError("hook broke after")
        # "skip": never calls call_next

    return broken


async def test_a_middleware_swallowing_the_failure_does_not_make_it_succeed(
    session: AsyncSession,
) -> None:
    async def swallow(run: TaskRun, call_next: hooks.CallNext) -> None:
        with contextlib.suppress(ValueError):
            await call_next()

    hooks.add_middleware(swallow)
    session.add(enqueue(hook_tasks.step, Step(fail=True)))
    outcomes = await run_pending(session)
    assert isinstance(outcomes[0], Failed)


async def test_events_enqueue_start_end_retry_park_and_a_raising_listener(
    session: AsyncSession,
) -> None:
    events: list[hooks.Event] = []
    for kind in hooks.EVENT_KINDS:
        hooks.on(kind, events.append)
        hooks.on(kind, _raise)  # logged and ignored; the others still run
    session.add(enqueue(hook_tasks.step, Step(fail=True)))
    session.add(enqueue(hook_tasks.step, Step()))
    outcomes = await run_pending(session)
    kinds = [e.kind for e in events]
    assert kinds.count("enqueue") == 2
    assert kinds.count("start") == 3  # the failing one twice (max_attempts=2)
    assert kinds.count("retry") == 1
    assert kinds.count("park") == 1
    ends = [e for e in events if e.kind == "end"]
    assert sorted(e.outcome or "" for e in ends) == ["completed", "parked", "retry"]
    assert all(e.duration is not None and e.duration >= 0 for e in ends)
    park = next(e for e in events if e.kind == "park")
    assert "asked to fail" in (park.error or "")
    assert sum(isinstance(o, Failed) for o in outcomes) == 2


def _raise(event: hooks.Event) -> None:
    raise RuntimeError(f"listener broke on {event.kind}")
