"""pg_terminate_backend on each kind of runner connection, and a failure of the ack write."""

from __future__ import annotations

import pytest

from tests.chaos import tasks
from tests.chaos.harness import Chaos
from tests.chaos.invariants import read_executions
from tests.eventually import eventually

pytestmark = pytest.mark.slow


async def test_the_listener_reconnects_and_wakes_workers_again(chaos: Chaos) -> None:
    # A long idle sleep: a quick pickup after the cut can only come from a renewed LISTEN.
    runner = chaos.runner("--workers", "1", "--idle-sleep", "120")
    await runner.started(1)
    await eventually(lambda: chaos.terminate("listener"), what="a listener connection to cut")
    await runner.wait_for_log("LISTEN connection lost")
    # Reconnected: a new listener session that has run its LISTENs (then only keep-alives).
    await eventually(
        lambda: chaos.sessions("listener", "query LIKE 'LISTEN %' OR query = 'SELECT 1'"),
        what="a listener session that has run LISTEN again",
        timeout=30,
    )
    await chaos.enqueue(tasks.work, 1)
    verdict = await chaos.settled(timeout=10)  # far below the idle sleep
    verdict.assert_ok()


async def test_cut_claim_connections_lose_no_task(chaos: Chaos) -> None:
    await cut_connections(chaos, "claim")


async def test_cut_completer_connections_lose_no_task(chaos: Chaos) -> None:
    await cut_connections(chaos, "completer")


async def test_cut_listener_connections_lose_no_task(chaos: Chaos) -> None:
    await cut_connections(chaos, "listener")


async def cut_connections(chaos: Chaos, role: str) -> None:
    runner = chaos.runner("--workers", "1", "--concurrency", "5", "--idle-sleep", "0.2")
    await runner.started(1)
    await chaos.enqueue(tasks.work, 300, sleep=0.05)
    await chaos.enqueue(tasks.work, 20, rollback=True)
    for done in (20, 60, 100):
        await eventually(
            lambda: read_executions(chaos.folder),
            lambda runs: len(runs) >= done,  # noqa: B023 (used at once, in this iteration)
            what=f"{done} executions",
        )
        # A cut connection is back after a reconnect backoff.
        await eventually(lambda: chaos.terminate(role), what=f"a {role} connection to cut")
        await chaos.enqueue(tasks.work, 20, sleep=0.05)
    verdict = await chaos.settled(timeout=120)
    verdict.assert_ok()
    assert verdict.completed == 360
    log = runner.log()
    assert "Traceback" not in log
    assert "died" not in log


async def test_a_failed_ack_write_is_retried(chaos: Chaos) -> None:
    runner = chaos.runner("--workers", "1", "--concurrency", "2")
    await runner.started(1)
    await chaos.enqueue(tasks.cuts_its_ack, 3)
    await chaos.enqueue(tasks.work, 10)
    await runner.wait_for_log("writing [0-9]+ outcomes failed .*; retrying", timeout=60)
    # Every ack lands (the retry), no lease is left behind, nothing ran twice without cause.
    verdict = await chaos.settled(timeout=60)
    verdict.assert_ok()
    assert verdict.completed == 13
    # A completer that is still reconnecting has no backend to cut: at least one was cut.
    assert [f for f in chaos.faults.read() if f.kind.endswith("at ack")]
