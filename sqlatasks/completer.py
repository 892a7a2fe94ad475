"""Writing outcomes: the only writer of what became of a claimed task.

The worker's executions hand their outcomes here; the supervisor's rescue of a dead worker's
tasks and `sqlatasks.testing` write theirs through `write_outcomes` too. (A session task's
own transaction deletes its row itself, and the claim gives back what a lost claim leased:
neither is an outcome.)

Outcomes queue up while a write is in flight and go out together in the next one: at most one
DELETE (acks) and one UPDATE for each other kind (failures, releases, snoozes, deferrals),
each naming the lease tokens.
Each statement stands alone (the worker's connections autocommit). A write that fails
(connection lost, server restarting) is retried with backoff; it is idempotent, since a row
already written no longer matches its token.

With a `throughput.Tally`, every outcome submitted is also counted, and every `interval`
seconds the counts go out on the same connection, between batches: one statement per flush,
no connection of its own (sqlatasks.throughput).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sqlatasks import errors, rows, throughput
from sqlatasks.backoff import Backoff
from sqlatasks.connection import HeldConnection
from sqlatasks.outcomes import (
    WRITTEN_ELSEWHERE,
    Completed,
    Deferred,
    Failed,
    Outcome,
    Released,
    Snoozed,
)
from sqlatasks.sql import outcomes as sql

log = logging.getLogger(__name__)

MAX_BATCH = 1000


class Completer:
    """Buffers outcomes and writes them in batches until closed and drained."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        name: str,
        give_up_after_close: float,
        tally: throughput.Tally | None = None,
    ) -> None:
        self._connection = HeldConnection(engine, name)
        self._give_up_after_close = give_up_after_close
        self._tally = tally
        # None: a flush tick (every tally.interval), in line with the outcomes.
        self._send: MemoryObjectSendStream[Outcome | None]
        self._receive: MemoryObjectReceiveStream[Outcome | None]
        self._send, self._receive = anyio.create_memory_object_stream[Outcome | None](math.inf)
        self._closed_at: float | None = None
        self.pending = 0
        """Outcomes submitted and not yet written (or given up on)."""
        self._written = anyio.Event()

    def submit(self, outcome: Outcome) -> None:
        """Take an attempt's outcome: counted in the tally, and written unless its row was
        written elsewhere (`outcomes.WRITTEN_ELSEWHERE`)."""
        if self._tally is not None:
            self._tally.count(outcome)
        if isinstance(outcome, WRITTEN_ELSEWHERE):
            return
        self.pending += 1
        self._send.send_nowait(outcome)

    async def flushed(self) -> None:
        """Return once every outcome submitted so far has been written (or given up on)."""
        while self.pending:
            await self._written.wait()

    def close(self) -> None:
        """No more outcomes: `run` writes what is buffered, then returns."""
        self._closed_at = anyio.current_time()
        self._send.close()

    async def run(self) -> None:
        async with self._receive, anyio.create_task_group() as ticks:
            if self._tally is not None:
                ticks.start_soon(self._tick, self._tally.interval)
            try:
                await self._drain()
                await self._flush()  # the last counts, once every outcome is written
            finally:
                ticks.cancel_scope.cancel()
                await self._connection.close()

    async def _drain(self) -> None:
        async for first in self._receive:
            # Let what else was woken with us go first (the claim loop, as slots free up): its
            # statement is then on the server while this batch is built, and more outcomes
            # join the batch. Shielded: `first` is taken, and must be written.
            await anyio.lowlevel.cancel_shielded_checkpoint()
            batch: list[Outcome] = [] if first is None else [first]
            flush = first is None
            while len(batch) < MAX_BATCH:
                try:
                    item = self._receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                if item is None:
                    flush = True
                else:
                    batch.append(item)
            if batch:
                # Shielded: a batch that is being written is finished even when cancelled.
                with anyio.CancelScope(shield=True):
                    await self._write(batch)
                self.pending -= len(batch)
                self._written.set()
                self._written = anyio.Event()
            if flush:
                await self._flush()

    async def _tick(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            try:
                self._send.send_nowait(None)
            except anyio.ClosedResourceError:
                return

    async def _flush(self) -> None:
        """Write the tally's counts once; on an error they wait for the next flush."""
        if self._tally is None:
            return
        # Shielded from the worker's cancellation, but bounded: after close() never past the
        # grace the outcomes had (the counts are lost rather than the stop delayed). A statement
        # the bound cuts goes with its connection; the counts stay in the tally.
        limit = self._give_up_after_close
        if self._closed_at is not None:
            limit += self._closed_at - anyio.current_time()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(max(limit, 0.0)) as bound:
                try:
                    await throughput.flush(self._tally, await self._connection.get())
                    return
                except (SQLAlchemyError, OSError) as exc:
                    log.warning("could not write throughput counts (%s)", errors.one_line(exc))
            if bound.cancelled_caught:
                log.warning("writing throughput counts timed out; kept for the next flush, if any")
            await self._connection.close()  # after an error or a statement cut half-way

    async def _write(self, batch: list[Outcome]) -> None:
        backoff = Backoff(first=0.1, most=5.0)
        while True:
            try:
                await self._write_once(batch)
                return
            except (SQLAlchemyError, OSError) as exc:
                if _in_the_batch(exc):
                    # Not the connection but something in the batch: retrying it whole would
                    # fail for ever and stall every later outcome behind it.
                    await self._write_each(batch, exc)
                    return
                if self._past_deadline():
                    log.error(
                        "gave up writing %d outcomes at shutdown (%s); their leases will "
                        "expire and the tasks will run again",
                        len(batch),
                        errors.one_line(exc),
                    )
                    return
                delay = backoff.next()
                log.warning(
                    "writing %d outcomes failed (%s); retrying in %.1f s",
                    len(batch),
                    errors.one_line(exc),
                    delay,
                )
                await anyio.sleep(delay)

    async def _write_each(self, batch: list[Outcome], first: BaseException) -> None:
        log.error(
            "writing %d outcomes failed (%s); writing them one by one",
            len(batch),
            errors.one_line(first),
        )
        for outcome in batch:
            try:
                await self._write_once([outcome])
            except (SQLAlchemyError, OSError) as exc:
                log.error(
                    "dropped the outcome of task %d (%s); its lease will expire and it will "
                    "run again",
                    outcome.task.id,
                    errors.one_line(exc),
                )

    async def _write_once(self, batch: list[Outcome]) -> None:
        try:
            written = await write_outcomes(await self._connection.get(), batch)
        except (SQLAlchemyError, OSError):
            await self._connection.close()
            raise
        if written < len(batch):
            log.warning(
                "%d of %d outcomes matched no lease (their leases had expired and passed on, or "
                "an operator cancelled them); nothing was written for them",
                len(batch) - written,
                len(batch),
            )

    def _past_deadline(self) -> bool:
        return (
            self._closed_at is not None
            and anyio.current_time() - self._closed_at > self._give_up_after_close
        )


BATCH_PROBLEM_CLASSES = ("22", "23")
"""SQLSTATE classes of an error in the values written, not in the connection: data exception
(a timestamp or interval out of range, text jsonb refuses), integrity constraint violation."""


def _in_the_batch(exc: BaseException) -> bool:
    """Whether a failed write failed for something in its outcomes, which no retry of the same
    batch can fix. asyncpg's errors reach SQLAlchemy as a plain DBAPIError, whatever their
    kind: its SQLSTATE says which."""
    if isinstance(exc, DataError | IntegrityError | ProgrammingError):
        return True
    state = errors.sqlstate(exc)
    return state is not None and state.startswith(BATCH_PROBLEM_CLASSES)


async def write_outcomes(conn: AsyncConnection, batch: Sequence[Outcome]) -> int:
    """Write a batch of outcomes, one statement per kind; the number of rows changed.
    Outcomes in `outcomes.WRITTEN_ELSEWHERE` have no row to write, and are skipped. Tasks that
    keep nothing are deleted by the plain DELETE; only kept ones take the statement that moves
    them to the finished tasks."""
    by_kind = _by_kind(batch)
    written = 0
    if by_kind.acks:
        written += await sql.task_ack(conn, by_kind.acks)
    if by_kind.kept:
        written += await sql.task_ack_kept(conn, by_kind.kept)
    if by_kind.failures:
        written += await sql.task_fail(conn, by_kind.failures)
        parked = [f.id for f in by_kind.failures if f.retry_in is None]
        if parked:  # for wait_for(); a retried failure is not an end
            await sql.parked_notify(conn, parked)
    if by_kind.releases:
        written += await sql.task_release(conn, by_kind.releases)
    if by_kind.snoozes:
        written += await sql.task_snooze(conn, by_kind.snoozes)
    if by_kind.deferrals:
        written += await sql.task_defer(conn, by_kind.deferrals)
    return written


@dataclass
class _Kinds:
    """One batch's outcomes, as the parameters of each kind's statement."""

    acks: list[tuple[int, uuid.UUID]] = field(default_factory=list)
    kept: list[rows.Finished] = field(default_factory=list)
    failures: list[rows.Failure] = field(default_factory=list)
    releases: list[tuple[int, uuid.UUID]] = field(default_factory=list)
    snoozes: list[tuple[int, uuid.UUID, float]] = field(default_factory=list)
    deferrals: list[rows.Failure] = field(default_factory=list)


def _by_kind(batch: Sequence[Outcome]) -> _Kinds:
    kinds = _Kinds()
    for o in batch:
        held = (o.task.id, o.task.lease_token)
        if isinstance(o, Completed):
            if o.kept is None:
                kinds.acks.append(held)
            else:
                kinds.kept.append(_finished(o))
        elif isinstance(o, Failed):
            kinds.failures.append(rows.Failure(*held, o.error, o.retry_in))
        elif isinstance(o, Released):
            kinds.releases.append(held)
        elif isinstance(o, Snoozed):
            kinds.snoozes.append((*held, o.after))
        elif isinstance(o, Deferred):
            kinds.deferrals.append(rows.Failure(*held, o.error, o.after))
    return kinds


def _finished(outcome: Completed) -> rows.Finished:
    assert outcome.kept is not None
    state: Literal["completed", "cancelled"] = (
        "completed" if isinstance(outcome, Completed) else "cancelled"
    )
    return rows.Finished(outcome.task.id, outcome.task.lease_token, state, outcome.kept)
