"""One rule for a queue table this sqlatasks cannot use, asked by the runner's start-up, every
`sqlatasks` command, `/readyz` and `sqlatasks health` (`startup.schema_problem`): missing or
behind is a problem naming the fix; ahead (migrated before a rolling deploy) is not."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks import migrations, observe
from sqlatasks.models import SCHEMA_COMMENT_PREFIX, TABLE_NAME


async def _set_version(engine: AsyncEngine, version: int) -> None:
    async with engine.begin() as conn:
        comment = f"{SCHEMA_COMMENT_PREFIX}{version}"
        await conn.execute(text(f"COMMENT ON TABLE {TABLE_NAME} IS '{comment}'"))


async def test_the_latest_and_a_newer_schema_are_ready(engine: AsyncEngine) -> None:
    assert await observe.ready_problem(engine) is None
    await _set_version(engine, migrations.LATEST + 1)
    assert await observe.ready_problem(engine) is None


async def test_a_schema_behind_names_the_versions_and_the_fix(engine: AsyncEngine) -> None:
    await _set_version(engine, migrations.LATEST - 1)
    problem = await observe.ready_problem(engine)
    assert problem == (
        f"the queue table sqlatasks_tasks is at schema version {migrations.LATEST - 1}, this "
        f"sqlatasks needs {migrations.LATEST}: run `sqlatasks migrate` (or `alembic upgrade "
        "head`, with your alembic history)"
    )


async def test_a_missing_table_is_not_called_version_0(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE {TABLE_NAME} CASCADE"))
    problem = await observe.ready_problem(engine)
    assert problem is not None
    assert problem.startswith("the queue table sqlatasks_tasks does not exist: check --schema")
    assert "version" not in problem


async def test_a_table_without_a_version_says_so(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"COMMENT ON TABLE {TABLE_NAME} IS NULL"))
    problem = await observe.ready_problem(engine)
    assert problem is not None
    assert "no schema version in its comment" in problem
