"""The leases of a worker's running tasks: renewed in one statement every renewal period.

A claim holds a task for `--lease` seconds; while the task runs, its worker renews that lease
every `attempts.renewal_period`, by lease token, so a lease that passed to another claim is
never renewed. So a task of a runner that died waits at most one lease for another runner,
however long its time limit.

Each running task has a `Lease`: a cancel scope around its execution whose deadline is the end
of the lease's trust (`attempts.lease_trust` after the last renewal was sent). The task is
cancelled when a renewal finds its lease gone, or when no renewal got through in time (the
database is slow or cut off): either way another worker may take it over, and nothing about
it is written (LeaseLost). A task that will not stop is handled like one past its time limit
(`Dispatcher.overdue`): its worker stops beating and the supervisor kills it before the lease
ends (the derivation in `sqlatasks.attempts`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks import attempts, cancellation, errors
from sqlatasks.backoff import Backoff
from sqlatasks.connection import HeldConnection
from sqlatasks.outcomes import LeaseLost
from sqlatasks.rows import ClaimedTask
from sqlatasks.sql import claim as sql

log = logging.getLogger(__name__)


class Lease:
    """The lease of one running task, as this worker sees it, and the one cancel scope its
    execution runs in (one per task on the hot path, not one per cause). The scope's deadline
    is the earlier of the lease's trust and the task's time limit (`limit`); it is also
    cancelled when a renewal finds the lease gone (`lost`) and by an operator's cancel
    (`interrupt`). Which of them fired is told afterwards: `cut_off` for the lease (and an
    operator's cancel), the time limit by the clock (`sqlatasks.execution`)."""

    __slots__ = ("ends", "interrupted", "scope", "taken_over", "trusted_until")

    def __init__(self, trusted_until: float) -> None:
        self.scope = cancellation.new_scope(trusted_until)
        """Wraps the execution; entered by `sqlatasks.execution`."""
        self.trusted_until = trusted_until
        """anyio's clock: when the task is cancelled unless a renewal gets through first."""
        self.ends = math.inf
        """anyio's clock: when the task's time limit runs out, once it has started."""
        self.taken_over = False
        """A renewal found the lease gone (else, if cut off, no renewal got through in time)."""
        self.interrupted = False
        """Cancelled on purpose: the lease was found gone, or an operator cancelled the task."""

    @property
    def cut_off(self) -> bool:
        """Whether the task was cancelled for its lease (lost, or not renewed in time) or by an
        operator; not when only its time limit ran out (its lease is still renewed then)."""
        if not self.scope.cancel_called:  # the hot path: nothing happened
            return False
        return self.interrupted or anyio.current_time() >= self.trusted_until

    def limit(self, ends: float) -> None:
        """The task starts, and its time limit runs out at `ends` (anyio's clock)."""
        self.ends = ends
        self.scope.deadline = min(self.trusted_until, ends)

    def renewed(self, trusted_until: float) -> None:
        if self.cut_off:  # a renewal that answers after the lease's trust ran out is too late
            return
        self.trusted_until = max(self.trusted_until, trusted_until)
        self.scope.deadline = min(self.trusted_until, self.ends)

    def lost(self) -> None:
        self.taken_over = True
        self.interrupt()

    def interrupt(self) -> None:
        """Cancel the task now (its lease is lost, or an operator cancelled it)."""
        self.interrupted = True
        self.scope.cancel()


async def keep(
    engine: AsyncEngine,
    name: str,
    *,
    lease: float,
    check_interval: float,
    held: Callable[[], Sequence[tuple[ClaimedTask, Lease]]],
) -> None:
    """Renew the leases that `held()` returns, one statement every renewal period, until
    cancelled; mark lost those a renewal finds gone."""
    connection = HeldConnection(engine, name)
    period = attempts.renewal_period(lease)
    trust = attempts.lease_trust(lease, check_interval)
    backoff = Backoff(first=min(0.5, period), most=period)
    wait = period
    try:
        while True:
            await anyio.sleep(wait)
            running = list(held())
            wait = period
            if not running:
                continue
            sent = anyio.current_time()  # before the statement: the database's now() is later
            try:
                # A renewal slower than its period is no use; give up and try again at once.
                with anyio.fail_after(period):
                    renewed, busy = await sql.task_renew(
                        await connection.get(), [(c.id, c.lease_token) for c, _ in running], lease
                    )
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                await connection.close()
                wait = backoff.next()
                log.warning(
                    "could not renew %d leases (%s); retrying in %.1f s",
                    len(running),
                    errors.one_line(exc),
                    wait,
                )
                continue
            backoff.reset()
            for claimed, held_lease in running:
                if claimed.id in renewed:
                    held_lease.renewed(sent + trust)
                elif claimed.id not in busy:
                    # Gone: finished just now (harmless: its execution is over) or taken over.
                    held_lease.lost()
    finally:
        await connection.close()


def first_trust(lease: float, check_interval: float, claim_sent: float) -> Lease:
    """The lease of a task just claimed by a statement sent at `claim_sent`."""
    return Lease(claim_sent + attempts.lease_trust(lease, check_interval))


def lost(claimed: ClaimedTask, lease: Lease) -> LeaseLost:
    """The outcome of a task cut off from its lease: its row may be another claim's now, so
    nothing is written about it (if it is still ours, it is claimed again once it expires)."""
    log.warning(
        "task %d %s attempt %d lost its lease (%s): cancelled; it runs again under a new claim",
        claimed.id,
        claimed.task_name,
        claimed.attempts,
        "taken over by another claim" if lease.taken_over else "not renewed in time",
    )
    return LeaseLost(claimed)
