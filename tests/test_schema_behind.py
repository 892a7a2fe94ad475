"""A database behind the code, seen from the application's side (issue 13): `check_schema` for
its start-up, and `enqueue_many` naming the fix instead of PostgreSQL's bare "column … does
not exist"."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session

from sqlatasks import (
    PayloadError,
    SchemaError,
    check_schema,
    check_schema_sync,
    enqueue_many,
    migrations,
)
from tests.conftest import alembic
from tests.runner_tasks import Job, record
from tests.test_drivers import with_driver


async def test_check_schema_gives_the_version_of_a_database_up_to_date(
    engine: AsyncEngine, db_url: str
) -> None:
    assert await check_schema(engine) == migrations.LATEST
    async with async_sessionmaker(engine)() as session:
        assert await check_schema(session) == migrations.LATEST
    sync = create_engine(with_driver(db_url, "psycopg"))
    try:
        assert check_schema_sync(sync) == migrations.LATEST
        with Session(sync) as session:
            assert check_schema_sync(session) == migrations.LATEST
    finally:
        sync.dispose()


async def test_a_database_behind_is_named_with_the_fix(engine: AsyncEngine, db_url: str) -> None:
    done = alembic(db_url, "downgrade", "0007_sqlatasks_v7")
    assert done.returncode == 0, done.stderr
    with pytest.raises(SchemaError) as caught:
        await check_schema(engine)
    assert str(caught.value) == (
        f"the queue table sqlatasks_tasks is at schema version 7, this sqlatasks needs "
        f"{migrations.LATEST}: run `sqlatasks migrate` (or `alembic upgrade head`, with your "
        "alembic history)"
    )
    # enqueue_many with unique keys names every column of its version: the database lacks one.
    async with async_sessionmaker(engine)() as session:
        with pytest.raises(SchemaError) as told:
            async with session.begin():
                await enqueue_many(session, record, [Job(key=1)], unique_key=lambda j: str(j.key))
    message = str(told.value)
    assert message.startswith("the database's sqlatasks schema is older than this sqlatasks")
    assert "run `sqlatasks migrate`" in message
    assert 'column "trace_context"' in message  # what the database said


async def test_other_errors_pass_through_as_they_are(engine: AsyncEngine) -> None:
    async with async_sessionmaker(engine)() as session:
        with pytest.raises(PayloadError, match="expected Job or a mapping"):
            async with session.begin():
                await enqueue_many(session, record, [object()])  # type: ignore[list-item]


async def test_check_schema_refuses_a_sync_bind_by_name(db_url: str) -> None:
    sync = create_engine(with_driver(db_url, "psycopg"))
    try:
        with pytest.raises(TypeError, match="use check_schema_sync"):
            await check_schema(sync)  # type: ignore[arg-type]
    finally:
        sync.dispose()
