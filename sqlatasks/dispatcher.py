"""The claim loop: claim no more than free slots, start each execution, wait for a wake-up.

A claim is one statement. Nothing due → wait for a NOTIFY, a freed slot or the idle sleep,
whichever comes first. On stop: claim nothing more, give running tasks the shutdown timeout,
then cancel what is left and hand it back as Released.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks import errors, execution, flow, leases, outcomes, reporting
from sqlatasks.backoff import Backoff
from sqlatasks.completer import Completer
from sqlatasks.connection import HeldConnection
from sqlatasks.execution import Limits
from sqlatasks.outcomes import Released
from sqlatasks.rows import ClaimedTask
from sqlatasks.slots import EARLY_CLAIM, Slots, Wakeup
from sqlatasks.sql import claim as sql
from sqlatasks.transactions import RunInTransaction

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClaimPolicy:
    worker_id: str
    concurrency: int
    queues: Sequence[str]
    """Queues to claim from; empty means every queue."""
    queue_caps: Mapping[str, int]
    """Most tasks of each of these queues running at once in this worker."""
    check_interval: float
    """The supervisor's; how long a lease is trusted is derived from it (`attempts.lease_trust`)."""
    lease: float
    """Seconds a claim (and each renewal) holds a task."""
    idle_sleep: float
    shutdown_timeout: float
    burst: bool


@dataclass(slots=True, eq=False)
class Running:
    """One task running in this worker: added when claimed, removed when its outcome is in."""

    claimed: ClaimedTask
    limits: Limits
    """Those of its claim."""
    lease: leases.Lease
    """Renewed while it runs (`leases.keep`); what cancels the task: a lost or untrusted
    lease, the end of its time limit (the worker's `leases.Watchdog`), an operator."""
    cancelled: bool = False
    """An operator cancelled it (NOTIFY) before it was cut off from its lease."""


class Dispatcher:
    """Keeps up to `concurrency` tasks running in this worker."""

    def __init__(
        self,
        engine: AsyncEngine,
        completer: Completer,
        policy: ClaimPolicy,
        limits: Limits,
        transactions: RunInTransaction,
    ) -> None:
        name = f"sqlatasks claim {policy.worker_id}"
        self._connection = HeldConnection(engine, name, on_open=sql.plan_each_claim)
        self._completer = completer
        self._policy = policy
        self._limits = limits
        self._transactions = transactions
        self._running: dict[int, Running] = {}
        self._waiting_for_slots = False
        self._early_claim_from = max(EARLY_CLAIM, policy.concurrency / 2)
        self._wakeup = Wakeup()
        self._watchdog = leases.Watchdog(lambda: (r.lease for r in self._running.values()))
        self.reported = Wakeup()
        """Set when a running task reports progress: wakes the lease keeper's progress write."""
        self._stopping = False
        self.stop_reason: str | None = None
        """Why `stop()` was first called; None when the run ended by itself (burst)."""
        self._executions: anyio.CancelScope | None = None
        self._to_give_back: list[uuid.UUID] = []
        """Tokens of failed claim rounds not yet given back (the server was unreachable)."""
        self._queue_settings = flow.QueueSettings(refresh_every=policy.idle_sleep)
        """The database's queue settings (pause, limits), re-read once per idle sleep."""

    def _claim_before_the_batch_ends(self) -> bool:
        """Whether a slot running a batch through (tasks that never wait) should let the claim
        loop claim for the free slots while the rest runs: once half of them, and no fewer
        than `slots.EARLY_CLAIM`, are free (docs/performance.md, "Fifth round")."""
        free = self._policy.concurrency - len(self._running)
        return self._waiting_for_slots and free >= self._early_claim_from

    def wake(self) -> None:
        self._wakeup.set()

    def overdue(self, grace: float) -> list[ClaimedTask]:
        """Tasks still running `grace` seconds past their time limit: they ignore their
        cancellation, and only killing the process stops them."""
        now = anyio.current_time()
        ends = ((r, r.lease.deadline) for r in self._running.values())
        return [r.claimed for r, end in ends if now > end + grace]

    def deadlines(self) -> dict[int, float]:
        """Each running task's end of its time limit (anyio's clock: with asyncio and uvloop,
        the system-wide monotonic clock), for the heartbeat."""
        return {i: r.lease.ends for i, r in self._running.items() if r.lease.ends < math.inf}

    def leased(self, grace: float) -> list[tuple[ClaimedTask, leases.Lease]]:
        """The leases to renew: not of tasks past their time limit + `grace` (their leases run
        out while the supervisor kills the worker), nor of tasks already cut off."""
        now = anyio.current_time()
        return [
            (r.claimed, r.lease)
            for r in self._running.values()
            if not r.lease.cut_off and now <= r.lease.ends + grace
        ]

    def stop(self, reason: str, *, now: bool = False) -> None:
        """Claim nothing more; with `now`, also interrupt running tasks at once."""
        self.stop_reason = self.stop_reason or reason
        self._stopping = True
        self._wakeup.set()
        if now and self._executions is not None:
            self._executions.cancel()

    async def run(self) -> None:
        """Claim and run until stopped (or, in burst mode, until nothing is due or running)."""
        # Long-lived execution slots (sqlatasks.slots), not a task spawned per execution.
        slots = Slots(self._execute, make_way=self._claim_before_the_batch_ends)
        async with anyio.create_task_group() as executions:
            self._executions = executions.cancel_scope
            for slot in range(self._policy.concurrency):
                executions.start_soon(slots.serve, name=f"execution slot {slot}")
            executions.start_soon(self._watchdog.run, name="deadline watchdog")
            try:
                await self._claim_loop(slots)
            finally:
                await self._connection.close()
            with anyio.move_on_after(self._policy.shutdown_timeout):
                while self._running:
                    await self._wakeup.wait(math.inf)
            executions.cancel_scope.cancel()
        for running in self._running.values():
            self._completer.submit(Released(running.claimed))
        if self._running:
            log.warning("released %d unfinished tasks at shutdown", len(self._running))
        self._running.clear()

    async def _claim_loop(self, slots: Slots[Running]) -> None:
        backoff = Backoff(first=0.5, most=30.0)
        while not self._stopping:
            plan = self._claim_plan()
            if not plan:  # every slot (or every capped queue) is busy
                self._waiting_for_slots = True
                try:
                    await self._wakeup.wait(math.inf)
                finally:
                    self._waiting_for_slots = False
                continue
            # Quiet before the claim, not only after it: a task that ends while the claim runs
            # may make work due (a retry, a task it enqueued) that the claim could not see.
            quiet = not self._running and not self._completer.pending
            limits = self._limits
            try:
                if self._to_give_back:
                    await self._undo_claims([])
                sent = anyio.current_time()
                claimed = await self._claim(plan)
                backoff.reset()
            except (SQLAlchemyError, OSError) as exc:
                delay = backoff.next()
                log.warning("claim failed (%s); retrying in %.1f s", errors.one_line(exc), delay)
                await self._wakeup.wait(delay)
                continue
            policy = self._policy
            trusted_until = leases.first_trust(policy.lease, policy.check_interval, sent)
            for task in claimed:
                lease = leases.Lease(trusted_until, self.reported)
                running = self._running[task.id] = Running(task, limits, lease=lease)
                slots.put(running)
            if len(claimed) == sum(limit for _, limit in plan):
                continue  # there may be more due: claim again once slots free up
            if self._policy.burst and not claimed and not self._running:
                if quiet and not self._completer.pending:
                    return
                # A failure just written may make its task due again at once (retry_delay=0):
                # look again once the outcomes are in, before calling the queue drained.
                with anyio.move_on_after(self._policy.idle_sleep):
                    await self._completer.flushed()
                continue
            await self._wakeup.wait(
                self._queue_settings.idle_sleep(self._policy.idle_sleep, self._policy.queues)
            )

    def _claim_plan(self) -> list[tuple[Sequence[str], int]]:
        """(queues, how many) for each claim statement to issue now; one without caps."""
        free = self._policy.concurrency - len(self._running)
        caps = self._policy.queue_caps
        if free <= 0 or not caps:
            return [(self._policy.queues, free)] if free > 0 else []
        busy = Counter(running.claimed.queue for running in self._running.values())
        plan: list[tuple[Sequence[str], int]] = []
        for queue, cap in caps.items():
            room = min(cap - busy[queue], free)
            if room > 0:
                plan.append(((queue,), room))
                free -= room
        uncapped = [q for q in self._policy.queues if q not in caps]
        if uncapped and free > 0:
            plan.append((uncapped, free))
        return plan

    async def _claim(self, plan: list[tuple[Sequence[str], int]]) -> list[ClaimedTask]:
        # A claim is never cancelled half-way: its rows would stay leased to no one.
        claimed: list[ClaimedTask] = []
        tokens: list[uuid.UUID] = []
        with anyio.CancelScope(shield=True):
            try:
                await self._queue_settings.refresh(await self._connection.get())
                for queues, limit in plan:
                    for step in self._queue_settings.steps(queues):
                        room = limit - sum(1 for task in claimed if _in(task, queues))
                        if room <= 0:
                            break
                        tokens.append(uuid.uuid4())
                        claimed += await sql.task_claim(
                            await self._connection.get(),
                            queues=step.queues,
                            excluded=step.excluded,
                            limited=step.limited,
                            limit=room,
                            lease_seconds=self._policy.lease,
                            worker_id=self._policy.worker_id,
                            token=tokens[-1],
                        )
            except (SQLAlchemyError, OSError):
                await self._connection.close()
                with contextlib.suppress(SQLAlchemyError, OSError):
                    await self._undo_claims(tokens)
                raise
        return claimed

    async def _undo_claims(self, tokens: list[uuid.UUID]) -> None:
        """After a failed claim round, give back what it may have leased (a claim can commit
        and still lose its answer). If that fails too (the server is restarting), the tokens
        are given back before the next claim round, so the tasks wait for the server, not for
        their leases to expire. Harmless if the claim never committed: no row has the token."""
        self._to_give_back += tokens
        try:
            with anyio.fail_after(10):
                await sql.claim_undo(await self._connection.get(), self._to_give_back)
            self._to_give_back.clear()
        except (SQLAlchemyError, OSError) as exc:
            await self._connection.close()
            log.warning(
                "could not give back a failed claim yet (%s); retrying before the next claim",
                errors.one_line(exc),
            )
            raise

    def cancel_running(self, payload: str) -> None:
        """Interrupt the running task whose id is `payload`, if it runs here."""
        running = self._running.get(int(payload)) if payload.isdigit() else None
        if running is not None and not running.lease.cut_off:
            running.cancelled = True
            running.lease.interrupt()

    async def _execute(self, running: Running, cancel: Callable[[], None]) -> None:
        """Run one claimed task in an execution slot; `cancel()` cancels the slot's scope,
        which the task runs in."""
        claimed = running.claimed

        def started(deadline: float) -> None:
            running.lease.start(deadline, cancel)
            self._watchdog.started(running.lease)

        # One Lease per task for every cause (its time limit, its lease, an operator).
        try:
            outcome = await execution.execute(
                claimed,
                running.limits,
                self._transactions,
                on_start=started,
                control=running.lease,
                on_report=running.lease.report,
            )
        finally:
            running.lease.finish()
        # A session task whose commit was under way when the cancel came is done: keep that.
        elsewhere = isinstance(outcome, outcomes.WRITTEN_ELSEWHERE)
        cut_off = running.lease.cut_off and not running.cancelled and not elsewhere
        if cut_off:
            outcome = leases.lost(claimed, running.lease)
        elif outcome is None or (running.cancelled and not elsewhere):
            outcome = outcomes.Cancelled(claimed)
            log.info("task %d %s cancelled while running", claimed.id, claimed.task_name)
        del self._running[claimed.id]
        assert outcome is not None
        self._completer.submit(outcome)  # counted; written unless written elsewhere
        if not cut_off:
            reporting.log_failure(claimed, outcome)
        self._wakeup.set()


def _in(task: ClaimedTask, queues: Sequence[str]) -> bool:
    return not queues or task.queue in queues
