"""sqlatasks.testing: what users' own tests call, in a rolled-back session."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import enqueue
from sqlatasks.testing import Completed, Failed, enqueued, run_pending
from tests.tasks_for_tests import Greeting, greet, greet_renamed, refuse


async def test_enqueued_lists_payloads_in_claim_order(session: AsyncSession) -> None:
    session.add(enqueue(greet, Greeting(name="low"), priority=-1))
    session.add(enqueue(greet, Greeting(name="high"), priority=5))
    session.add(enqueue(greet_renamed, Greeting(name="other task")))
    assert await enqueued(session, greet) == [Greeting(name="high"), Greeting(name="low")]


async def test_run_pending_runs_due_tasks_and_writes_their_outcomes(
    session: AsyncSession,
) -> None:
    session.add(enqueue(greet, Greeting(name="a")))
    session.add(enqueue(greet, Greeting(name="b")))
    session.add(enqueue(refuse, Greeting(name="c")))
    session.add(enqueue(greet, Greeting(name="later"), delay=3600))
    outcomes = await run_pending(session)
    assert sorted(type(o).__name__ for o in outcomes) == ["Completed", "Completed", "Failed"]
    (failed,) = [o for o in outcomes if isinstance(o, Failed)]
    assert failed.error.startswith("ValueError: no greeting for c")
    assert failed.retry_in is None  # max_attempts=1: parked
    assert all(o.task.attempts == 1 for o in outcomes)
    rows = (
        await session.execute(
            text("SELECT task_name, failed_at IS NOT NULL AS parked FROM sqlatasks_tasks")
        )
    ).all()
    assert sorted(rows) == [
        ("tests.tasks_for_tests:greet", False),  # the delayed one, not due yet
        ("tests.tasks_for_tests:refuse", True),
    ]
    assert await run_pending(session) == []  # nothing due is left
    assert sum(isinstance(o, Completed) for o in outcomes) == 2
