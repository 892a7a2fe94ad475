"""The queue's objects in a named schema (SQLATASKS_SCHEMA / `--schema`), end to end.

The schema is fixed when sqlatasks is imported, so everything that uses it here is its own
process, as in production: the application (its own alembic history, its enqueues, from a
session whose search_path is the default one), `sqlatasks migrate`, the real runner and the
operator commands. This test process imported sqlatasks without a schema.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from sqlatasks import migrations, models, runner, settings
from tests import ledger
from tests.conftest import url_for
from tests.eventually import eventually
from tests.processes import Runners
from tests.test_alembic_integration import FILTERS, admin, alembic_in, write_app
from tests.test_commands import cli, execute

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "jobs"

# The application: its own engine and session, the default search_path (no sqlatasks in it).
APPLICATION = """
import asyncio
import sys

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from sqlatasks import enqueue, enqueue_many
from tests.runner_tasks import Job, always_fail, record


async def main(url):
    engine = create_async_engine(url)
    async with AsyncSession(engine) as session, session.begin():
        path = (await session.execute(text("SHOW search_path"))).scalar_one()
        assert path == '"$user", public', path
        session.add(enqueue(record, Job(key=1)))
        session.add(enqueue(record, Job(key=2), concurrency_key="k"))  # sqlatasks_key_admits
        session.add(enqueue(record, Job(key=3), unique_key="u"))  # the unique-key triggers
        session.add(enqueue(record, Job(key=99), unique_key="u"))  # a duplicate: skipped
        session.add(enqueue(record, Job(key=4), queue="limited"))  # sqlatasks_queue_room
        session.add(enqueue(always_fail, Job(key=5)))  # parks after 3 attempts
        await enqueue_many(session, record, [Job(key=k) for k in range(10, 20)])  # COPY
    await engine.dispose()


asyncio.run(main(sys.argv[1]))
"""


@pytest.fixture
def bare_url(database_url: str) -> Iterator[str]:
    """A database with nothing in it, of this module's own (its name differs from others')."""
    name = f"sqlatasks_schema_{os.getpid()}"
    admin(database_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    yield url_for(database_url, name)
    admin(database_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def in_schema(*args: str) -> subprocess.CompletedProcess[str]:
    """`python *args` from this checkout with SQLATASKS_SCHEMA set, as the application runs."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), settings.SCHEMA_ENV: SCHEMA},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def objects(url: str, schema: str) -> list[str]:
    """The relations and functions in `schema`, by name."""
    rows = execute(
        url,
        f"SELECT relname::text FROM pg_class WHERE relnamespace = '{schema}'::regnamespace "
        f"UNION ALL SELECT proname::text FROM pg_proc "
        f"WHERE pronamespace = '{schema}'::regnamespace ORDER BY 1",
    )
    return [name for (name,) in rows]


def ours(names: list[str]) -> list[str]:
    return [name for name in names if "sqlatasks" in name]


def migrate(way: str, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if way == "alembic":
        # A user-style application: its revision 0001 calls migrations.upgrade, its 0002
        # creates its own table, which must land in public (the search_path given back).
        app = tmp_path / "app"
        app.mkdir()
        write_app(app, FILTERS["include_name"])
        with monkeypatch.context() as environment:
            environment.setenv(settings.SCHEMA_ENV, SCHEMA)  # alembic_in passes it on
            done = alembic_in(app, url, "upgrade", "head")
            assert done.returncode == 0, done.stderr
            generated = alembic_in(app, url, "revision", "--autogenerate", "-m", "next")
            assert generated.returncode == 0, generated.stderr
        (script,) = (app / "migrations" / "versions").glob("*next.py")
        assert "sqlatasks" not in script.read_text()  # autogenerate proposes nothing of ours
    else:
        done = cli("migrate", "--schema", SCHEMA, "--json", url=url)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"from": 0, "to": migrations.LATEST}


async def wait_parked(url: str) -> None:
    query = f"SELECT count(*) FROM {SCHEMA}.sqlatasks_tasks WHERE failed_at IS NOT NULL"
    engine = create_async_engine(url)
    try:

        async def parked() -> int:
            async with engine.connect() as conn:
                return int((await conn.exec_driver_sql(query)).scalar_one())

        await eventually(parked, what="the failing task parked", timeout=60)
    finally:
        await engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("way", ["alembic", "command"])
def test_a_named_schema_end_to_end(
    way: str, bare_url: str, tmp_path: Path, start_runner: Runners, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(settings.SCHEMA_ENV, raising=False)
    migrate(way, bare_url, tmp_path, monkeypatch)
    assert "sqlatasks_tasks" in objects(bare_url, SCHEMA)
    public = objects(bare_url, "public")
    assert ours(public) == [], public
    if way == "alembic":
        assert {"alembic_version", "customers"} <= set(public)  # the application's, in public

    limited = cli("limit", "limited", "--max-running", "1", "--schema", SCHEMA, url=bare_url)
    assert limited.returncode == 0, limited.stderr
    enqueued = in_schema("-c", APPLICATION, bare_url)
    assert enqueued.returncode == 0, enqueued.stderr

    # --schema: the runner restarts itself with SQLATASKS_SCHEMA set; its workers inherit it.
    runner = start_runner("--schema", SCHEMA, "--workers", "1", database_url=bare_url)
    done = asyncio.run(ledger.wait_for_entries(start_runner.folder, "end", 14))
    assert sorted(e.key or 0 for e in done) == [1, 2, 3, 4, *range(10, 20)]
    asyncio.run(wait_parked(bare_url))

    status = cli("status", "--json", "--schema", SCHEMA, url=bare_url)
    assert status.returncode == 0, status.stderr
    assert {q["queue"]: q["failed"] for q in json.loads(status.stdout)}["default"] == 1
    failed = in_schema("-m", "sqlatasks", "failed", "--json", "--database-url", bare_url)
    assert failed.returncode == 0, failed.stderr
    assert [f["task_name"] for f in json.loads(failed.stdout)] == ["tests.runner_tasks:always_fail"]
    # Nothing of sqlatasks outside the schema; only the parked task left in it.
    assert ours(objects(bare_url, "public")) == []
    assert execute(bare_url, f"SELECT count(*) FROM {SCHEMA}.sqlatasks_tasks")[0][0] == 1
    assert "Traceback" not in runner.log(), runner.log()


# Every statement the package builds at import, scanned in a process with the schema set: no
# table or function of sqlatasks named without it (SQL comments aside).
SCAN = r"""
import importlib, pkgutil, re
import sqlatasks.sql
from sqlalchemy.sql.elements import TextClause

NAMES = re.compile(
    r'(?<![."\w])(sqlatasks_(?:tasks|finished|periodic|queues|throughput|key_admits|queue_room))\b'
)
for info in pkgutil.iter_modules(sqlatasks.sql.__path__):
    module = importlib.import_module(f"sqlatasks.sql.{info.name}")
    for name, value in vars(module).items():
        sql = value.text if isinstance(value, TextClause) else value
        if isinstance(sql, str) and "sqlatasks_" in sql and name != "FINISHED_CHANNEL":
            # Not comments, nor the channel a NOTIFY names (channels are per database).
            code = re.sub(r"--[^\n]*|'sqlatasks_finished'", "", sql)
            bare = [m for m in NAMES.findall(code)]
            qualified = code.count('"jobs".sqlatasks_')
            print(f"{info.name}.{name} {qualified} {' '.join(bare) or '-'}")
"""


def test_every_statement_names_the_schema() -> None:
    scanned = in_schema("-c", SCAN)
    assert scanned.returncode == 0, scanned.stderr
    lines = [line.split(" ", 2) for line in scanned.stdout.splitlines()]
    assert len(lines) > 30  # the scan found the statements
    bare = [f"{where}: {names}" for where, _count, names in lines if names != "-"]
    assert bare == []
    claim = next(count for where, count, _ in lines if where == "claim._CLAIM_LIMITED")
    assert int(claim) == 4  # the queue table twice, sqlatasks_key_admits, sqlatasks_queue_room


def test_without_a_schema_the_sql_is_what_it_was() -> None:
    """This process imported sqlatasks with no SQLATASKS_SCHEMA: bare names, no schema DDL."""
    assert models.SCHEMA is None
    assert models.TABLE_NAME == "sqlatasks_tasks"
    assert models.KEY_ADMITS_FUNCTION == "sqlatasks_key_admits"
    assert models.CANCEL_CHANNEL == "sqlatasks_cancel"
    assert models.QueuedTask.__table__.schema is None
    script = migrations.ddl()
    for added in ("CREATE SCHEMA", "SET search_path TO", "sqlatasks.search_path", "ALTER FUNC"):
        assert added not in script


def test_a_schema_name_is_checked_at_import() -> None:
    bad = subprocess.run(
        [sys.executable, "-c", "import sqlatasks"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), settings.SCHEMA_ENV: "my-jobs"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "ConfigurationError: invalid SQLATASKS_SCHEMA: a schema name is" in bad.stderr
    assert settings.schema_problem("pg_jobs") is not None
    assert settings.schema_problem("x" * 47) is not None
    assert settings.schema_problem("Jobs_2") is None


def test_schema_flag_from_code_is_refused_not_reexecuted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Called from code, the runner cannot restart the process: it says what to set instead."""
    code = runner.main(["--schema", "jobs", "--database-url", "postgresql://u@127.0.0.1:1/x"])
    assert code == 2
    assert "set SQLATASKS_SCHEMA before importing sqlatasks" in capsys.readouterr().err
