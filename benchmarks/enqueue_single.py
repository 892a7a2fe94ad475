"""`enqueue_single`: one task per transaction, one after another.

Every rate is measured in the same run, against the same database:

- raw asyncpg: `BEGIN; INSERT (prepared); COMMIT`, the limit for any client;
- plain ORM: SQLAlchemy's own insert of a row of the same shape, one per transaction, the
  ceiling for anything that goes through a session;
- sqlatasks: `session.add(enqueue(send_email, EmailInput(...)))` and commit;
- a business transaction: an `Order` alone, the `Order` plus one enqueue (the enqueue's
  marginal cost inside the transaction it is meant to ride on), and the `Order` plus a plain
  ORM row (how much of that marginal cost is simply a second ORM insert).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import BigInteger, Identity, MetaData, SmallInteger, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from benchmarks import database, measure
from examples.app import EmailInput, Order, send_email
from sqlatasks import QueuedTask, enqueue
from sqlatasks.models import TABLE_NAME

OPERATIONS, QUICK_OPERATIONS = 3000, 300
WARMUP, QUICK_WARMUP = 200, 50
ROUNDS, QUICK_ROUNDS = 5, 3
SLICES, QUICK_SLICES = 10, 3  # variants take turns every 300 (quick: 100) transactions

RAW = "raw asyncpg INSERT"
PLAIN = "plain ORM insert"
SQLATASKS = "sqlatasks session.add(enqueue())"
ORDER = "business: Order"
ORDER_AND_PLAIN = "business: Order + plain ORM row"
ORDER_AND_TASK = "business: Order + enqueue()"

_RAW_INSERT = (
    f"INSERT INTO {TABLE_NAME} (task_name, queue, priority, payload) VALUES ($1, $2, $3, $4)"
)


class PlainBase(DeclarativeBase):
    """Metadata of its own: this mapping is never used to create anything."""

    metadata = MetaData()


class PlainTask(PlainBase):
    """The queue table as anyone would map it, with nothing of sqlatasks in the way."""

    __tablename__ = TABLE_NAME

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    task_name: Mapped[str] = mapped_column(Text)
    queue: Mapped[str] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(SmallInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)


def _address(i: int) -> str:
    return f"user{i}@example.com"


async def run(url: str, quick: bool) -> list[measure.Row]:
    operations = QUICK_OPERATIONS if quick else OPERATIONS
    warmup = QUICK_WARMUP if quick else WARMUP
    engine = create_async_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    raw = await database.raw_connection(url)
    try:
        async with raw.transaction():
            # asyncpg's prepare() ends with Flush, not Sync: outside a transaction it would
            # leave the Parse's implicit transaction open, locking the table against TRUNCATE.
            insert = await raw.prepare(_RAW_INSERT)

        async def raw_asyncpg(n: int) -> None:
            for i in range(n):
                payload = json.dumps({"to": _address(i), "subject": "hi"})
                async with raw.transaction():
                    await insert.fetchval(send_email.name, send_email.queue, 0, payload)

        async def plain_orm(n: int) -> None:
            for i in range(n):
                async with sessions() as session, session.begin():
                    session.add(_plain_row(i))

        async def sqlatasks_enqueue(n: int) -> None:
            for i in range(n):
                async with sessions() as session, session.begin():
                    session.add(_queued(i))

        async def order(n: int) -> None:
            for i in range(n):
                async with sessions() as session, session.begin():
                    _add_order(session, i)

        async def order_and_plain(n: int) -> None:
            for i in range(n):
                async with sessions() as session, session.begin():
                    _add_order(session, i)
                    session.add(_plain_row(i))

        async def order_and_task(n: int) -> None:
            for i in range(n):
                async with sessions() as session, session.begin():
                    _add_order(session, i)
                    session.add(_queued(i))

        variants = [
            measure.Variant(RAW, raw_asyncpg, operations, warmup),
            measure.Variant(PLAIN, plain_orm, operations, warmup, baselines=(RAW,)),
            measure.Variant(SQLATASKS, sqlatasks_enqueue, operations, warmup, (RAW, PLAIN)),
            measure.Variant(ORDER, order, operations, warmup),
            measure.Variant(ORDER_AND_PLAIN, order_and_plain, operations, warmup, (ORDER,)),
            measure.Variant(
                ORDER_AND_TASK, order_and_task, operations, warmup, (ORDER, ORDER_AND_PLAIN)
            ),
        ]
        return await measure.measure(
            variants,
            rounds=QUICK_ROUNDS if quick else ROUNDS,
            slices=QUICK_SLICES if quick else SLICES,
            reset=lambda: database.truncate(engine),
        )
    finally:
        await raw.close()
        await engine.dispose()


def _plain_row(i: int) -> PlainTask:
    return PlainTask(
        task_name=send_email.name,
        queue=send_email.queue,
        priority=0,
        payload={"to": _address(i), "subject": "hi"},
    )


def _queued(i: int) -> QueuedTask:
    return enqueue(send_email, EmailInput(to=_address(i), subject="hi"))


def _add_order(session: AsyncSession, i: int) -> None:
    session.add(Order(email=_address(i), total_cents=1200 + i))
