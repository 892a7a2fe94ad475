"""The operator API and `python -m sqlatasks` over it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from sqlatasks import operations
from tests.conftest import ROOT, count_tasks

STATES = {
    "due": "scheduled_at = now() - interval '30 seconds'",
    "scheduled": "scheduled_at = now() + interval '1 hour'",
    "running": "locked_until = now() + interval '1 minute', attempts = 1",
    "failed": "failed_at = now(), attempts = 3, last_error = 'ValueError: bad\nTraceback'",
}


async def add(conn: AsyncConnection, queue: str, state: str) -> int:
    row = await conn.execute(
        text(
            "INSERT INTO sqlatasks_tasks (task_name, payload, queue) "
            "VALUES ('m:f', '{}', :queue) RETURNING id"
        ),
        {"queue": queue},
    )
    task_id = int(row.scalar_one())
    await conn.execute(text(f"UPDATE sqlatasks_tasks SET {STATES[state]} WHERE id = {task_id}"))
    return task_id


async def fill(conn: AsyncConnection) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {state: [] for state in STATES}
    for queue, states in [("default", ["due", "due", "scheduled", "running", "failed"]),
                          ("mail", ["due", "failed", "failed"])]:  # fmt: skip
        for state in states:
            ids[state].append(await add(conn, queue, state))
    return ids


async def test_stats_failed_retry_delete_cancel(session: AsyncSession) -> None:
    ids = await fill(await session.connection())
    stats = {s.queue: s for s in await operations.queue_stats(session)}
    assert (stats["default"].due, stats["default"].scheduled) == (2, 1)
    assert (stats["default"].running, stats["default"].failed) == (1, 1)
    assert (stats["mail"].due, stats["mail"].failed) == (1, 2)
    assert stats["default"].oldest_due_seconds is not None
    assert stats["default"].oldest_due_seconds >= 30

    failed = await operations.failed_tasks(session, queue="mail")
    assert {f.id for f in failed} == set(ids["failed"][1:])
    assert failed[0].last_error is not None
    assert failed[0].last_error.startswith("ValueError: bad")

    assert await operations.retry_failed(session, [ids["failed"][0]]) == 1
    stats = {s.queue: s for s in await operations.queue_stats(session)}
    assert (stats["default"].due, stats["default"].failed) == (3, 0)
    assert await operations.delete_failed(session, "all") == 2
    assert await operations.failed_tasks(session) == []

    assert await operations.cancel(session, ids["scheduled"][0]) == "deleted"
    assert await operations.cancel(session, ids["running"][0]) == "cancelling"  # by NOTIFY
    assert await operations.cancel(session, 10**12) == "missing"
    assert await count_rows(session, ids["running"][0]) == 0  # deleted: it never runs again


def cli(*args: str, url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQLATASKS_")}
    if url:
        env["SQLATASKS_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "sqlatasks", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.slow
async def test_the_command_line(db_url: str, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ids = await fill(conn)
    status = cli("status", url=db_url)
    assert status.returncode == 0, status.stderr
    header, *lines = status.stdout.splitlines()
    assert header.split() == [
        "queue", "due", "scheduled", "running", "failed", "oldest_due_seconds", "unknown",
        "completed", "cancelled",
    ]  # fmt: skip
    assert lines[0].split()[:5] == ["default", "2", "1", "1", "1"]
    as_json = json.loads(cli("--json", "status", url=db_url).stdout)
    assert [(q["queue"], q["failed"]) for q in as_json] == [("default", 1), ("mail", 2)]

    failed = cli("failed", "--queue", "mail", url=db_url)
    assert failed.returncode == 0
    assert "ValueError: bad" in failed.stdout
    assert "Traceback" not in failed.stdout  # one line per task in the table

    assert json.loads(cli("--json", "retry", str(ids["failed"][0]), url=db_url).stdout) == {
        "retried": 1
    }
    assert cli("purge", "--all", url=db_url).stdout.split() == ["deleted", "2"]
    assert cli("cancel", str(ids["due"][0]), url=db_url).stdout.split() == ["cancelled", "deleted"]
    assert await count_tasks(engine) == 5

    missing = cli("purge", url=db_url)
    assert missing.returncode == 2
    assert missing.stderr == "python -m sqlatasks purge: give task ids, or --all\n"
    no_url = cli("status", url=None)
    assert no_url.returncode == 2
    assert "SQLATASKS_DATABASE_URL" in no_url.stderr
    down = cli("status", url="postgresql://nobody@127.0.0.1:1/none")
    assert down.returncode == 1
    assert down.stderr.startswith("python -m sqlatasks: database error:")
    assert len(down.stderr.splitlines()) == 1


async def count_rows(session: AsyncSession, task_id: int) -> int:
    found = await session.execute(
        text("SELECT count(*) FROM sqlatasks_tasks WHERE id = :id"), {"id": task_id}
    )
    return int(found.scalar_one())
