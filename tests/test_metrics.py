"""The metrics port: /metrics while tasks run (counters, lag), /healthz with a stopped worker,
/readyz; and `sqlatasks health`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from sqlatasks import enqueue, enqueue_many
from tests import ledger, metrics_tasks
from tests.eventually import eventually
from tests.processes import Runner, Runners

SERVING = r"serving /metrics, /healthz, /readyz on http://127\.0\.0\.1:(\d+)"


async def _port(runner: Runner) -> int:
    text = await runner.wait_for_log(SERVING)
    found = re.search(SERVING, text)
    assert found is not None
    return int(found.group(1))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


@pytest.mark.slow
async def test_metrics_while_twenty_tasks_run_two_failing_once(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # A task due an hour ago, on a queue nobody serves: the lag gauge must show its age.
    async with async_sessionmaker(engine)() as session, session.begin():
        late = enqueue(metrics_tasks.metered, {"n": 99}, queue="unserved")
        session.add(late)
        await session.flush()
        late.scheduled_at -= timedelta(hours=1)
    runner = start_runner(
        "--workers", "2", "--metrics-port", "0", "--retry-delay", "0", "--queue", "metered",
        imports=["tests.metrics_tasks"],
    )  # fmt: skip
    port = await _port(runner)
    await runner.started(2)
    async with async_sessionmaker(engine)() as session, session.begin():
        await enqueue_many(session, metrics_tasks.metered, [{"n": n} for n in range(20)])
    first = (await _get(port, "/metrics")).text  # scraped while they run
    assert "sqlatasks_tasks_total" in first or "sqlatasks_queue_depth" in first
    await ledger.wait_for_entries(tmp_path, "metered", 22)
    key = (("outcome", "completed"), ("queue", "metered"), ("task", metrics_tasks.metered.name))
    retry = (("outcome", "retry"), *key[1:])

    def done(text: str) -> bool:
        return _samples(text).get(("sqlatasks_tasks_total", key)) == 20

    text = await eventually(
        lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text,
        done,
        what="20 completed tasks counted",
    )
    samples = _samples(text)
    assert samples[("sqlatasks_tasks_total", retry)] == 2
    count = ("sqlatasks_task_duration_seconds_count", key[1:])
    assert samples[count] == 22
    assert samples[("sqlatasks_queue_lag_seconds", (("queue", "unserved"),))] > 3500
    assert samples[("sqlatasks_queue_depth", (("queue", "unserved"), ("state", "due")))] == 1
    assert samples[("sqlatasks_workers_alive", ())] == 2


@pytest.mark.slow
async def test_healthz_503_while_a_worker_is_stopped_200_once_replaced(
    start_runner: Runners, db_url: str
) -> None:
    runner = start_runner("--workers", "2", "--metrics-port", "0", imports=["tests.metrics_tasks"])
    port = await _port(runner)
    pids = await runner.started(2)
    await eventually(lambda: _status(port, "/healthz"), lambda s: s == 200, what="healthy")
    assert (await _get(port, "/readyz")).status_code == 200
    assert _health_command(db_url, port) == 0
    os.kill(pids[0], signal.SIGSTOP)
    try:
        await eventually(lambda: _status(port, "/healthz"), lambda s: s == 503, what="503")
        assert _health_command(db_url, port) == 1
        await runner.started(3)  # the hung worker is killed and replaced
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed as hung: the usual case
            os.kill(pids[0], signal.SIGCONT)
    await eventually(lambda: _status(port, "/healthz"), lambda s: s == 200, what="healthy again")


@pytest.mark.slow
async def test_readyz_503_and_health_command_1_when_the_database_is_unreachable(
    start_runner: Runners,
) -> None:
    runner = start_runner(
        "--workers", "1", "--metrics-port", "0",
        database_url="postgresql://nobody@127.0.0.1:1/none",
    )  # fmt: skip
    port = await _port(runner)
    response = await _get(port, "/readyz")
    assert response.status_code == 503
    assert "database unreachable" in response.text


def _status(port: int, path: str) -> int:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30).status_code


def _health_command(db_url: str, port: int) -> int:
    command = [sys.executable, "-m", "sqlatasks", "--database-url", db_url, "health"]
    return subprocess.run([*command, "--metrics-port", str(port)], timeout=60).returncode
