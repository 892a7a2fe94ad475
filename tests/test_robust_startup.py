"""The runner fails loudly at start when waiting cannot help: one line on stderr, a non-zero
exit, no retry loop. A queue table at an older schema version (the comment `alembic upgrade`
writes on it), a role or database that does not exist. With `--burst`, an unreachable
database also ends the run, after `startup.BURST_DATABASE_WAIT` seconds."""

from __future__ import annotations

import re
import socket

import pytest
from sqlalchemy.engine import make_url

from sqlatasks import startup
from sqlatasks.models import SCHEMA_VERSION
from tests.conftest import alembic
from tests.processes import Runners

pytestmark = pytest.mark.slow
IMPORTS = ["tests.robust_conn_tasks"]


def _problem_lines(log: str) -> list[str]:
    """The runner's own last word: lines that are not log records."""
    return [line for line in log.splitlines() if line.startswith("python -m sqlatasks.runner:")]


async def test_an_older_schema_stops_the_runner_with_one_line(
    db_url: str, start_runner: Runners
) -> None:
    await _older_schema(db_url, start_runner, 2, "0002_sqlatasks_v2")


async def test_an_older_schema_stops_a_burst_runner_too(db_url: str, start_runner: Runners) -> None:
    await _older_schema(db_url, start_runner, 1, "0001_sqlatasks_v1", "--burst")


async def _older_schema(
    db_url: str, start_runner: Runners, version: int, revision: str, *flags: str
) -> None:
    done = alembic(db_url, "downgrade", revision)
    assert done.returncode == 0, done.stderr
    runner = start_runner("--workers", "1", *flags, imports=IMPORTS)
    assert await runner.wait_exit(60) == 1
    log = runner.log()
    assert "Traceback" not in log
    assert "sqlatasks.worker" not in log  # no worker started
    [line] = [line for line in log.splitlines() if "alembic upgrade head" in line]
    assert line in _problem_lines(log)
    assert f"schema version {version}" in line
    assert f"needs {SCHEMA_VERSION}" in line


async def test_a_role_that_does_not_exist_stops_a_burst_runner(
    db_url: str, start_runner: Runners
) -> None:
    await _missing_role(db_url, start_runner, "--burst")


async def test_a_role_that_does_not_exist_stops_a_service_runner(
    db_url: str, start_runner: Runners
) -> None:
    await _missing_role(db_url, start_runner)


async def _missing_role(db_url: str, start_runner: Runners, *flags: str) -> None:
    # The throwaway server trusts every connection, so a wrong password cannot be shown here;
    # a wrong role is refused the same way (SQLSTATE class 28, invalid authorization).
    url = make_url(db_url).set(username="no_such_role", password="wrong").render_as_string(False)
    runner = start_runner("--workers", "1", *flags, imports=IMPORTS, database_url=url)
    assert await runner.wait_exit(60) == 1
    [line] = _problem_lines(runner.log())
    assert '"no_such_role" does not exist' in line
    assert "Traceback" not in runner.log()


async def test_a_database_that_does_not_exist_stops_a_service_runner(
    db_url: str, start_runner: Runners
) -> None:
    url = make_url(db_url).set(database="no_such_database").render_as_string(False)
    runner = start_runner("--workers", "1", imports=IMPORTS, database_url=url)
    assert await runner.wait_exit(60) == 1
    [line] = _problem_lines(runner.log())
    assert '"no_such_database" does not exist' in line


async def test_a_burst_runner_gives_up_on_an_unreachable_database(
    start_runner: Runners,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{port}/nothing"
    runner = start_runner("--workers", "1", "--burst", imports=IMPORTS, database_url=url)
    bound = startup.BURST_DATABASE_WAIT + startup.CONNECT_TIMEOUT + 30  # + start-up
    assert await runner.wait_exit(bound) == 1
    log = runner.log()
    assert len(re.findall("database unreachable", log)) >= 2  # it did retry first
    [line] = _problem_lines(log)
    assert "giving up" in line


async def test_a_runner_without_any_task_refuses_to_start(start_runner: Runners) -> None:
    # No --import at all, and an --import of a package that registers nothing itself.
    for imports in ([], ["tests.lazypkg"]):
        runner = start_runner("--workers", "1", imports=imports)
        assert await runner.wait_exit(60) == 2
        [line] = runner.log().splitlines()
        assert "no @task is registered" in line
        assert "give --import the modules that define your tasks" in line
