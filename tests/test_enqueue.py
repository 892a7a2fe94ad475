"""Enqueue in the caller's transaction: the task exists if and only if that transaction commits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from examples.app import Order, place_order
from sqlatasks import PayloadError, QueuedTask, TaskNotRegistered, enqueue, enqueue_many
from tests.conftest import count_tasks
from tests.tasks_for_tests import Greeting, Other, greet, greet_renamed


async def count_orders(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Order))).scalar_one())


async def test_commit_keeps_business_row_and_task(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        order = await place_order(session, "ann@example.com", 1200)
    assert await count_orders(engine) == 1
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT task_name, payload FROM sqlatasks_tasks"))).all()
    assert sorted(rows) == [
        ("examples.app:charge_order", {"order_id": order.id}),
        (
            "examples.app:send_email",
            {"to": "ann@example.com", "subject": f"Order {order.id} received"},
        ),
    ]


async def test_rollback_discards_both(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    with pytest.raises(RuntimeError, match="payment service down"):
        async with sessions() as session, session.begin():
            await place_order(session, "bob@example.com", 500)
            raise RuntimeError("payment service down")
    assert await count_orders(engine) == 0
    assert await count_tasks(engine) == 0


async def test_rolled_back_savepoint_discards_only_its_task(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        session.add(enqueue(greet, Greeting(name="kept")))
        savepoint = await session.begin_nested()
        session.add(enqueue(greet, Greeting(name="dropped")))
        await session.flush()
        await savepoint.rollback()
        session.add(enqueue(greet, Greeting(name="also kept")))
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT payload->>'name' FROM sqlatasks_tasks"))).scalars()
        assert sorted(names) == ["also kept", "kept"]


async def test_enqueue_returns_a_row_with_the_task_defaults(session: AsyncSession) -> None:
    row = enqueue(greet_renamed, Greeting(name="a"))
    assert isinstance(row, QueuedTask)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    assert (row.task_name, row.queue, row.priority, row.max_attempts) == (
        "greetings.v2",
        "mail",
        5,
        4,
    )
    assert (row.attempts, row.locked_until, row.failed_at) == (0, None, None)


async def test_options_override_the_defaults_and_names_work(session: AsyncSession) -> None:
    row = enqueue("greetings.v2", {"name": "b"}, queue="urgent", priority=-3)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    assert (row.task_name, row.queue, row.priority) == ("greetings.v2", "urgent", -3)
    with pytest.raises(TaskNotRegistered, match="no @task is registered"):
        enqueue("tests.tasks_for_tests:nope", {"name": "b"})


async def test_delay_counts_from_the_database_clock(session: AsyncSession) -> None:
    row = enqueue(greet, Greeting(name="later"), delay=timedelta(minutes=5))
    seconds = enqueue(greet, Greeting(name="later"), delay=90)
    session.add_all([row, seconds])
    await session.flush()
    await session.refresh(row)
    await session.refresh(seconds)
    # scheduled_at and created_at are both the transaction's now(): the delay is exact.
    assert row.scheduled_at - row.created_at == timedelta(minutes=5)
    assert seconds.scheduled_at - seconds.created_at == timedelta(seconds=90)


async def test_run_at_must_be_timezone_aware(session: AsyncSession) -> None:
    when = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    row = enqueue(greet, Greeting(name="then"), run_at=when)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    assert row.scheduled_at == when
    with pytest.raises(ValueError, match="timezone-aware"):
        enqueue(greet, Greeting(name="then"), run_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="delay or run_at, not both"):
        enqueue(greet, Greeting(name="then"), run_at=when, delay=1)
    with pytest.raises(ValueError, match="delay must be zero or a positive"):
        enqueue(greet, Greeting(name="then"), delay=-1)


async def test_bad_payloads_raise_before_the_database(session: AsyncSession) -> None:
    with pytest.raises(PayloadError, match="expected Greeting, got Other"):
        session.add(enqueue(greet, Other(value=3)))  # type: ignore[misc]
    with pytest.raises(PayloadError, match="String should have at least 1 character"):
        session.add(enqueue(greet, {"name": ""}))
    with pytest.raises(PayloadError, match="times"):
        await enqueue_many(session, greet, [Greeting(name="ok"), {"name": "x", "times": "no"}])
    await session.rollback()
    assert not session.new


async def test_enqueue_many_100k_payloads_from_a_generator(engine: AsyncEngine) -> None:
    produced = 0

    def payloads() -> Iterator[Greeting]:
        nonlocal produced
        for i in range(100_000):
            produced += 1
            yield Greeting(name=f"n{i}", times=i)

    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        count = await enqueue_many(session, greet, payloads(), queue="bulk")
    assert count == produced == 100_000
    assert (
        await count_tasks(engine, "queue = 'bulk' AND task_name = 'tests.tasks_for_tests:greet'")
        == 100_000
    )
    async with engine.connect() as conn:
        last = (
            await conn.execute(text("SELECT payload FROM sqlatasks_tasks ORDER BY id DESC LIMIT 1"))
        ).scalar_one()
    assert last == {"name": "n99999", "times": 99999}


async def test_rolled_back_enqueue_many_leaves_nothing(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    # COPY as the very first statement of the transaction: it must still be inside it.
    async with sessions() as session, session.begin():
        await enqueue_many(session, greet, [Greeting(name="a"), Greeting(name="b")])
        await session.rollback()
    assert await count_tasks(engine) == 0
    async with sessions() as session, session.begin():
        await enqueue_many(session, greet, [Greeting(name="c")])
        savepoint = await session.begin_nested()
        await enqueue_many(session, greet, [Greeting(name="d")])
        await savepoint.rollback()
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT payload->>'name' FROM sqlatasks_tasks"))).scalars()
        assert list(names) == ["c"]


async def test_enqueue_many_options(session: AsyncSession) -> None:
    count = await enqueue_many(session, greet_renamed, [Greeting(name="x")], delay=60, priority=9)
    assert count == 1
    row = (await session.execute(select(QueuedTask))).scalars().one()
    assert (row.task_name, row.queue, row.priority, row.max_attempts) == (
        "greetings.v2",
        "mail",
        9,
        4,
    )
    assert row.scheduled_at - row.created_at == timedelta(seconds=60)
    assert await enqueue_many(session, greet, []) == 0
