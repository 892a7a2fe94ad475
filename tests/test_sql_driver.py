"""The claim and the ack on asyncpg's own connection (sqlatasks.sql.driver): the same rows and
counts as through SQLAlchemy, and errors raised as SQLAlchemy's, SQLSTATE included."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from sqlatasks import enqueue, enqueue_many, errors
from sqlatasks.settings import Settings
from sqlatasks.sql import claim, driver, outcomes
from sqlatasks.worker import build
from tests.conftest import count_tasks
from tests.tasks_for_tests import Greeting, greet


async def test_claim_and_ack_on_the_driver(engine: AsyncEngine, db_url: str) -> None:
    await _claim_and_ack(engine, db_url, "AUTOCOMMIT")


async def test_claim_and_ack_in_a_transaction_through_sqlalchemy(
    engine: AsyncEngine, db_url: str
) -> None:
    await _claim_and_ack(engine, db_url, "READ COMMITTED")


async def _claim_and_ack(engine: AsyncEngine, db_url: str, isolation: str) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        session.add_all([enqueue(greet, Greeting(name=str(i))) for i in range(3)])
    worker = create_async_engine(db_url, isolation_level=isolation)
    try:
        async with worker.connect() as conn:
            assert (await driver._driver(conn) is not None) == (isolation == "AUTOCOMMIT")
            claimed = await claim.task_claim(
                conn, queues=(), limit=2, lease_seconds=60, worker_id="w", token=uuid.uuid4()
            )
            assert [(t.task_name, t.attempts, json.loads(t.payload)) for t in claimed] == [
                (greet.name, 1, {"name": "0", "times": 1}),
                (greet.name, 1, {"name": "1", "times": 1}),
            ]
            held = [(t.id, t.lease_token) for t in claimed]
            assert await outcomes.task_ack(conn, [*held, (held[0][0], uuid.uuid4())]) == 2
            if isolation != "AUTOCOMMIT":
                await conn.commit()
    finally:
        await worker.dispose()
    assert await count_tasks(engine) == 1


async def test_a_driver_error_is_sqlalchemys_with_its_sqlstate(db_url: str) -> None:
    worker = create_async_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        async with worker.connect() as conn:
            await conn.execute(text("SET search_path = pg_catalog"))  # no queue table here
            with pytest.raises(DBAPIError) as raised:
                await claim.task_claim(
                    conn, queues=(), limit=1, lease_seconds=60, worker_id="w", token=uuid.uuid4()
                )
            assert errors.sqlstate(raised.value) == "42P01"  # undefined_table
            assert not errors.discards_connection(raised.value)
            with pytest.raises(DBAPIError):
                await outcomes.task_ack(conn, [(1, uuid.uuid4())])
    finally:
        await worker.dispose()


async def test_an_idle_workers_claim_is_planned_for_the_queue_as_it_is_now(
    engine: AsyncEngine, db_url: str
) -> None:
    """An idle worker claims an empty queue again and again; PostgreSQL would then keep one
    plan for the prepared claim, made for an empty table (a scan and a sort of every row),
    and use it after a burst too: seconds a claim (`claim.plan_each_claim`). The worker's
    claim connection plans each claim afresh (pg_prepared_statements counts the plans)."""
    parts = build(Settings(database_url=db_url), 0)
    try:
        for _ in range(8):
            assert await parts.dispatcher._claim([((), 3)]) == []
        async with async_sessionmaker(engine)() as session, session.begin():
            await enqueue_many(session, greet, (Greeting(name=str(i)) for i in range(2_000)))
        assert len(await parts.dispatcher._claim([((), 3)])) == 3
        conn = await parts.dispatcher._connection.get()
        plans = await conn.execute(
            text(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE '%lease up to%' "
                "AND statement NOT LIKE '%pg_prepared_statements%'"
            )
        )
        assert plans.all() == [(0, 9)]
    finally:
        await parts.dispatcher._connection.close()
        await parts.engine.dispose()
        await parts.task_engine.dispose()
