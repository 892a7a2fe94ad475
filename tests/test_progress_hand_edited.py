"""A progress column that no worker wrote (edited by hand, or by a script) is shown as it is
stored, never an error: by `get_task`, the dashboard's task page and `sqlatasks show`."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqlatasks import get_task
from sqlatasks.dashboard import create_app
from tests.dashboard_tasks import seed
from tests.test_dashboard import client
from tests.test_operations import cli

ODD_VALUES = ['"halfway"', '{"value": 1}', '{"value": 1, "reported_at": "soon", "attempt": 1}']


async def _with_progress(engine: AsyncEngine, value: str, task_id: int | None = None) -> int:
    if task_id is None:
        task_id = (await seed(engine))["queued"]
    async with engine.begin() as conn:
        update = text("UPDATE sqlatasks_tasks SET progress = CAST(:v AS jsonb) WHERE id = :id")
        await conn.execute(update, {"v": value, "id": task_id})
    return task_id


async def test_get_task_and_the_dashboard_show_it_as_stored(engine: AsyncEngine) -> None:
    task_id = (await seed(engine))["queued"]
    for stored in ODD_VALUES:
        await _with_progress(engine, stored, task_id)
        async with AsyncSession(engine) as session:
            info = await get_task(session, task_id)
        assert info is not None
        assert info.progress is not None
        assert info.progress.reported_at is None, stored
        assert info.progress.attempt is None
        async with client(create_app(engine)) as c:
            page = await c.get(f"/task/{task_id}")
        assert page.status_code == 200, stored
        assert "edited by hand" in page.text


@pytest.mark.slow
async def test_sqlatasks_show_prints_it(engine: AsyncEngine, db_url: str) -> None:
    task_id = await _with_progress(engine, '"halfway"')
    shown = cli("show", str(task_id), url=db_url)
    assert shown.returncode == 0, shown.stderr
    assert "halfway" in shown.stdout
