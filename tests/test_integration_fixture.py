"""The FastAPI test fixture of docs/integration.md, as written there, on examples/web.py.

In process (httpx's ASGITransport, the test's own event loop), inside the test's rolled-back
transaction: the endpoint's `async with db.begin()` becomes a SAVEPOINT, and the session does
not expire what it loaded when that ends, so reading `order.id` afterwards needs no lazy load
(which, outside SQLAlchemy's greenlet, is MissingGreenlet).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine

from examples import web
from examples.app import send_email
from sqlatasks.testing import Completed, enqueued, run_pending

EXPIRE_ON_COMMIT = False  # the fixture's one essential setting (see the module docstring)


@pytest.fixture
async def connection(shared_url: str) -> AsyncIterator[AsyncConnection]:
    """A connection inside an outer transaction, rolled back after the test."""
    engine = create_async_engine(shared_url)
    async with engine.connect() as conn:
        outer = await conn.begin()
        yield conn
        await outer.rollback()
    await engine.dispose()


# --- docs/integration.md, "Testing endpoints" (keep the two in step) ---
def request_session(connection: AsyncConnection) -> AsyncSession:
    """A session on the test's connection, as each request of the application opens one."""
    return AsyncSession(
        bind=connection,
        join_transaction_mode="create_savepoint",  # the endpoint's commit: a savepoint
        expire_on_commit=EXPIRE_ON_COMMIT,  # no lazy reload after it: no MissingGreenlet
    )


@pytest.fixture
async def db(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    async with request_session(connection) as session:
        yield session


@pytest.fixture
async def client(connection: AsyncConnection) -> AsyncIterator[httpx.AsyncClient]:
    async def session_per_request() -> AsyncIterator[AsyncSession]:
        async with request_session(connection) as session:
            yield session

    web.app.dependency_overrides[web.session] = session_per_request
    transport = httpx.ASGITransport(app=web.app)  # in this event loop; no lifespan, no server
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
    web.app.dependency_overrides.clear()


# --- end of the documented fixture ---


async def test_an_endpoint_that_commits_then_reads_its_row(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    created = await client.post("/orders", json={"email": "ann@example.com", "total_cents": 1200})
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    assert (await client.get(f"/orders/{order_id}")).json()["status"] == "new"

    assert [e.to for e in await enqueued(db, send_email)] == ["ann@example.com"]
    assert all(isinstance(o, Completed) for o in await run_pending(db))


async def test_a_rolled_back_request_leaves_nothing(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    refused = await client.post("/orders", json={"email": "not an address", "total_cents": 5})
    assert refused.status_code == 422
    assert await enqueued(db, send_email) == []
    ok = await client.post("/orders", json={"email": "bob@example.com", "total_cents": 5})
    assert ok.status_code == 201, ok.text  # the session is usable after the rollback
