"""Lease rules of the statements themselves, in a rolled-back session."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import enqueue, rows
from sqlatasks.sql import claim as sql_claim
from sqlatasks.sql import outcomes
from tests.tasks_for_tests import Greeting, greet


async def test_a_lost_claim_is_given_back_by_its_token(session: AsyncSession) -> None:
    session.add_all([enqueue(greet, Greeting(name=str(i))) for i in range(3)])
    await session.flush()
    conn = await session.connection()
    lost, kept = uuid.uuid4(), uuid.uuid4()
    claim: dict[str, Any] = {"queues": (), "lease_seconds": 60, "worker_id": "w"}
    assert len(await sql_claim.task_claim(conn, limit=2, token=lost, **claim)) == 2
    assert len(await sql_claim.task_claim(conn, limit=5, token=kept, **claim)) == 1
    assert await sql_claim.claim_undo(conn, [lost, uuid.uuid4()]) == 2
    rows = (
        await conn.execute(
            text("SELECT lease_token, attempts, locked_until IS NULL FROM sqlatasks_tasks")
        )
    ).all()
    assert sorted(rows, key=str) == sorted(
        [(None, 0, True), (None, 0, True), (kept, 1, False)], key=str
    )


async def test_writes_naming_an_old_token_change_nothing(session: AsyncSession) -> None:
    session.add(enqueue(greet, Greeting(name="x")))
    await session.flush()
    conn = await session.connection()
    claim: dict[str, Any] = {"queues": (), "limit": 1, "lease_seconds": 60, "worker_id": "w"}
    (first,) = await sql_claim.task_claim(conn, token=uuid.uuid4(), **claim)
    await conn.execute(text("UPDATE sqlatasks_tasks SET locked_until = now() - interval '1s'"))
    (second,) = await sql_claim.task_claim(conn, token=uuid.uuid4(), **claim)
    assert (first.id, second.attempts) == (second.id, 2)
    old = [(first.id, first.lease_token)]
    assert await outcomes.task_ack(conn, old) == 0
    assert await outcomes.task_release(conn, old) == 0
    failure = rows.Failure(first.id, first.lease_token, "late", 1.0)
    assert await outcomes.task_fail(conn, [failure]) == 0
    assert await outcomes.task_snooze(conn, [(first.id, first.lease_token, 1.0)]) == 0
    assert await outcomes.task_ack(conn, [(second.id, second.lease_token)]) == 1
