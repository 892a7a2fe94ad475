"""The rules of an attempt, in one place: no I/O, so they are tested without a database.

The runner's executor, the supervisor's rescue of a dead worker's tasks and
`sqlatasks.testing` all ask these functions; none re-implements them.

    time limit     the task's own timeout, else the runner's --task-timeout; never past the
                   cap the claim's lease was sized for
    retry or park  a failed attempt parks the task once it has used max_attempts, or at once
                   when it raised GiveUp, an exception of `no_retry_on`, or one outside
                   `retry_on`; otherwise it is due again after the task's delay (fixed, or
                   exponential with jitter)
    lease          outlasts the longest time limit plus the time the supervisor needs to see
                   a hung worker and kill it (`hang_kill_bound`), so no second worker takes a
                   task while a live one may still be running it
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from sqlatasks import errors

Backoff = Literal["fixed", "exponential"]

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


def time_limit(policy: RetryPolicy, default: float, cap: float) -> float:
    """Seconds an attempt may run: the task's timeout, else `default`, at most `cap`."""
    return min(policy.timeout or default, cap)


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


def lease_seconds(longest_time_limit: float, check_interval: float) -> float:
    """How long a claim holds a task: the worst case of killing a hung worker running the
    longest time limit, plus LEASE_MARGIN."""
    return hang_kill_bound(longest_time_limit, check_interval) + LEASE_MARGIN
