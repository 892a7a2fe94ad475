"""Task status and results, fast tier: `get_task` through `sqlatasks.testing.run_pending`, which
writes outcomes through the completer's own path (docs/status.md)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import (
    TaskDefinitionError,
    enqueue,
    get_task,
    get_task_by_key,
    kept_counts,
    task,
)
from sqlatasks.testing import Committed, Completed, LeaseLost, run_pending
from tests import status_tasks as t

pytestmark = pytest.mark.anyio


async def _add(session: AsyncSession, queued: Any) -> int:
    session.add(queued)
    await session.flush()
    return int(queued.id)


async def test_queued_scheduled_then_completed_with_its_typed_result(
    session: AsyncSession,
) -> None:
    now = await _add(session, enqueue(t.export, t.Export(rows=3)))
    later = await _add(session, enqueue(t.export, t.Export(rows=4), delay=3600))
    queued, scheduled = await get_task(session, now), await get_task(session, later)
    assert queued is not None
    assert queued.state == "queued"
    assert queued.attempts == 0
    assert scheduled is not None
    assert scheduled.state == "scheduled"
    assert queued.task_name == t.export.name
    assert queued.queue == "default"

    [outcome] = await run_pending(session)
    assert isinstance(outcome, Completed)
    done = await get_task(session, now)
    assert done is not None
    assert done.state == "completed"
    assert done.result == t.ExportDone(url="s3://exports/3.csv", rows=3)  # typed, not a dict
    assert done.attempts == 1
    assert done.finished_at is not None
    assert done.started_at is not None
    assert done.started_at <= done.finished_at
    assert done.payload is None
    with_payload = await get_task(session, now, payload=True)
    assert with_payload is not None
    assert with_payload.payload == {"rows": 3, "gate": None}
    [counts] = await kept_counts(session)
    assert (counts.queue, counts.completed, counts.cancelled) == ("default", 1, 0)


async def test_a_task_that_keeps_nothing_leaves_nothing(session: AsyncSession) -> None:
    gone = await _add(session, enqueue(t.unkept, t.Export(rows=1)))
    kept_by_default = await _add(session, enqueue(t.short_lived, t.Export(rows=2)))
    await run_pending(session)
    assert await get_task(session, gone) is None  # finished and not kept: unknown, as before
    assert await get_task(session, 10**12) is None  # never existed
    kept = await get_task(session, kept_by_default)
    assert kept is not None
    assert kept.result == 4


async def test_the_runner_wide_keep_keeps_tasks_that_do_not_say(session: AsyncSession) -> None:
    task_id = await _add(session, enqueue(t.unkept, t.Export(rows=5)))
    await run_pending(session, keep=60)
    found = await get_task(session, task_id)
    assert found is not None
    assert (found.state, found.result) == ("completed", 5)


async def test_a_result_with_a_nul_character_is_not_kept_and_harms_no_other_outcome(
    session: AsyncSession,
) -> None:
    # jsonb refuses \u0000: writing such a result failed the whole batch of outcomes, and the
    # runner's completer retried that batch until the leases ran out (the tasks ran again).
    nul = await _add(session, enqueue(t.nul_result, t.Export(rows=1)))
    other = await _add(session, enqueue(t.export, t.Export(rows=2)))
    await run_pending(session)
    found = await get_task(session, nul)
    assert found is not None
    assert (found.state, found.result) == ("completed", None)
    done = await get_task(session, other)
    assert done is not None
    assert done.result == t.ExportDone(url="s3://exports/2.csv", rows=2)


async def test_a_parked_task_shows_failed_with_its_error(session: AsyncSession) -> None:
    task_id = await _add(session, enqueue(t.broken, t.Export(rows=7)))
    await run_pending(session)
    found = await get_task(session, task_id)
    assert found is not None
    assert found.state == "failed"
    assert found.last_error is not None
    assert "cannot export 7 rows" in found.last_error


async def test_by_unique_key_the_newest_task_that_held_it(session: AsyncSession) -> None:
    first = await _add(session, enqueue(t.export, t.Export(rows=1), unique_key="export-1"))
    duplicate = enqueue(t.export, t.Export(rows=1), unique_key="export-1", on_duplicate="report")
    await _add(session, duplicate)
    found = await get_task_by_key(session, "export-1")
    assert found is not None
    assert (found.id, found.state) == (first, "queued")
    await run_pending(session)
    found = await get_task_by_key(session, "export-1")
    assert found is not None
    assert (found.id, found.state) == (first, "completed")
    again = await _add(session, enqueue(t.export, t.Export(rows=1), unique_key="export-1"))
    found = await get_task_by_key(session, "export-1")
    assert found is not None
    assert (found.id, found.state) == (again, "queued")
    assert await get_task_by_key(session, "no-such-key") is None


async def _exports_table(session: AsyncSession) -> None:
    await session.execute(text("CREATE TABLE IF NOT EXISTS status_exports (rows int)"))


async def test_a_session_task_keeps_its_result_with_its_writes(session: AsyncSession) -> None:
    await _exports_table(session)
    task_id = await _add(session, enqueue(t.export_in_session, t.Export(rows=9)))
    [outcome] = await run_pending(session)
    assert isinstance(outcome, Committed)
    found = await get_task(session, task_id)
    assert found is not None
    assert found.result == t.ExportDone(url="db", rows=9)
    assert (await session.execute(text("SELECT rows FROM status_exports"))).scalars().all() == [9]


async def test_a_session_task_that_loses_its_lease_keeps_no_result(
    session: AsyncSession,
) -> None:
    await _exports_table(session)
    task_id = await _add(session, enqueue(t.export_in_session, t.Export(rows=8, gate="lose-lease")))
    [outcome] = await run_pending(session, max_rounds=1)
    assert isinstance(outcome, LeaseLost)  # its transaction rolled back...
    found = await get_task(session, task_id)
    assert found is not None
    assert found.state == "running"
    assert found.result is None
    assert (await session.execute(text("SELECT rows FROM status_exports"))).scalars().all() == []


async def test_chaining_a_follow_up_commits_with_the_task(session: AsyncSession) -> None:
    first = await _add(session, enqueue(t.export_then_notify, t.Export(rows=20)))
    outcomes = await run_pending(session)
    assert [type(o) for o in outcomes] == [Committed, Completed]  # the follow-up ran too
    chained = await get_task(session, first)
    assert chained is not None
    assert chained.result == t.ExportDone(url="chained", rows=20)
    follow_up = await get_task(session, outcomes[1].task.id)
    assert follow_up is not None
    assert follow_up.result == t.ExportDone(url="s3://exports/21.csv", rows=21)


class NotJson:
    pass


class Payload(BaseModel):
    n: int


def test_a_result_that_cannot_be_stored_as_json_is_refused_at_decoration() -> None:
    async def returns_an_object(data: Payload) -> NotJson:
        return NotJson()

    returns_an_object.__module__ = __name__
    returns_an_object.__qualname__ = "returns_an_object"
    with pytest.raises(TaskDefinitionError, match="cannot be stored as JSON"):
        task(returns_an_object)


def test_keep_must_be_seconds() -> None:
    async def negative(data: Payload) -> None: ...

    negative.__module__ = __name__
    negative.__qualname__ = "negative"
    with pytest.raises(TaskDefinitionError, match="keep must be"):
        task(keep=-1)(negative)
