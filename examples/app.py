"""The application: an order table, its tasks, and a business transaction that enqueues them.

Run its tasks with `python -m sqlatasks.runner --import examples.app`.
"""

from __future__ import annotations

import logging
import os
from functools import cache

import anyio
from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, Identity, Integer, Text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlatasks import enqueue, task

log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "demo_orders"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(Text)
    total_cents: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text, default="new")
    charge_attempts: Mapped[int] = mapped_column(Integer, default=0)


class EmailInput(BaseModel):
    to: str = Field(min_length=3, pattern=r".+@.+")
    subject: str


class OrderRef(BaseModel):
    order_id: int


class CardDeclined(Exception):
    pass


@cache
def sessions() -> async_sessionmaker[AsyncSession]:
    """The application's own database access, as tasks use it inside a worker."""
    engine = create_async_engine(os.environ["SQLATASKS_DATABASE_URL"], pool_size=2)
    return async_sessionmaker(engine, expire_on_commit=False)


@task(timeout=30)
async def send_email(data: EmailInput) -> None:
    await anyio.sleep(0.2)  # the mail server
    log.info("e-mail to %s sent: %s", data.to, data.subject)


@task(retry_delay=1, max_attempts=5)
async def charge_order(data: OrderRef) -> None:
    """Charges the card; the first attempt for each order is declined, the retry succeeds."""
    async with sessions()() as session, session.begin():
        order = await session.get(Order, data.order_id, with_for_update=True)
        if order is None:
            return
        order.charge_attempts += 1
        declined = order.charge_attempts == 1
        if not declined:
            order.status = "charged"
    if declined:
        raise CardDeclined(f"order {data.order_id}: the card network timed out, try again")
    log.info("order %s charged", data.order_id)


async def place_order(session: AsyncSession, email: str, total_cents: int) -> Order:
    """The business transaction: the order and its tasks commit together or not at all."""
    order = Order(email=email, total_cents=total_cents, status="new", charge_attempts=0)
    session.add(order)
    await session.flush()  # the order's id, for the task payloads
    session.add(enqueue(charge_order, OrderRef(order_id=order.id)))
    session.add(enqueue(send_email, EmailInput(to=email, subject=f"Order {order.id} received")))
    return order
