"""The rules of an attempt, in one place: no I/O, so they are tested without a database.

The runner's executor, the supervisor's rescue of a dead worker's tasks and
`sqlatasks.testing` all ask these functions; none re-implements them.

    time limit     the task's own timeout, else the runner's --task-timeout
    retry or park  a failed attempt parks the task once it has used max_attempts, or at once
                   when it raised GiveUp, an exception of `no_retry_on`, or one outside
                   `retry_on`; otherwise it is due again after the task's delay (fixed, or
                   exponential with jitter)
    unknown task   a task no runner here knows is given back unrun, uncounted, due again
                   after UNKNOWN_TASK_WAIT: it waits for a runner that knows it, never parks
    lease          short (--lease, 60 s by default) and renewed every `renewal_period` while
                   the task runs, so a dead runner's task waits at most one lease, whatever
                   the longest timeout; a stopped worker is killed before its last renewal
                   runs out (the derivation below, checked by tests/test_attempts.py)

The lease, step by step. A renewal sent at time r (the worker's clock) sets
`locked_until = now() + lease` by the database's clock, so the lease lasts at least until
r + lease. The worker trusts it only until r + `lease_trust`, where

    lease_trust = lease - hang_kill_bound(0, check_interval) - LEASE_MARGIN

Past that point without a newer renewal (the database is slow or cut off, or the renewal found
the lease gone), the worker cancels the task; past the trust point + `overdue_grace` a task
that ignores its cancellation stops the worker's heartbeat (`dispatcher.overdue`), exactly as
a task past its time limit does. A worker that is stopped (SIGSTOP, a blocked loop) at any
moment before then stops both renewing and beating. Either way its last heartbeat is written
at most r + lease_trust + overdue_grace + heartbeat_period, and the supervisor kills it at most
heartbeat_timeout + check_interval later:

    kill <= r + lease_trust + hang_kill_bound(0, check_interval) = r + lease - LEASE_MARGIN

before the lease can pass to another worker. So no two workers run a task at once while its
lease is valid, and a dead runner's task is free at most `lease` after its last renewal.
Renewals come every `renewal_period` = lease / 4, and the trust must cover two of them (one
renewal may fail or be slow without cancelling anything): lease >= `shortest_lease`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from sqlatasks import errors

Backoff = Literal["fixed", "exponential"]

UNKNOWN_TASK_WAIT = 30.0
"""Seconds before a task that the runner claiming it does not know (errors.TaskUnknown) is due
again, for any runner: long enough that a runner missing an --import does not spin on the
rows it cannot run, short against a rolling deploy."""

LEASE_MARGIN = 5.0
"""Seconds of lease past the worst case of killing a hung worker (`hang_kill_bound`): room for
a slow SIGKILL and the supervisor's own scheduling."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """What a task says about its attempts; None means the runner's default."""

    timeout: float | None = None
    """Seconds one attempt may run."""
    retry_delay: float | None = None
    """Seconds before a failed attempt is due again (the first, with exponential backoff)."""
    backoff: Backoff = "fixed"
    """"fixed": every retry waits retry_delay. "exponential": attempt n waits
    retry_delay * 2^(n-1), capped at retry_delay_max, times a jitter between 0.5 and 1."""
    retry_delay_max: float = 3600.0
    """Seconds at most between attempts, with exponential backoff."""
    retry_on: tuple[type[BaseException], ...] | None = None
    """Only failures raising these (or subclasses) are retried; None means every failure."""
    no_retry_on: tuple[type[BaseException], ...] = ()
    """Failures raising these (or subclasses) park at once."""


def time_limit(policy: RetryPolicy, default: float) -> float:
    """Seconds an attempt may run: the task's timeout, else `default`. No cap: the lease is
    renewed while the task runs, so it does not depend on any time limit."""
    return policy.timeout or default


def retry_delay(policy: RetryPolicy, attempt: int, default: float) -> float:
    """Seconds before attempt `attempt` (1 = the first, which just failed) runs again."""
    base = default if policy.retry_delay is None else policy.retry_delay
    if policy.backoff == "fixed":
        return base
    capped = min(policy.retry_delay_max, base * 2.0 ** min(attempt - 1, 60))
    return capped * random.uniform(0.5, 1.0)  # jitter: retries of a burst spread out


def exhausted(attempts: int, max_attempts: int | None) -> bool:
    """Whether `attempts` finished attempts use up the task's allowance."""
    return max_attempts is not None and attempts >= max_attempts


def after_failure(
    policy: RetryPolicy,
    attempt: int,
    max_attempts: int | None,
    default_delay: float,
    raised: type[BaseException] | None = None,
) -> float | None:
    """Seconds until a task whose attempt `attempt` failed is due again; None parks it.

    `raised` is the type of what the attempt raised (TimeoutError for its time limit), None
    when it ended without an exception of its own (its worker died): only `max_attempts`
    parks it then."""
    if exhausted(attempt, max_attempts) or (raised is not None and gives_up(policy, raised)):
        return None
    return retry_delay(policy, attempt, default_delay)


def gives_up(policy: RetryPolicy, raised: type[BaseException]) -> bool:
    """Whether a failure raising `raised` parks at once, whatever attempts are left:
    GiveUp always; then `no_retry_on` wins over `retry_on`."""
    if issubclass(raised, errors.GiveUp) or issubclass(raised, policy.no_retry_on):
        return True
    return policy.retry_on is not None and not issubclass(raised, policy.retry_on)


def lost_before(attempt: int, max_attempts: int | None) -> bool:
    """Whether a task claimed for attempt `attempt` has no attempt left to run: the previous
    one was cut short (its worker died, its lease expired), and it counts as a failure."""
    return exhausted(attempt - 1, max_attempts)


# -- the supervisor's watch over hung workers, and the lease derived from it ---------------


def heartbeat_period(check_interval: float) -> float:
    """Seconds between a worker's heartbeats: several per check, at least one a second."""
    return min(1.0, check_interval / 4)


def overdue_grace(check_interval: float) -> float:
    """Seconds a task may run past its time limit (ignoring its cancellation) before its
    worker stops beating, so that the supervisor kills it."""
    return check_interval


def heartbeat_timeout(check_interval: float) -> float:
    """Seconds without a heartbeat after which the supervisor kills a worker as hung."""
    return 2 * check_interval


def hang_kill_bound(time_limit: float, check_interval: float) -> float:
    """Worst case, in seconds from its claim, for the supervisor to kill the worker of a task
    that will not stop: its time limit, the grace past it, the last heartbeat, the heartbeat
    timeout, and one check interval until the supervisor looks."""
    return (
        time_limit
        + overdue_grace(check_interval)
        + heartbeat_period(check_interval)
        + heartbeat_timeout(check_interval)
        + check_interval
    )


def renewal_period(lease: float) -> float:
    """Seconds between a worker's renewals of the leases of its running tasks."""
    return lease / 4


def lease_trust(lease: float, check_interval: float) -> float:
    """Seconds after sending a renewal (or a claim) that the worker keeps the task running
    without a newer one: past it, the task is cancelled, and if it will not stop, its worker
    is killed before the lease ends (the derivation in the module docstring)."""
    return lease - hang_kill_bound(0.0, check_interval) - LEASE_MARGIN


def shortest_lease(check_interval: float) -> float:
    """The shortest lease that `check_interval` allows: its trust outlasts two renewal
    periods, so one failed or slow renewal cancels nothing."""
    # lease - K - M >= 2 * lease / 4  <=>  lease >= 2 * (K + M)
    return 2 * (hang_kill_bound(0.0, check_interval) + LEASE_MARGIN)


def lease_problem(lease: float, check_interval: float) -> str | None:
    """Why `lease` is too short for `check_interval`, or None."""
    least = shortest_lease(check_interval)
    if lease >= least:
        return None
    return (
        f"a {lease:g} s lease is too short for a {check_interval:g} s check interval: the "
        f"supervisor may take {hang_kill_bound(0.0, check_interval):g} s to kill a stopped "
        f"worker, so the lease must be at least {least:g} s"
    )
