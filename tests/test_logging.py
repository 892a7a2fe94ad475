"""Worker logs reach the runner's stderr whatever the application does to logging at import,
on a platform without /proc too; task records carry the task's id, name and attempt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from sqlatasks import Task, enqueue_many
from tests import ledger, logging_dict_tasks, logging_tasks
from tests.processes import Runners

NOPROC = Path(__file__).parent / "noproc"


async def _enqueue(engine: AsyncEngine, fn: Task[Any], count: int) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        await enqueue_many(session, fn, [{"n": n} for n in range(count)])


@pytest.mark.slow
async def test_basic_config_force_at_import_keeps_worker_and_task_lines(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", imports=["tests.logging_tasks"])
    await runner.started(1)
    await _enqueue(engine, logging_tasks.chatty, 2)
    await ledger.wait_for_entries(tmp_path, "chatty", 2)
    await runner.wait_for_log(r"myapp\.tasks: chatty says 1")
    log = await runner.wait_for_log(r"myapp\.tasks: chatty says 0")
    assert "sqlatasks.worker: started" in log
    assert "chatty says 1" in (tmp_path / "app.log").read_text()  # the app's handler too


@pytest.mark.slow
async def test_dict_config_at_import_json_lines_carry_the_task(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner(
        "--workers", "1", "--log-format", "json", "--retry-delay", "0",
        imports=["tests.logging_dict_tasks"],
    )  # fmt: skip
    await _enqueue(engine, logging_dict_tasks.noted, 2)
    await ledger.wait_for_entries(tmp_path, "noted", 3)  # 0 fails once
    await runner.wait_for_log(r'"message": "noted 1"')
    await runner.wait_for_log(r"first attempt of 0 fails")
    records = [json.loads(line) for line in runner.log().splitlines() if line.startswith("{")]
    noted = [r for r in records if r["message"].startswith("noted ")]
    assert {(r["message"], r["task_attempt"]) for r in noted} >= {("noted 0", 1), ("noted 0", 2)}
    assert all(r["task_name"] == "tests.logging_dict_tasks:noted" for r in noted), noted
    assert all(isinstance(r["task_id"], int) for r in noted)
    assert any(r["logger"] == "sqlatasks.worker" and "started" in r["message"] for r in records)
    failed = [r for r in records if "first attempt of 0 fails" in r["message"]]
    assert failed[0]["level"] == "WARNING"
    assert "raise RuntimeError" in failed[0]["message"]  # the traceback's tail


@pytest.mark.slow
async def test_tasks_run_and_log_without_proc(
    engine: AsyncEngine,
    start_runner: Runners,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every process of this runner fails to open any path under /proc (tests/noproc).
    monkeypatch.setenv("PYTHONPATH", f"{NOPROC}:{Path(__file__).parent.parent}")
    runner = start_runner("--workers", "2", imports=["tests.logging_tasks"])
    await runner.started(2)
    await _enqueue(engine, logging_tasks.chatty, 5)
    await ledger.wait_for_entries(tmp_path, "chatty", 5)
    await runner.wait_for_log(r"myapp\.tasks: chatty says \d", count=5)
    assert "crashed" not in runner.log()
