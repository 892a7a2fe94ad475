"""A web application on sqlatasks: an order and its confirmation e-mail commit in one transaction.

    pip install -e '.[web]'
    alembic upgrade head                                   # the queue table
    SQLATASKS_DATABASE_URL=postgresql+asyncpg://… uvicorn examples.web:app
    python -m sqlatasks.runner --import examples.app       # sends the e-mails

    curl -X POST localhost:8000/orders -H 'content-type: application/json' \\
         -d '{"email": "ann@example.com", "total_cents": 1200}'

The request's transaction holds both writes: if anything in it fails after the order was
inserted, the order and its e-mail task roll back together, and no e-mail goes out for an order
that does not exist.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, status
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from examples.app import Base, Order, send_email
from sqlatasks import PayloadError, enqueue, settings


class OrderIn(BaseModel):
    email: str
    total_cents: int = Field(gt=0)


class OrderOut(BaseModel):
    id: int
    email: str
    total_cents: int
    status: str


@asynccontextmanager
async def lifespan(web: FastAPI) -> AsyncIterator[None]:
    engine = create_async_engine(settings.database_url(os.environ["SQLATASKS_DATABASE_URL"]))
    async with engine.begin() as conn:
        # An example's shortcut: a real application creates its tables with its migrations.
        await conn.run_sync(Base.metadata.create_all)
    web.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    yield
    await engine.dispose()


app = FastAPI(title="sqlatasks example shop", lifespan=lifespan)


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as opened:
        yield opened


Session = Annotated[AsyncSession, Depends(session)]


@app.post("/orders", status_code=status.HTTP_201_CREATED)
async def create_order(order_in: OrderIn, db: Session) -> dict[str, int]:
    """Insert the order and enqueue its e-mail; both commit when the block ends, or neither."""
    try:
        async with db.begin():
            order = Order(email=order_in.email, total_cents=order_in.total_cents, status="new")
            db.add(order)
            await db.flush()  # the order's id, for the e-mail
            # enqueue() validates the payload against the task's model (EmailInput), which is
            # stricter about the address than this endpoint: an address it refuses raises
            # PayloadError here, after the order's INSERT, and the order rolls back with it.
            email = {"to": order.email, "subject": f"Order {order.id} received"}
            db.add(enqueue(send_email, email))
    except PayloadError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return {"id": order.id}


@app.get("/orders/{order_id}")
async def read_order(order_id: int, db: Session) -> OrderOut:
    order = await db.get(Order, order_id)
    if order is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no order {order_id}")
    return OrderOut(
        id=order.id, email=order.email, total_cents=order.total_cents, status=order.status
    )
