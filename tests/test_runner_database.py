"""The runner against a database that is not there, or not migrated."""

from __future__ import annotations

import signal
import socket

import pytest
from sqlalchemy.engine import make_url

from tests.processes import Runners

pytestmark = pytest.mark.slow


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_database_is_one_line_per_retry_then_a_clean_stop(
    start_runner: Runners,
) -> None:
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{_closed_port()}/nothing"
    runner = start_runner("--workers", "1", database_url=url)
    text = await runner.wait_for_log("database unreachable", count=2, timeout=30)
    assert "retrying in 1 s" in text
    assert "retrying in 2 s" in text
    assert "Traceback" not in text
    runner.signal(signal.SIGTERM)
    assert await runner.wait_exit(15) == 0


async def test_missing_queue_table_says_to_migrate(
    database_url: str, start_runner: Runners
) -> None:
    url = make_url(database_url).set(database="postgres").render_as_string(False)
    runner = start_runner("--workers", "1", database_url=url)
    assert await runner.wait_exit(30) == 1
    log = runner.log()
    assert "sqlatasks_tasks does not exist: check --schema (SQLATASKS_SCHEMA), or run " in log
    assert "run `sqlatasks migrate` (or `alembic upgrade head`" in log
    assert "Traceback" not in log
