"""The least-privilege roles of docs/reliability.md, proven: a producer role enqueues and a
worker role runs the real runner, each with only the GRANTs the page lists; and the read-only
dashboard's role of docs/dashboard.md serves every page."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from sqlatasks import enqueue, enqueue_many
from sqlatasks.dashboard import create_app
from tests import ledger, runner_tasks
from tests.processes import Runners

pytestmark = pytest.mark.slow

GRANTS = """
CREATE ROLE {producer} LOGIN;
GRANT USAGE ON SCHEMA public TO {producer};
GRANT INSERT ON sqlatasks_tasks TO {producer};
GRANT SELECT (id, scheduled_at, attempts, last_error, failed_at, created_at, duplicate_of)
    ON sqlatasks_tasks TO {producer};
GRANT USAGE ON SEQUENCE sqlatasks_tasks_id_seq TO {producer};
CREATE ROLE {worker} LOGIN;
GRANT USAGE ON SCHEMA public TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON sqlatasks_tasks TO {worker};
GRANT USAGE ON SEQUENCE sqlatasks_tasks_id_seq TO {worker};
GRANT SELECT, INSERT, UPDATE ON sqlatasks_periodic TO {worker};
GRANT SELECT, INSERT, DELETE ON sqlatasks_finished TO {worker};
GRANT SELECT, UPDATE ON sqlatasks_queues TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON sqlatasks_throughput TO {worker};
"""
DASHBOARD_GRANTS = """
CREATE ROLE {dashboard} LOGIN;
GRANT USAGE ON SCHEMA public TO {dashboard};
GRANT SELECT ON sqlatasks_tasks, sqlatasks_finished, sqlatasks_periodic, sqlatasks_queues,
                sqlatasks_throughput TO {dashboard};
GRANT pg_read_all_stats TO {dashboard};
"""


async def test_producer_and_worker_roles_need_only_their_grants(
    engine: AsyncEngine, db_url: str, tmp_path: Path, start_runner: Runners
) -> None:
    suffix = make_url(db_url).database
    producer, worker = f"producer_{suffix}", f"worker_{suffix}"
    async with engine.begin() as conn:
        for statement in GRANTS.format(producer=producer, worker=worker).split(";"):
            if statement.strip():
                await conn.execute(text(statement))
    try:
        as_producer = create_async_engine(make_url(db_url).set(username=producer))
        async with async_sessionmaker(as_producer)() as session, session.begin():
            session.add(enqueue(runner_tasks.record, runner_tasks.Job(key=0)))
            # A unique key's check and a skipped duplicate's removal run as the table's owner.
            keyed = [
                enqueue(runner_tasks.record, runner_tasks.Job(key=3), unique_key="three")
                for _ in range(2)
            ]
            session.add_all(keyed)
            await session.flush()
            assert keyed[0].duplicate_of is None
            assert keyed[1].duplicate_of == keyed[0].id
            await enqueue_many(
                session, runner_tasks.record, [runner_tasks.Job(key=k) for k in (1, 2)]
            )
        async with as_producer.connect() as conn:  # and nothing more: no payloads, no changes
            with pytest.raises(ProgrammingError, match="permission denied"):
                await conn.execute(text("SELECT payload FROM sqlatasks_tasks"))
        async with as_producer.connect() as conn:
            with pytest.raises(ProgrammingError, match="permission denied"):
                await conn.execute(text("DELETE FROM sqlatasks_tasks"))
        await as_producer.dispose()
        worker_url = make_url(db_url).set(username=worker).render_as_string(hide_password=False)
        runner = start_runner(
            "--workers",
            "1",
            imports=["tests.runner_tasks", "tests.periodic_tasks"],  # its scheduler too
            database_url=worker_url,
        )
        await ledger.wait_for_entries(tmp_path, "end", 4, timeout=60)
        await runner.wait_for_log("registered; first run at", count=2)
        runner.signal(signal.SIGTERM)
        assert await runner.wait_exit(60) == 0, runner.log()
        assert "permission denied" not in runner.log()
        ends = Counter(e.key for e in ledger.entries(tmp_path, "end"))
        assert ends == Counter([0, 1, 2, 3])
        async with engine.connect() as conn:
            left = await conn.execute(text("SELECT count(*) FROM sqlatasks_tasks"))
            assert left.scalar_one() == 0
            seated = await conn.execute(text("SELECT count(*) FROM sqlatasks_periodic"))
            assert seated.scalar_one() == 2  # the scheduler wrote as the worker role
            counted = await conn.execute(text("SELECT sum(completed) FROM sqlatasks_throughput"))
            assert counted.scalar_one() == 4  # the rollup, flushed as the worker role at exit
    finally:
        async with engine.begin() as conn:
            for role in (producer, worker):
                await conn.execute(text(f"DROP OWNED BY {role}"))
                await conn.execute(text(f"DROP ROLE {role}"))


async def test_the_read_only_dashboard_role_serves_every_page(
    engine: AsyncEngine, db_url: str
) -> None:
    dashboard = f"dashboard_{make_url(db_url).database}"
    async with engine.begin() as conn:
        for statement in DASHBOARD_GRANTS.format(dashboard=dashboard).split(";"):
            if statement.strip():
                await conn.execute(text(statement))
    as_dashboard = create_async_engine(make_url(db_url).set(username=dashboard))
    try:
        transport = httpx.ASGITransport(app=create_app(as_dashboard))
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            for path in ("/", "/tasks", "/tasks?state=running", "/parked", "/periodic",
                         "/workers"):  # fmt: skip
                page = await client.get(path)
                assert page.status_code == 200, (path, page.text)
            assert 'id="throughput"' in (await client.get("/")).text
        async with as_dashboard.connect() as conn:  # and nothing more
            with pytest.raises(ProgrammingError, match="permission denied"):
                await conn.execute(text("DELETE FROM sqlatasks_throughput"))
    finally:
        await as_dashboard.dispose()
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP OWNED BY {dashboard}"))
            await conn.execute(text(f"DROP ROLE {dashboard}"))
