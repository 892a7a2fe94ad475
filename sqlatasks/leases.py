"""The leases of a worker's running tasks: renewed in one statement every renewal period.

A claim holds a task for `--lease` seconds; while the task runs, its worker renews that lease
every `attempts.renewal_period`, by lease token, so a lease that passed to another claim is
never renewed. So a task of a runner that died waits at most one lease for another runner,
however long its time limit.

Each running task has a `Lease`, whose deadline is the end of the lease's trust
(`attempts.lease_trust` after the last renewal was sent) or of its time limit. The task is
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
from collections.abc import Callable, Iterable, Sequence

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
    """The lease of one running task, as this worker sees it, and what cancels the task: the
    end of the lease's trust, the end of its time limit (`start`), a renewal that finds the
    lease gone (`lost`) or an operator's cancel (`interrupt`).

    No cancel scope or timer per task: the task runs in its execution slot's long-lived scope
    (`sqlatasks.slots`), which `start` hands over as `cancel`; the worker's one watchdog
    (`Watchdog`) calls `expire` once `deadline` has passed. Which cause fired is
    told afterwards: `cut_off` for the lease (and an operator's cancel), the time limit by the
    clock (`sqlatasks.execution`)."""

    __slots__ = (
        "_cancel",
        "_reported",
        "cancel_called",
        "ends",
        "interrupted",
        "progress",
        "taken_over",
        "trusted_until",
    )

    def __init__(self, trusted_until: float, reported: Wakeup | None = None) -> None:
        self.trusted_until = trusted_until
        """The event loop's clock: when the task is cancelled unless a renewal gets through
        first."""
        self.ends = math.inf
        """The event loop's clock: when the task's time limit runs out, once it has started."""
        self.cancel_called = False
        """The task was told to stop, for any cause (like a cancel scope's `cancel_called`)."""
        self.taken_over = False
        """A renewal found the lease gone (else, if cut off, no renewal got through in time)."""
        self.interrupted = False
        """Cancelled on purpose: the lease was found gone, or an operator cancelled the task."""
        self.progress: tuple[str, float] | None = None
        """The latest progress the task reported and no write has taken yet: (JSON text,
        `time.monotonic()` when reported)."""
        self._reported = reported
        self._cancel: Callable[[], None] | None = None
        """Cancels the task while it runs (its slot's scope); None before and after."""

    def report(self, text: str) -> None:
        """`TaskRun.report`'s destination in a worker: keep the value for the next progress
        write (which `reported` wakes). No I/O, nothing awaited; safe from a task's worker
        thread (`anyio.to_thread.run_sync`) too."""
        self.progress = (text, time.monotonic())
        if self._reported is not None:
            self._reported.set_from_any_thread()

    @property
    def deadline(self) -> float:
        """When the watchdog cancels the task (the event loop's clock): the earlier of the end
        of the lease's trust and of its time limit."""
        return min(self.trusted_until, self.ends)

    @property
    def running(self) -> bool:
        """Between `start` and `finish`."""
        return self._cancel is not None

    @property
    def cut_off(self) -> bool:
        """Whether the task was cancelled for its lease (lost, or not renewed in time) or by an
        operator; not when only its time limit ran out (its lease is still renewed then)."""
        if not self.cancel_called:  # the hot path: nothing happened
            return False
        return self.interrupted or cancellation.clock() >= self.trusted_until

    def start(self, ends: float, cancel: Callable[[], None]) -> None:
        """The task starts, its time limit runs out at `ends` (the event loop's clock), and
        `cancel()` cancels it until `finish`. A lease already cancelled (an operator's cancel
        before the start), or whose deadline has passed, cancels the task at once: it ends at
        its first await."""
        self.ends = ends
        self._cancel = cancel
        if not self.cancel_called and self.deadline <= cancellation.clock():
            self.cancel_called = True
        if self.cancel_called:
            cancel()

    def finish(self) -> None:
        """The task ended: what comes later (a renewal's answer) must not cancel its slot's
        next task."""
        self._cancel = None

    def expire(self) -> None:
        """The deadline passed (the watchdog): cancel the task."""
        self._fire()

    def renewed(self, trusted_until: float) -> None:
        if self.cut_off:  # a renewal that answers after the lease's trust ran out is too late
            return
        self.trusted_until = max(self.trusted_until, trusted_until)

    def lost(self) -> None:
        self.taken_over = True
        self.interrupt()

    def interrupt(self) -> None:
        """Cancel the task now (its lease is lost, or an operator cancelled it)."""
        self.interrupted = True
        self._fire()

    def _fire(self) -> None:
        self.cancel_called = True
        if self._cancel is not None:
            self._cancel()


class Watchdog:
    """Cancels each running task once its lease's deadline (the end of its time limit, or of
    the lease's trust) has passed: one loop per worker, asleep until the nearest deadline,
    instead of a timer per task. Renewals only move deadlines later: it then wakes early,
    finds nothing due, and sleeps again."""

    def __init__(self, leases: Callable[[], Iterable[Lease]]) -> None:
        """`leases()`: those of the tasks running now (claimed ones not started yet too)."""
        self._leases = leases
        self._wakeup = Wakeup()
        self._until = math.inf
        """When it wakes next, unless woken (the event loop's clock)."""

    def started(self, lease: Lease) -> None:
        """A task started (`Lease.start`): wake the watchdog if its deadline comes first."""
        if lease.deadline < self._until:
            self._until = lease.deadline
            self._wakeup.set()

    async def run(self) -> None:
        while True:
            now = cancellation.clock()
            nearest = math.inf
            for lease in self._leases():
                if not lease.running or lease.cancel_called:
                    continue  # not started yet (`Lease.start` checks), or already told
                deadline = lease.deadline
                if deadline <= now:
                    lease.expire()
                elif deadline < nearest:
                    nearest = deadline
            self._until = nearest
            await self._wakeup.wait(nearest - now)


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


def first_trust(lease: float, check_interval: float, claim_sent: float) -> float:
    """Until when the leases of the tasks just claimed by a statement sent at `claim_sent`
    are trusted (the event loop's clock): `Lease(first_trust(...), reported)`."""
    return claim_sent + attempts.lease_trust(lease, check_interval)


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
