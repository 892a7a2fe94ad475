"""A session task's transaction: the task's writes and the deletion of its row commit together.

    BEGIN                         sqlatasks's own transaction (the runner: on a connection of
                                  the worker's task pool; sqlatasks.testing: a SAVEPOINT)
      SAVEPOINT                   the task's AsyncSession joins here: its commit() releases
        ... the task's writes     the savepoint (a flush, nothing more), its rollback() goes
      RELEASE SAVEPOINT           back to it; neither can end the transaction around it
      DELETE the task's row       WHERE id = ... AND lease_token = ... (still ours?)
    COMMIT                        or ROLLBACK when the DELETE matched nothing

A task that raises, is cancelled or runs out of time is rolled back whole: nothing it wrote in
the session remains, and the row is left for the completer (a failure, a release, a cancel)
like any other task's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, AsyncTransaction

from sqlatasks.rows import ClaimedTask, Keep
from sqlatasks.sql import outcomes as sql

Work = Callable[[AsyncSession], Awaitable[Keep | None]]
"""A session task's work; what it returns is kept with its row (in the same transaction)."""
RunInTransaction = Callable[[ClaimedTask, Work], Awaitable[bool]]
"""Runs a session task's work in a transaction that also deletes its row: True when it
committed, False when the lease was lost (rolled back); raises what the work raised."""

CLOSE_TIMEOUT = 5.0
"""Seconds to wait for a connection to close (roll back) before the pool discards it."""
FINISH_TIMEOUT = 60.0
"""Seconds the DELETE and COMMIT that finish a task may take: a connection gone half-open
must not hold the task (and its row lock) until TCP gives up. Past it, the attempt fails and
its outcome is in doubt, as for any COMMIT whose answer is lost."""


async def run(
    conn: AsyncConnection, transaction: AsyncTransaction, claimed: ClaimedTask, work: Work
) -> bool:
    """Run `work(session)` in `transaction` (begun on `conn`), then delete `claimed`'s row under
    its lease in the same transaction (moving it, with its result, to the finished tasks when
    `work` returns a Keep) and commit it; if the lease has passed on, roll back.

    `transaction` is rolled back if anything is raised or cancelled before the commit.
    """
    session = AsyncSession(
        bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        keep = await work(session)
        await session.commit()  # flushes what the task added but did not flush itself
        # Shielded: a COMMIT that is sent must be answered. Cancelled half-way (a deadline, an
        # operator's cancel, shutdown), the connection would be left in doubt.
        with anyio.CancelScope(shield=True), anyio.fail_after(FINISH_TIMEOUT):
            if keep is None:
                ours = await sql.task_finish(conn, claimed.id, claimed.lease_token)
            else:
                ours = await sql.task_finish_kept(conn, claimed.id, claimed.lease_token, keep)
            if ours:
                await transaction.commit()
            else:
                await transaction.rollback()
        return ours
    finally:
        with _cleaning_up():
            await session.close()
            if transaction.is_active:
                await transaction.rollback()


class TaskConnections:
    """The runner's RunInTransaction: one connection from `engine`'s pool per running task.

    `engine` must run real transactions (not AUTOCOMMIT), with room in its pool for every task
    that may run at once.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def __call__(self, claimed: ClaimedTask, work: Work) -> bool:
        conn = await self._engine.connect()
        try:
            return await run(conn, await conn.begin(), claimed, work)
        finally:
            with _cleaning_up():
                await conn.close()


@contextlib.contextmanager
def _cleaning_up() -> Iterator[None]:
    """For closing and rolling back: not cancelled, not longer than CLOSE_TIMEOUT, and quiet on
    a broken connection (the pool discards it; the server rolls back what it never saw
    committed)."""
    with (
        anyio.CancelScope(shield=True),
        anyio.move_on_after(CLOSE_TIMEOUT),
        contextlib.suppress(SQLAlchemyError, OSError),
    ):
        yield
