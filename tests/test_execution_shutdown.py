"""Shutdown under the execution slots' long-lived scopes and the deadline watchdog (issue 17):
real runners, real signals, a real PostgreSQL. SIGTERM lets running tasks finish within
--shutdown-timeout (their time limits still apply meanwhile) and releases the rest; a second
signal interrupts at once; nothing is lost and nothing is left leased (docs/runner.md)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests import execution_tasks as t
from tests import ledger
from tests.conftest import count_tasks
from tests.execution_support import MODULE, assert_timed_out, events_of, put_in_order, row
from tests.execution_tasks import Job
from tests.processes import Runners


def assert_released(found: dict[str, object] | None) -> None:
    """Given back unrun: due at once, the attempt not counted, no lease held."""
    assert found is not None
    assert found["attempts"] == 0, found
    assert found["lease_token"] is None, found
    assert found["locked_until"] is None, found
    assert found["last_error"] is None, found
    assert found["failed_at"] is None, found
    assert float(str(found["due_in"])) <= 0, found


@pytest.mark.slow
async def test_sigterm_finishes_times_out_and_releases_within_the_shutdown_timeout(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner(
        "--workers", "1", "--concurrency", "3", "--shutdown-timeout", "5", imports=[MODULE]
    )
    await runner.started(1)
    finishes, times_out, released = await put_in_order(
        engine,
        (t.waits, Job(key=1, sleep=2)),
        (t.two_second_limit, Job(key=2, sleep=60)),
        (t.waits, Job(key=3, sleep=600)),
    )
    await ledger.wait_for_entries(tmp_path, "start", 3)
    signalled = time.monotonic()
    runner.signal(signal.SIGTERM)
    assert await runner.wait_exit(5 + 20) == 0
    took = time.monotonic() - signalled
    assert 4.5 <= took < 15, took  # waited the shutdown timeout for the last one, no longer
    assert events_of(tmp_path, 1) == ["start", "end"]
    assert await row(engine, finishes) is None
    # Its time limit ran out during the grace: a timeout like any other, not a release.
    found = await row(engine, times_out)
    assert found is not None
    assert_timed_out(found, "2")
    assert events_of(tmp_path, 3) == ["start", "cancelled"]
    assert_released(await row(engine, released))
    assert "released 1 unfinished tasks" in runner.log()
    assert await count_tasks(engine, "lease_token IS NOT NULL OR locked_until IS NOT NULL") == 0


@pytest.mark.slow
async def test_a_second_signal_releases_at_once_also_after_a_timeout_in_the_slot(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # Two slots; one of them first runs a task cut off by its limit (its scope spent), then a
    # long one. Both long tasks are interrupted by the second signal and given back.
    runner = start_runner(
        "--workers", "1", "--concurrency", "2", "--shutdown-timeout", "300", imports=[MODULE]
    )
    await runner.started(1)
    cut, first, second = await put_in_order(
        engine,
        (t.half_second_limit, Job(key=1, sleep=60)),
        (t.waits, Job(key=2, sleep=600)),
        (t.waits, Job(key=3, sleep=600)),
    )
    await ledger.wait_for_entries(tmp_path, "start", 3)
    runner.signal(signal.SIGTERM)
    await runner.wait_for_log("stopping: no new claims")
    signalled = time.monotonic()
    runner.signal(signal.SIGTERM)
    assert await runner.wait_exit(30) == 0
    assert time.monotonic() - signalled < 10
    found = await row(engine, cut)
    assert found is not None
    assert_timed_out(found, "0.5")
    for key, task_id in ((2, first), (3, second)):
        assert events_of(tmp_path, key) == ["start", "cancelled"]
        assert_released(await row(engine, task_id))
    assert await count_tasks(engine, "lease_token IS NOT NULL OR locked_until IS NOT NULL") == 0
