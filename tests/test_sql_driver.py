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
from sqlatasks.models import TABLE_NAME
from sqlatasks.sql import claim, driver, outcomes
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


async def test_the_claims_plan_is_made_once_not_on_every_claim(
    engine: AsyncEngine, db_url: str
) -> None:
    """A claim's size is written into its statement (one prepared statement per size): the
    server keeps one plan for it after its first five executions, instead of planning the
    claim again every time, as it must for `LIMIT $1` (pg_prepared_statements counts both).
    A queue deep enough, and analyzed, that a plan for any limit (PostgreSQL assumes a tenth
    of the rows) costs more than the plan for 3: with `LIMIT $1`, it plans every claim."""
    async with async_sessionmaker(engine)() as session, session.begin():
        await enqueue_many(session, greet, (Greeting(name=str(i)) for i in range(20_000)))
    async with engine.begin() as conn:
        await conn.execute(text(f"ANALYZE {TABLE_NAME}"))
    worker = create_async_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        async with worker.connect() as conn:
            for _ in range(8):
                await claim.task_claim(
                    conn, queues=(), limit=3, lease_seconds=60, worker_id="w", token=uuid.uuid4()
                )
            plans = await conn.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                    "WHERE statement LIKE '%lease due tasks%' "
                    "AND statement NOT LIKE '%pg_prepared_statements%'"
                )
            )
            (generic, custom), *others = plans.all()
    finally:
        await worker.dispose()
    assert others == []  # one statement for the one size claimed
    assert (generic, custom) == (3, 5)
