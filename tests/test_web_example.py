"""examples/web.py over real HTTP: uvicorn in its own process, a real database, the real runner."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ROOT
from tests.eventually import eventually
from tests.processes import Runners

pytestmark = pytest.mark.slow

LISTENING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")


def start_server(db_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    """`uvicorn examples.web:app` on a port the system picks (its log says which)."""
    command = [sys.executable, "-m", "uvicorn", "examples.web:app", "--host", "127.0.0.1"]
    with log_path.open("w") as log:
        return subprocess.Popen(
            [*command, "--port", "0"],
            cwd=ROOT,
            env={**os.environ, "SQLATASKS_DATABASE_URL": db_url},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


@pytest.fixture
async def web(db_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The example application served on a free loopback port, and a client for it."""
    log_path = tmp_path / "uvicorn.log"
    server = start_server(db_url, log_path)
    try:

        def listening() -> re.Match[str] | None:
            assert server.poll() is None, log_path.read_text()
            return LISTENING.search(log_path.read_text())

        found = await eventually(listening, what="uvicorn to listen")
        assert found is not None
        async with httpx.AsyncClient(base_url=found.group(1), timeout=30) as client:
            yield client
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


async def rows(engine: AsyncEngine) -> tuple[list[tuple[int, str, str]], list[tuple[str, str]]]:
    """(orders as (id, email, xmin), tasks as (e-mail address, xmin)); xmin is the inserting
    transaction's id."""
    async with engine.connect() as conn:
        orders = await conn.execute(
            text("SELECT id, email, xmin::text FROM demo_orders ORDER BY id")
        )
        tasks = await conn.execute(
            text("SELECT payload->>'to', xmin::text FROM sqlatasks_tasks ORDER BY id")
        )
        return [tuple(r) for r in orders], [tuple(r) for r in tasks]


async def test_an_order_and_its_email_commit_together_over_http(
    web: httpx.AsyncClient, engine: AsyncEngine, start_runner: Runners
) -> None:
    created = await web.post("/orders", json={"email": "ann@example.com", "total_cents": 1200})
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    orders, tasks = await rows(engine)
    assert [(o[0], o[1]) for o in orders] == [(order_id, "ann@example.com")]
    assert [t[0] for t in tasks] == ["ann@example.com"]
    assert orders[0][2] == tasks[0][1]  # inserted by one and the same transaction

    shown = await web.get(f"/orders/{order_id}")
    assert shown.status_code == 200
    assert shown.json() == {
        "id": order_id,
        "email": "ann@example.com",
        "total_cents": 1200,
        "status": "new",
    }
    assert (await web.get(f"/orders/{order_id + 1000}")).status_code == 404

    # Refused by the endpoint's own model: the handler never runs.
    invalid = await web.post("/orders", json={"email": "bob@example.com", "total_cents": -5})
    assert invalid.status_code == 422
    assert "total_cents" in invalid.text
    # Accepted by the endpoint, refused by the e-mail task's model after the order's INSERT:
    # the transaction rolls back, and takes the order with it.
    refused = await web.post("/orders", json={"email": "bob", "total_cents": 500})
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail.startswith("invalid payload for task 'examples.app:send_email'"), detail
    assert "String should match pattern" in detail
    assert await rows(engine) == (orders, tasks)

    # The rolled-back INSERT did happen: it used up an id (sequences ignore rollbacks).
    second = await web.post("/orders", json={"email": "cid@example.com", "total_cents": 300})
    assert second.status_code == 201
    assert second.json()["id"] == order_id + 2

    runner = start_runner("--workers", "1", "--burst", imports=["examples.app"])
    assert await runner.wait_exit(60) == 0
    log = runner.log()
    assert f"e-mail to ann@example.com sent: Order {order_id} received" in log
    assert f"e-mail to cid@example.com sent: Order {order_id + 2} received" in log
    assert "bob" not in log
    orders, tasks = await rows(engine)
    assert [o[1] for o in orders] == ["ann@example.com", "cid@example.com"]
    assert tasks == []  # both e-mails done: their rows are deleted
