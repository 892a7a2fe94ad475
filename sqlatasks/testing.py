"""Helpers for the application's own tests: run what is queued, inline, in the test's session.

    from sqlatasks.testing import Completed, enqueued, run_pending

    async def test_an_order_sends_its_email(session):
        await place_order(session, "ann@example.com", 1200)
        assert [e.to for e in await enqueued(session, send_email)] == ["ann@example.com"]
        outcomes = await run_pending(session)
        assert all(isinstance(o, Completed) for o in outcomes)

Both take an `AsyncSession` (a synchronous `Session` raises TypeError) and work inside the
test's transaction, against the real database, through the same claim, execution and outcome
writes as the runner; a test that rolls back leaves nothing behind.
Tasks run one at a time, in this process. A task that opens its own database connection does
not see the test's uncommitted rows. A session task (`async def f(payload, session:
AsyncSession)`) gets a session on the test's connection, in a SAVEPOINT of its own that also
deletes its row: released when it returns, rolled back when it fails.
"""

from __future__ import annotations

import time
import uuid
from typing import TypeVar

import pydantic
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from sqlatasks import completer, execution, sessions, tasks, transactions
from sqlatasks.execution import Limits
from sqlatasks.outcomes import (
    Committed,
    Completed,
    Deferred,
    Failed,
    LeaseLost,
    Outcome,
    Released,
    Snoozed,
)
from sqlatasks.rows import ClaimedTask
from sqlatasks.sql import claim, operator

__all__ = [
    "Committed",
    "Completed",
    "Deferred",
    "Failed",
    "LeaseLost",
    "Outcome",
    "Released",
    "Snoozed",
    "enqueued",
    "run_pending",
]

PayloadT = TypeVar("PayloadT", bound=pydantic.BaseModel)
BATCH = 100
RUN_LEASE = 86_400.0
"""Seconds of the lease of a claim by run_pending (no renewal: nothing else claims here)."""


@sessions.async_only
async def run_pending(
    session: AsyncSession,
    *,
    task_timeout: float = 60.0,
    retry_delay: float = 10.0,
    max_rounds: int = 100,
    keep: float = 0.0,
) -> list[Outcome]:
    """Run every due task now, in this process, and write their outcomes; return them.

    A session task's outcome is `Committed` (its writes and the deletion of its row were
    released together) rather than `Completed`.

    Tasks that the tasks enqueue run too, if they are due, until nothing due is left (at most
    `max_rounds` claims). Only registered tasks run; a row naming anything else is parked, as
    the runner would. Pending ORM objects are flushed first, so `session.add(enqueue(...))`
    without a commit is seen. Finished tasks are kept (for `get_task`, with their results) as
    their `@task(keep=...)` says, else for `keep` seconds, like the runner's --keep.
    `current_task().report(...)` works: the last value a task reported is written when it
    ends, before its outcome (a runner writes it while the task runs, at most once every
    `context.PROGRESS_PERIOD`), so `get_task` shows it on a retried, parked or kept task.
    """
    await session.flush()
    conn = await session.connection()
    # The runner's rules: a task's own timeout beats `task_timeout`. No renewal here: the
    # lease outlasts the longest time limit, as if a supervisor checked every second.
    limits = Limits(
        task_timeout=task_timeout,
        retry_delay=retry_delay,
        allowed_imports=(),
        keep=keep,
    )
    # Nothing outside this transaction sees its rows: the lease only has to outlast the run.
    lease = RUN_LEASE
    worker_id = f"sqlatasks.testing:{uuid.uuid4().hex[:8]}"

    async def in_savepoint(claimed: ClaimedTask, work: transactions.Work) -> bool:
        return await transactions.run(conn, await conn.begin_nested(), claimed, work)

    outcomes: list[Outcome] = []
    for _ in range(max_rounds):
        claimed = await claim.task_claim(
            conn,
            queues=(),
            limit=BATCH,
            lease_seconds=lease,
            worker_id=worker_id,
            token=uuid.uuid4(),
        )
        if not claimed:
            break
        batch = [await _execute(conn, task, limits, in_savepoint) for task in claimed]
        await completer.write_outcomes(conn, batch)
        outcomes.extend(batch)
    return outcomes


async def _execute(
    conn: AsyncConnection,
    claimed: ClaimedTask,
    limits: Limits,
    in_savepoint: transactions.RunInTransaction,
) -> Outcome:
    """Run one task; write the last progress it reported, if any, before its outcome (no
    writer runs beside the task in this process, so the runner's rate limit has nothing to
    limit, and its last value is never dropped)."""
    last: list[tuple[str, float]] = []

    def report(text: str) -> None:
        last[:] = [(text, time.monotonic())]

    outcome = await execution.execute(claimed, limits, in_savepoint, on_report=report)
    if last:
        text, at = last[0]
        reports = [(claimed.id, claimed.lease_token, text, time.monotonic() - at)]
        await claim.task_progress(conn, reports)  # nothing if a session task deleted its row
    return outcome


@sessions.async_only
async def enqueued(session: AsyncSession, fn: tasks.Task[PayloadT]) -> list[PayloadT]:
    """The payloads of `fn`'s live (not parked) tasks, in the order a worker would claim them."""
    await session.flush()
    conn = await session.connection()
    return [fn.load(text) for text in await operator.task_payloads(conn, fn.name)]
