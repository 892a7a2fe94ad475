"""A runner never parks a task merely because it does not know its name: it gives the task
back, unrun and uncounted, due again after `attempts.UNKNOWN_TASK_WAIT`, and `status` counts
it as waiting (`unknown`) until a runner that knows it runs it (rolling deploys, split
fleets). A row naming code outside the application's packages (`os:system`) is still parked
and never imported."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqlatasks import enqueue
from tests import ledger, robust_other_tasks
from tests.conftest import ROOT, count_tasks
from tests.eventually import eventually
from tests.processes import Runners
from tests.robust_conn_tasks import Mark, note

pytestmark = pytest.mark.slow
WAITING = "failed_at IS NULL AND attempts = 0 AND last_error LIKE 'TaskUnknown:%'"


def status(db_url: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQLATASKS_")}
    done = subprocess.run(
        [sys.executable, "-m", "sqlatasks", "--json", "status"],
        cwd=ROOT, env={**env, "SQLATASKS_DATABASE_URL": db_url},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {queue["queue"]: queue for queue in json.loads(done.stdout)}


async def test_a_runner_gives_back_what_it_does_not_know_for_one_that_does(
    db_url: str, engine: AsyncEngine, start_runner: Runners
) -> None:
    first = start_runner(
        "--workers", "1", "--idle-sleep", "0.5", imports=["tests.robust_conn_tasks"]
    )
    await first.started(1)
    async with AsyncSession(engine) as session, session.begin():
        for key in range(3):
            session.add(enqueue(robust_other_tasks.other_note, Mark(key=key)))
        session.add(enqueue(note, Mark(key=100)))  # one it knows, to see that it claims at all
    await ledger.wait_for_entries(start_runner.folder, "ran", 1)
    await eventually(lambda: count_tasks(engine, WAITING), lambda n: n == 3, what="3 waiting")
    shown = status(db_url)["default"]
    assert (shown["unknown"], shown["failed"], shown["due"]) == (3, 0, 0)
    assert await count_tasks(engine, "scheduled_at > now() + interval '20 seconds'") == 3
    # One warning for the name, not one per row.
    said = re.findall(r"WARNING .*robust_other_tasks:other_note' cannot run here", first.log())
    assert len(said) == 1, first.log()
    first.signal(signal.SIGTERM)
    assert await first.wait_exit(60) == 0

    # Rather than wait out the UNKNOWN_TASK_WAIT, make them due now.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE sqlatasks_tasks SET scheduled_at = now()"))
    second = start_runner("--workers", "1", "--burst", imports=["tests.robust_other_tasks"])
    assert await second.wait_exit(60) == 0
    ran = ledger.keys(ledger.entries(start_runner.folder, "ran"))
    assert sorted(k for k in ran if k is not None) == [0, 1, 2, 100]
    assert await count_tasks(engine) == 0


async def test_names_of_a_newer_deploy_wait_and_foreign_code_is_parked(
    db_url: str, engine: AsyncEngine, start_runner: Runners
) -> None:
    waiting = [
        "tests.robust_conn_tasks:added_later",  # its module, imported, lacks it (an older one)
        "tests.lazypkg.newer:task",  # in an allowed package, not in this deploy
        "tests.forbidden_side_effect:boom",  # another part of the application: not imported
        "a custom name",  # @task(name=...) of a runner with other imports
    ]
    async with engine.begin() as conn:
        for name in [*waiting, "os:system"]:
            await conn.execute(
                text("INSERT INTO sqlatasks_tasks (task_name, payload) VALUES (:n, '{}')"),
                {"n": name},
            )
    runner = start_runner(
        "--workers", "1", "--burst", imports=["tests.robust_conn_tasks", "tests.lazypkg"]
    )
    # A burst runner does not wait for them: they are not its work.
    assert await runner.wait_exit(60) == 0
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT task_name, last_error, failed_at IS NOT NULL, attempts,"
                " scheduled_at > now() FROM sqlatasks_tasks"
            )
        )
        rows = {name: rest for name, *rest in found.all()}
    for name in waiting:
        error, parked, attempts_made, later = rows[name]
        assert error.startswith("TaskUnknown:"), error
        assert (parked, attempts_made, later) == (False, 0, True)
    error, parked, attempts_made, _ = rows["os:system"]
    assert "outside the allowed imports" in error
    assert (parked, attempts_made) == (True, 1)
    assert not ledger.entries(start_runner.folder, "forbidden module imported")
    assert status(db_url)["default"]["unknown"] == len(waiting)
