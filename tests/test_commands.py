"""The `sqlatasks` command line as a user runs it: a subprocess, a real database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from sqlatasks import migrations

ROOT = Path(__file__).resolve().parent.parent  # this checkout (not an installed copy's)
COMMANDS = ["status", "failed", "retry", "cancel", "purge", "migrate", "sql", "run"]


def python(
    *args: str, url: str | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """`python *args` with this checkout importable, SQLATASKS_DATABASE_URL set to `url`."""
    env = {k: v for k, v in os.environ.items() if k != "SQLATASKS_DATABASE_URL"}
    env["PYTHONPATH"] = str(ROOT)
    if url is not None:
        env["SQLATASKS_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def cli(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    return python("-m", "sqlatasks", *args, url=url)


def execute(url: str, *statements: str, autocommit: bool = False) -> list[Any]:
    """Run statements on `url` (as a script, in one round trip each); the last one's rows."""

    async def run() -> list[Any]:
        options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
        engine = create_async_engine(url, **options)
        rows: list[Any] = []
        async with engine.begin() as conn:
            for statement in statements:
                result = await conn.exec_driver_sql(statement)
                rows = list(result.all()) if result.returns_rows else []
        await engine.dispose()
        return rows

    return asyncio.run(run())


def run_script(url: str, script: str) -> None:
    """A multi-statement SQL script, as psql would run it."""

    async def run() -> None:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(script)  # type: ignore[union-attr]
        await engine.dispose()

    asyncio.run(run())


@pytest.fixture
def empty_url(database_url: str) -> Iterator[str]:
    """A database with nothing in it (the `db_url` clones already hold the queue's tables)."""
    name = f"sqlatasks_cli_{os.getpid()}"
    drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    execute(database_url, drop, f"CREATE DATABASE {name}", autocommit=True)
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    execute(database_url, drop, autocommit=True)


def version(url: str) -> int:
    comment = execute(url, "SELECT obj_description(to_regclass('sqlatasks_tasks'), 'pg_class')")
    return int(comment[0][0].removeprefix("sqlatasks schema version ")) if comment[0][0] else 0


def fill(url: str) -> None:
    """A due task, a scheduled one and a failed one in queue "mail"."""
    execute(
        url,
        "INSERT INTO sqlatasks_tasks (task_name, payload, queue, scheduled_at) VALUES"
        " ('m:due', '{}', 'mail', now() - interval '5 seconds'),"
        " ('m:later', '{}', 'mail', now() + interval '1 hour')",
        "INSERT INTO sqlatasks_tasks (task_name, payload, queue, failed_at, last_error)"
        " VALUES ('m:bad', '{}', 'mail', now(), 'ValueError: bad')",
    )


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--json"],
        ["--json", "status"],
        ["status", "--json", "--database-url", "URL"],
        ["--database-url", "URL", "status", "--json"],
        ["--database-url=URL", "--json", "status"],
    ],
)
def test_global_options_go_before_or_after_the_command(db_url: str, args: list[str]) -> None:
    fill(db_url)
    given = [db_url if a == "URL" else a.replace("=URL", f"={db_url}") for a in args]
    done = cli(*given, url=None if any("URL" in a for a in args) else db_url)
    assert done.returncode == 0, done.stderr
    assert [q["queue"] for q in json.loads(done.stdout)] == ["mail"]


@pytest.mark.slow
def test_json_has_iso_timestamps_numbers_and_null(db_url: str) -> None:
    fill(db_url)
    (stats,) = json.loads(cli("status", "--json", url=db_url).stdout)
    assert (stats["due"], stats["scheduled"], stats["failed"]) == (1, 1, 1)
    assert isinstance(stats["oldest_due_seconds"], float)
    assert stats["oldest_due_seconds"] >= 5
    (failed,) = json.loads(cli("failed", "--json", url=db_url).stdout)
    assert "T" in failed["failed_at"]
    assert datetime.fromisoformat(failed["failed_at"]).tzinfo is not None
    assert failed["last_error"] == "ValueError: bad"

    execute(db_url, "DELETE FROM sqlatasks_tasks WHERE failed_at IS NULL")
    (stats,) = json.loads(cli("--json", "status", url=db_url).stdout)
    assert stats["oldest_due_seconds"] is None  # nothing due: null, not "None"


@pytest.mark.slow
def test_help_of_each_command_says_what_it_does() -> None:
    top = cli("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
    helps = {command: cli(command, "--help") for command in COMMANDS}
    assert all(done.returncode == 0 for done in helps.values()), helps
    assert "running one is interrupted" in " ".join(helps["cancel"].stdout.split())
    assert "--all" in helps["retry"].stdout
    assert "--from-version" in helps["sql"].stdout
    assert f"schema version {migrations.LATEST}" in helps["migrate"].stdout
    assert "--import" in helps["run"].stdout
    assert "--database-url" in helps["status"].stdout  # the global options, after the command


@pytest.mark.slow
def test_the_console_script_is_the_command_line() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["sqlatasks"].partition(":")
    # What the installed `sqlatasks` script does: import the entry point and call it.
    entry = f"import sys; sys.argv[0] = 'sqlatasks'; from {module} import {function}; {function}()"
    done = python("-c", entry, "cancel", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: sqlatasks cancel")
    installed = Path(sys.executable).with_name("sqlatasks")
    if installed.exists():  # under nox, the editable install of this checkout has one
        assert "running one is interrupted" in " ".join(
            python(str(installed), "cancel", "--help").stdout.split()
        )


@pytest.mark.slow
def test_run_is_the_runner() -> None:
    url = "postgresql://u@127.0.0.1:1/x"
    for args in (["--import", "no_such_module_here"], ["--workers", "0"], ["--bogus"]):
        runner = python("-m", "sqlatasks.runner", *args, url=url)
        via_cli = cli("run", *args, url=url)
        assert via_cli.returncode == runner.returncode == 2, (args, via_cli.stderr)
        prog = "python -m sqlatasks.runner"
        assert via_cli.stderr.replace("python -m sqlatasks run", prog) == runner.stderr
    helps = [cli("run", "--help"), python("-m", "sqlatasks.runner", "--help")]
    assert helps[0].stdout.startswith("usage: python -m sqlatasks run ")
    cli_options, runner_options = (h.stdout.split("options:")[1] for h in helps)
    assert cli_options == runner_options
    before = cli("--database-url", "mysql://x/y", "run")
    assert before.returncode == 2
    assert "needs PostgreSQL" in before.stderr  # the global option reached the runner


@pytest.mark.slow
def test_runner_from_another_directory_names_module_directory_and_fix(tmp_path: Path) -> None:
    (tmp_path / "project" / "myapp").mkdir(parents=True)
    (tmp_path / "project" / "myapp" / "__init__.py").write_text("")
    (tmp_path / "project" / "myapp" / "tasks.py").write_text("import no_such_dependency\n")
    (tmp_path / "elsewhere").mkdir()
    url = "postgresql://u@127.0.0.1:1/x"

    lost = python("-m", "sqlatasks.runner", "--import", "myapp.tasks", url=url, cwd=tmp_path)
    assert lost.returncode == 2
    (line,) = lost.stderr.splitlines()
    assert "'myapp.tasks'" in line
    assert str(tmp_path) in line
    assert "PYTHONPATH" in line
    assert "pip install -e ." in line

    # Found, but its own import fails: that is named instead, with no advice about directories.
    broken = python(
        "-m", "sqlatasks.runner", "--import", "myapp.tasks", url=url, cwd=tmp_path / "project"
    )
    assert broken.returncode == 2
    (line,) = broken.stderr.splitlines()
    assert "'myapp.tasks'" in line
    assert "No module named 'no_such_dependency'" in line
    assert "PYTHONPATH" not in line


def test_the_console_script_imports_from_the_directory_it_starts_in(tmp_path: Path) -> None:
    """`sqlatasks run` is documented as `python -m sqlatasks.runner`, started from the project's
    directory; but a console script's sys.path has its own bin directory, not the current one."""
    (tmp_path / "project" / "myapp").mkdir(parents=True)
    (tmp_path / "project" / "myapp" / "__init__.py").write_text("")
    (tmp_path / "project" / "myapp" / "tasks.py").write_text("import no_such_dependency\n")
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "sqlatasks"  # what pip writes for [project.scripts]
    script.write_text(
        "import sys\nfrom sqlatasks.commands import console\n"
        "if __name__ == '__main__':\n    sys.exit(console())\n"
    )
    url = "postgresql://u@127.0.0.1:1/x"
    done = python(str(script), "run", "--import", "myapp.tasks", url=url, cwd=tmp_path / "project")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "No module named 'no_such_dependency'" in line  # myapp.tasks itself was found


@pytest.mark.slow
def test_migrate_creates_and_upgrades_the_schema(empty_url: str) -> None:
    first = cli("migrate", "--json", url=empty_url)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"from": 0, "to": migrations.LATEST}
    assert version(empty_url) == migrations.LATEST
    again = cli("migrate", url=empty_url)
    assert again.stdout.split() == ["from", "to", str(migrations.LATEST), str(migrations.LATEST)]
    assert cli("status", url=empty_url).stdout.strip() == "(none)"


async def test_migrate_twice_at_once_both_succeed(empty_url: str) -> None:
    """Two application instances starting together: each waits for the other's migrate."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SQLATASKS_DATABASE_URL": empty_url}
    command = [sys.executable, "-m", "sqlatasks", "--json", "migrate"]
    waiting = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    engine = create_async_engine(empty_url)
    try:
        async with engine.connect() as holder, engine.connect() as watcher:
            # Hold migrate's lock, so that both start before either may go on.
            await holder.exec_driver_sql(f"SELECT pg_advisory_lock({migrations._MIGRATE_LOCK})")
            started = [
                subprocess.Popen(  # noqa: ASYNC220 (starts it; the waiting is below, in a thread)
                    command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
                for _ in range(2)
            ]
            with anyio.fail_after(60):
                while (await watcher.execute(waiting)).scalar_one() < 2:
                    await watcher.rollback()
                    assert all(p.poll() is None for p in started), "a migrate did not wait"
                    await anyio.sleep(0.05)
            await holder.exec_driver_sql(f"SELECT pg_advisory_unlock({migrations._MIGRATE_LOCK})")
            await holder.commit()
            results = [await anyio.to_thread.run_sync(p.communicate, None, 120) for p in started]
            assert [process.returncode for process in started] == [0, 0], results
            reports = sorted(json.loads(out)["from"] for out, _ in results)
            assert reports == [0, migrations.LATEST]  # one created it, the other found it done
            assert await watcher.run_sync(migrations.current_version) == migrations.LATEST
    finally:
        await engine.dispose()


@pytest.mark.slow
def test_a_database_behind_is_told_to_migrate(empty_url: str) -> None:
    run_script(empty_url, migrations.ddl(version=migrations.LATEST - 1))
    behind = cli("status", url=empty_url)
    assert behind.returncode == 1
    assert behind.stderr == (
        f"python -m sqlatasks: the queue table sqlatasks_tasks is at schema version "
        f"{migrations.LATEST - 1}, this sqlatasks needs {migrations.LATEST}: run `sqlatasks "
        "migrate` (or `alembic upgrade head`, with your alembic history)\n"
    )
    upgraded = json.loads(cli("migrate", "--json", url=empty_url).stdout)
    assert upgraded == {"from": migrations.LATEST - 1, "to": migrations.LATEST}
    assert cli("status", url=empty_url).returncode == 0


@pytest.mark.slow
def test_sql_prints_the_ddl_that_migrate_applies(empty_url: str) -> None:
    printed = cli("sql")  # no database needed
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("BEGIN;")
    assert printed.stdout.rstrip().endswith("COMMIT;")
    run_script(empty_url, printed.stdout)
    assert version(empty_url) == migrations.LATEST
    assert cli("status", url=empty_url).returncode == 0

    last = cli("sql", "--from-version", str(migrations.LATEST - 1)).stdout
    assert "CREATE TABLE sqlatasks_tasks" not in last
    assert f"IS 'sqlatasks schema version {migrations.LATEST}';" in last
    assert cli("sql", "--from-version", str(migrations.LATEST + 1)).returncode == 2
