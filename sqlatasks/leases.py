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

The same loop writes the progress values tasks report (`TaskRun.report` → `Lease.report`), on
the same connection, by lease token too: the latest value of each task, in one statement per
worker at most once every `context.PROGRESS_PERIOD`, and nothing at all while no task reports.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks import attempts, cancellation, errors
from sqlatasks.backoff import Backoff
from sqlatasks.connection import HeldConnection
from sqlatasks.context import PROGRESS_PERIOD
from sqlatasks.outcomes import LeaseLost
from sqlatasks.rows import ClaimedTask
from sqlatasks.slots import Wakeup
from sqlatasks.sql import claim as sql

log = logging.getLogger(__name__)


class Lease:
    """The lease of one running task, as this worker sees it, and the one cancel scope its
    execution runs in (one per task on the hot path, not one per cause). The scope's deadline
    is the earlier of the lease's trust and the task's time limit (`limit`); it is also
    cancelled when a renewal finds the lease gone (`lost`) and by an operator's cancel
    (`interrupt`). Which of them fired is told afterwards: `cut_off` for the lease (and an
    operator's cancel), the time limit by the clock (`sqlatasks.execution`)."""

    __slots__ = (
        "_reported",
        "ends",
        "interrupted",
        "progress",
        "scope",
        "taken_over",
        "trusted_until",
    )

    def __init__(self, trusted_until: float, reported: Wakeup | None = None) -> None:
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
        self.progress: tuple[str, float] | None = None
        """The latest progress the task reported and no write has taken yet: (JSON text,
        `time.monotonic()` when reported)."""
        self._reported = reported

    def report(self, text: str) -> None:
        """`TaskRun.report`'s destination in a worker: keep the value for the next progress
        write (which `reported` wakes). No I/O, nothing awaited; safe from a task's worker
        thread (`anyio.to_thread.run_sync`) too."""
        self.progress = (text, time.monotonic())
        if self._reported is not None:
            self._reported.set_from_any_thread()

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
    reported: Wakeup | None = None,
) -> None:
    """Renew the leases that `held()` returns, one statement every renewal period, until
    cancelled; mark lost those a renewal finds gone. With `reported` (set by `Lease.report`),
    also write the progress the tasks report, on the same connection (`_write_progress`)."""
    connection = HeldConnection(engine, name)
    lock = anyio.Lock()  # one statement at a time on the shared connection
    try:
        async with anyio.create_task_group() as loops:
            if reported is not None:
                period = attempts.renewal_period(lease)
                loops.start_soon(_write_progress, connection, lock, reported, held, period)
            await _renew(connection, lock, lease, check_interval, held)
    finally:
        await connection.close()


async def _renew(
    connection: HeldConnection,
    lock: anyio.Lock,
    lease: float,
    check_interval: float,
    held: Callable[[], Sequence[tuple[ClaimedTask, Lease]]],
) -> None:
    period = attempts.renewal_period(lease)
    trust = attempts.lease_trust(lease, check_interval)
    backoff = Backoff(first=min(0.5, period), most=period)
    wait = period
    while True:
        await anyio.sleep(wait)
        running = list(held())
        wait = period
        if not running:
            continue
        try:
            async with lock:
                sent = anyio.current_time()  # before the statement: the database's now() is later
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


async def _write_progress(
    connection: HeldConnection,
    lock: anyio.Lock,
    reported: Wakeup,
    held: Callable[[], Sequence[tuple[ClaimedTask, Lease]]],
    statement_bound: float,
) -> None:
    """Write the latest progress of the running tasks that reported some, in one statement,
    at most once every PROGRESS_PERIOD; asleep while none reports. A write that finds a lease
    gone marks it lost, as a renewal does."""
    backoff = Backoff(first=PROGRESS_PERIOD, most=max(statement_bound, PROGRESS_PERIOD))
    next_write = -math.inf
    while True:
        await reported.wait(math.inf)
        await anyio.sleep_until(next_write)  # the rate limit: what comes meanwhile replaces
        pending = [(c, ls, ls.progress) for c, ls in held() if ls.progress is not None]
        if not pending:
            continue  # ended (or was cut off) before its value was written: dropped
        next_write = anyio.current_time() + PROGRESS_PERIOD
        now = time.monotonic()
        reports = [(c.id, c.lease_token, p[0], now - p[1]) for c, _, p in pending if p]
        try:
            async with lock:
                with anyio.fail_after(statement_bound):
                    written, busy = await sql.task_progress(await connection.get(), reports)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            await connection.close()
            next_write = anyio.current_time() + backoff.next()
            reported.set()  # the values stay pending: try again then, with the latest
            log.warning(
                "could not write the progress of %d tasks (%s)", len(pending), errors.one_line(exc)
            )
            continue
        backoff.reset()
        for claimed, held_lease, sent in pending:
            if claimed.id in busy:
                reported.set()  # locked by another transaction: try again next time
            elif held_lease.progress is sent:
                held_lease.progress = None  # unless it reported again meanwhile
            if claimed.id not in written and claimed.id not in busy:
                held_lease.lost()  # gone: finished just now, or taken over


def first_trust(
    lease: float, check_interval: float, claim_sent: float, reported: Wakeup | None = None
) -> Lease:
    """The lease of a task just claimed by a statement sent at `claim_sent`; its progress
    reports wake `reported`."""
    return Lease(claim_sent + attempts.lease_trust(lease, check_interval), reported)


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
