"""The schema under test is the one `alembic upgrade head` creates; it matches the ORM model."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks.models import SCHEMA_VERSION, Base
from tests.conftest import alembic


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_name": lambda name, kind, _parent: (
                kind != "table" or name in Base.metadata.tables
            ),
            "compare_server_default": True,
        },
    )
    return list(compare_metadata(context, Base.metadata))


async def test_upgrade_head_matches_the_model(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def test_table_is_tuned_for_a_queue(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        options = (
            await conn.execute(
                text("SELECT reloptions FROM pg_class WHERE relname = 'sqlatasks_tasks'")
            )
        ).scalar_one()
        assert "fillfactor=70" in options
        assert "autovacuum_vacuum_scale_factor=0" in options
        indexes = (
            (
                await conn.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE tablename = 'sqlatasks_tasks'")
                )
            )
            .scalars()
            .all()
        )
        foreign_keys = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM pg_constraint"
                    " WHERE conrelid = 'sqlatasks_tasks'::regclass AND contype = 'f'"
                )
            )
        ).scalar_one()
        comment = (
            await conn.execute(text("SELECT obj_description('sqlatasks_tasks'::regclass)"))
        ).scalar_one()
    # the primary key, the claim index, the unique-key index, the concurrency-key index (v5),
    # the parked index (v6)
    assert len(indexes) == 5
    assert any(
        i.startswith("CREATE INDEX sqlatasks_tasks_parked_idx")
        and "(failed_at DESC, id DESC) WHERE (failed_at IS NOT NULL)" in i
        for i in indexes
    )
    assert any("(priority DESC, scheduled_at, id) WHERE (failed_at IS NULL)" in i for i in indexes)
    assert any(
        i.startswith("CREATE UNIQUE INDEX sqlatasks_tasks_unique_key_idx")
        and "WHERE ((unique_key IS NOT NULL) AND (failed_at IS NULL))" in i
        for i in indexes
    )
    assert foreign_keys == 0
    assert comment == f"sqlatasks schema version {SCHEMA_VERSION}"


async def test_downgrade_to_v1_and_back(db_url: str, engine: AsyncEngine) -> None:
    async def state() -> tuple[str, list[str], list[str]]:
        async with engine.connect() as conn:
            comment = (
                await conn.execute(text("SELECT obj_description('sqlatasks_tasks'::regclass)"))
            ).scalar_one()
            columns = await conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = 'sqlatasks_tasks' ORDER BY ordinal_position"
                )
            )
            functions = await conn.execute(
                text("SELECT proname FROM pg_proc WHERE proname LIKE 'sqlatasks%' ORDER BY 1")
            )
            return comment, list(columns.scalars()), list(functions.scalars())

    down = alembic(db_url, "downgrade", "0001_sqlatasks_v1")
    assert down.returncode == 0, down.stderr
    comment, columns, functions = await state()
    assert comment == "sqlatasks schema version 1"
    assert not {"unique_key", "on_duplicate", "duplicate_of"} & set(columns)
    assert functions == ["sqlatasks_notify"]
    up = alembic(db_url, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    comment, columns, functions = await state()
    assert comment == f"sqlatasks schema version {SCHEMA_VERSION}"
    added = columns[columns.index("unique_key") :]  # in the order of the versions
    assert added[:3] == ["unique_key", "on_duplicate", "duplicate_of"]
    assert added[3:5] == ["concurrency_key", "concurrency_limit"]  # v5
    assert added[-1] == "trace_context"  # v8
    assert functions == [
        "sqlatasks_finished_notify",  # v4
        "sqlatasks_key_admits",  # v5
        "sqlatasks_notify",
        "sqlatasks_queue_room",  # v5
        "sqlatasks_unique_check",
        "sqlatasks_unique_skip",
    ]
    async with engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def test_downgrade_then_upgrade_round_trips(db_url: str, engine: AsyncEngine) -> None:
    down = alembic(db_url, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    async with engine.connect() as conn:
        gone = (await conn.execute(text("SELECT to_regclass('sqlatasks_tasks')"))).scalar_one()
        function = (await conn.execute(text("SELECT to_regproc('sqlatasks_notify')"))).scalar_one()
        periodic = (
            await conn.execute(text("SELECT to_regclass('sqlatasks_periodic')"))
        ).scalar_one()
    assert gone is None
    assert periodic is None
    assert function is None
    up = alembic(db_url, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    async with engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


def test_alembic_without_a_database_url_says_so() -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "SQLATASKS_DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "set SQLATASKS_DATABASE_URL" in done.stderr
