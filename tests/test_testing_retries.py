"""sqlatasks.testing with failing tasks: what retry delays do inside one test transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import enqueue, task
from sqlatasks.testing import Failed, enqueued, run_pending
from tests.tasks_for_tests import Greeting


@task(retry_delay=0, max_attempts=3)
async def refuse_thrice(data: Greeting) -> None:
    raise ValueError(f"still no greeting for {data.name}")


@task
async def refuse_for_now(data: Greeting) -> None:
    """No retry_delay or max_attempts of its own."""
    raise ValueError(f"not now, {data.name}")


async def test_run_pending_retries_a_zero_delay_at_once_until_it_parks(
    session: AsyncSession,
) -> None:
    session.add(enqueue(refuse_thrice, Greeting(name="d")))  # retry_delay=0, max_attempts=3
    outcomes = await run_pending(session)
    failures = [o for o in outcomes if isinstance(o, Failed)]
    assert failures == outcomes
    assert [(o.task.attempts, o.retry_in) for o in failures] == [(1, 0), (2, 0), (3, None)]


async def test_in_one_transaction_a_retry_delay_never_comes_due(session: AsyncSession) -> None:
    session.add(enqueue(refuse_for_now, Greeting(name="e")))
    (outcome,) = await run_pending(session, retry_delay=5)  # the runner's --retry-delay
    assert isinstance(outcome, Failed)
    assert outcome.retry_in == 5
    # now() is the transaction's start time: within it, the task stays 5 s in the future.
    assert await run_pending(session) == []
    assert await enqueued(session, refuse_for_now) == [Greeting(name="e")]
