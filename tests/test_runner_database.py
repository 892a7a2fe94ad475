"""The runner against a database that is not there, or not migrated."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.processes import Runner


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_database_is_one_line_per_retry_then_a_clean_stop(
    tmp_path: Path,
) -> None:
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{_closed_port()}/nothing"
    runner = Runner(url, tmp_path, "--workers", "1")
    try:
        text = await runner.wait_for_log("database unreachable", count=2, timeout=30)
        assert "retrying in 1 s" in text
        assert "retrying in 2 s" in text
        assert "Traceback" not in text
        runner.signal(signal.SIGTERM)
        assert await runner.wait_exit(15) == 0
    finally:
        runner.kill()


async def test_missing_queue_table_says_to_migrate(database_url: str, tmp_path: Path) -> None:
    url = make_url(database_url).set(database="postgres").render_as_string(False)
    runner = Runner(url, tmp_path, "--workers", "1")
    try:
        assert await runner.wait_exit(30) == 1
        log = runner.log()
        assert "sqlatasks_tasks does not exist: run `alembic upgrade head`" in log
        assert "Traceback" not in log
    finally:
        runner.kill()
