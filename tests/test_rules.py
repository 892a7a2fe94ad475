"""One rule, one home: the runner, the dead-worker rescue, sqlatasks.testing and enqueue() all
follow the same rules (each of these tests failed before the re-layout of issue 10)."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sqlatasks import InvalidOption, SqlatasksError, TaskDefinitionError, enqueue, task
from sqlatasks.testing import Completed, run_pending
from tests import runner_tasks
from tests.processes import Runners, wait_for_tasks
from tests.tasks_for_tests import Greeting, greet


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"queue": 7}, "queue must be a non-empty string"),
        ({"priority": 40_000}, "priority must be an integer in [-32768, 32767]"),
        ({"priority": "high"}, "priority must be an integer"),
        ({"delay": -1}, "delay must be zero or a positive number of seconds"),
        ({"delay": float("nan")}, "delay must be zero or a positive number of seconds"),
        # past PostgreSQL's timestamps: the write of the task would fail for ever
        ({"delay": 1e300}, "up to a century"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at must be a timezone-aware datetime"),
        ({"unique_key": ""}, "unique_key must be a non-empty string"),
        ({"on_duplicate": "raise"}, 'on_duplicate must be "skip" or "report"'),
    ],
)
def test_an_enqueue_argument_error_is_a_sqlatasks_error(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidOption) as caught:
        enqueue(greet, Greeting(name="a"), **options)  # type: ignore[arg-type]
    assert isinstance(caught.value, SqlatasksError)
    assert isinstance(caught.value, ValueError)  # as before, for code that caught ValueError
    assert message in str(caught.value)


def test_task_and_enqueue_refuse_a_queue_with_the_same_words() -> None:
    async def noop(data: Greeting) -> None: ...

    with pytest.raises(TaskDefinitionError) as at_import:
        task(name="rules.empty_queue", queue="")(noop)
    with pytest.raises(InvalidOption) as at_call:
        enqueue(greet, Greeting(name="a"), queue="")
    assert at_call.value.problem == at_import.value.problem


async def test_run_pending_gives_a_task_its_own_timeout_as_the_runner_does(
    session: AsyncSession,
) -> None:
    session.add(enqueue(runner_tasks.takes_its_time, runner_tasks.Job(key=1, sleep=1.5)))
    (outcome,) = await run_pending(session, task_timeout=1)
    assert isinstance(outcome, Completed), outcome


@pytest.mark.slow
async def test_the_runner_gives_a_task_its_own_timeout(
    engine: AsyncEngine, start_runner: Runners
) -> None:
    runner = start_runner("--workers", "1", "--task-timeout", "1")
    await runner.started(1)
    async with async_sessionmaker(engine)() as session, session.begin():
        session.add(enqueue(runner_tasks.takes_its_time, runner_tasks.Job(key=1, sleep=1.5)))
    await wait_for_tasks(engine, exactly=0, timeout=30)


@pytest.mark.slow
async def test_a_dead_workers_task_follows_its_own_retry_delay(
    engine: AsyncEngine, start_runner: Runners
) -> None:
    # The runner's --retry-delay is ten minutes; the task's own is 0.2 s. The rescue of the
    # killed worker's lease must use the task's, as a failure in the task itself would.
    runner = start_runner("--workers", "1", "--retry-delay", "600")
    await runner.started(1)
    async with async_sessionmaker(engine)() as session, session.begin():
        session.add(enqueue(runner_tasks.dies_once, runner_tasks.Job(key=1)))
    await runner.wait_for_log("worker-0 died holding 1 tasks")
    async with engine.connect() as conn:
        wait = await conn.scalar(
            text("SELECT extract(epoch FROM scheduled_at - now()) FROM sqlatasks_tasks")
        )
    assert wait is None or wait < 5, wait  # None: already run and deleted
    await wait_for_tasks(engine, exactly=0, timeout=60)
