"""The attempt rules of sqlatasks.attempts, without a database, and that every caller uses them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from sqlatasks import Snooze, TaskDefinitionError, attempts, task
from sqlatasks.attempts import RetryPolicy


class Greeting(BaseModel):
    name: str


async def flaky(data: Greeting) -> None: ...


def test_retry_delays_fixed_and_exponential_with_jitter_and_cap() -> None:
    fixed = task(name="backoff.fixed", retry_delay=3)(flaky)
    assert [attempts.retry_delay(fixed.policy, n, 10) for n in (1, 2, 5)] == [3, 3, 3]
    default = task(name="backoff.default")(flaky)
    assert attempts.retry_delay(default.policy, 4, 10) == 10  # the runner's --retry-delay
    grows = task(name="backoff.exp", retry_delay=2, backoff="exponential", retry_delay_max=20)(
        flaky
    )
    for attempt, full in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 20), (40, 20)]:
        delays = {attempts.retry_delay(grows.policy, attempt, 10) for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays), (attempt, delays)
        assert len(delays) > 1  # jittered
    with pytest.raises(TaskDefinitionError, match="backoff must be 'fixed' or 'exponential'"):
        task(name="backoff.bad", backoff="linear")(flaky)  # type: ignore[call-overload]


def test_a_failed_attempt_retries_until_max_attempts_then_parks() -> None:
    policy = RetryPolicy(retry_delay=4)
    assert [attempts.after_failure(policy, n, 3, 10) for n in (1, 2, 3, 4)] == [4, 4, None, None]
    assert attempts.after_failure(policy, 1000, None, 10) == 4  # unlimited never parks
    # A claim for attempt n+1 of a task whose attempt n never finished (a lost worker): the
    # lost attempt counts, by the same rule.
    assert not attempts.lost_before(3, 3)
    assert attempts.lost_before(4, 3)
    assert not attempts.lost_before(10, None)


def test_time_limit_is_the_tasks_own_else_the_default() -> None:
    assert attempts.time_limit(RetryPolicy(timeout=5), 1) == 5
    assert attempts.time_limit(RetryPolicy(), 7) == 7
    assert attempts.time_limit(RetryPolicy(timeout=86_400), 7) == 86_400  # no cap


@pytest.mark.parametrize("check_interval", [0.1, 0.5, 1, 2, 5, 30, 120])
@pytest.mark.parametrize("limit", [0.5, 10, 300, 86_400])
def test_hang_kill_bound_sums_the_steps_of_killing_a_hung_worker(
    check_interval: float, limit: float
) -> None:
    # The worst case, step by step, in seconds from the start of the task: it runs its whole
    # time limit, then ignores its cancellation for the grace the worker gives it; the
    # worker's last heartbeat may have been written just before the task blocked the loop (one
    # period earlier); the supervisor judges a worker hung once its heartbeat is older than
    # the heartbeat timeout, and it looks only once per check interval.
    worst = (
        limit
        + attempts.overdue_grace(check_interval)
        + attempts.heartbeat_period(check_interval)
        + attempts.heartbeat_timeout(check_interval)
        + check_interval
    )
    assert attempts.hang_kill_bound(limit, check_interval) == pytest.approx(worst)


@pytest.mark.parametrize("check_interval", [0.1, 0.5, 1, 2, 5, 30, 120])
def test_a_stopped_worker_is_killed_before_its_last_renewal_runs_out(
    check_interval: float,
) -> None:
    # Every lease the settings accept, from the shortest up (60 s is the default).
    for lease in [attempts.shortest_lease(check_interval), 60.0, 3600.0]:
        if attempts.lease_problem(lease, check_interval) is not None:
            assert lease < attempts.shortest_lease(check_interval)
            continue
        renewed_at = 0.0  # the worker's clock when it sent its last renewal (or the claim)
        lease_ends = renewed_at + lease  # at the earliest: the database's now() is later
        # Without a newer renewal the worker cancels the task at the end of the trust; one
        # that ignores that runs the grace, then the heartbeat stops (or the worker was
        # stopped earlier, which only moves its last heartbeat earlier): the last heartbeat
        # is at most one heartbeat period after that, the supervisor judges the worker hung
        # after the heartbeat timeout, and it looks once per check interval.
        last_beat = (
            renewed_at
            + attempts.lease_trust(lease, check_interval)
            + attempts.overdue_grace(check_interval)
            + attempts.heartbeat_period(check_interval)
        )
        killed = last_beat + attempts.heartbeat_timeout(check_interval) + check_interval
        assert killed + attempts.LEASE_MARGIN <= lease_ends + 1e-9, (lease, check_interval)
        # One renewal may fail or come late without cancelling anything: the trust outlasts
        # two renewal periods.
        period = attempts.renewal_period(lease)
        assert attempts.lease_trust(lease, check_interval) >= 2 * period - 1e-9


def test_a_lease_shorter_than_the_bound_is_refused() -> None:
    assert attempts.lease_problem(60, check_interval=5) is None  # the defaults
    assert attempts.shortest_lease(5) == pytest.approx(2 * (5 + 1 + 10 + 5 + 5))
    problem = attempts.lease_problem(30, check_interval=5)
    assert problem is not None
    assert "at least 52 s" in problem
    assert attempts.lease_problem(60, check_interval=30) is not None


def test_snooze_takes_seconds_or_a_timedelta() -> None:
    assert Snooze(after=timedelta(minutes=1)).after == 60
    assert Snooze(2.5).after == 2.5
    with pytest.raises(ValueError, match="at most"):
        Snooze(after=1e300)  # now() + 1e300 s leaves PostgreSQL's timestamps
    with pytest.raises(ValueError, match="zero or a positive"):
        Snooze(after=-1)
