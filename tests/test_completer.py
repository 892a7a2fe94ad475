"""The completer, in-process against a real database: an outcome the database refuses for its
values (not for the connection) costs only that outcome, never the batch it came with."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from sqlatasks import enqueue
from sqlatasks.completer import Completer
from sqlatasks.outcomes import Failed, Snoozed
from sqlatasks.sql import claim
from tests import status_tasks as t
from tests.conftest import count_tasks


async def test_an_outcome_the_database_refuses_does_not_stall_the_rest(
    engine: AsyncEngine, db_url: str
) -> None:
    async with AsyncSession(engine) as session, session.begin():
        session.add_all([enqueue(t.unkept, t.Export(rows=n)) for n in (1, 2)])
    worker = create_async_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        async with worker.connect() as conn:
            first, second = await claim.task_claim(
                conn,
                queues=(),
                limit=2,
                lease_seconds=600,
                worker_id="test",
                token=uuid.uuid4(),
            )
        completer = Completer(worker, name="test", give_up_after_close=5)
        # A retry past PostgreSQL's last timestamp: asyncpg's error is a plain DBAPIError
        # (SQLSTATE 22008), which was retried as if the connection had failed, for ever, with
        # every later outcome behind it (here: until 5 s after close, then all given up).
        completer.submit(Failed(first, error="boom", retry_in=1e300))
        completer.submit(Snoozed(second, after=0))
        completer.close()
        await completer.run()
    finally:
        await worker.dispose()
    assert await count_tasks(engine, f"id = {second.id} AND lease_token IS NULL") == 1
    assert await count_tasks(engine, f"id = {first.id} AND lease_token IS NOT NULL") == 1
