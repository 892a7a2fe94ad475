"""Nothing a task does may stop the service or cost its neighbours: real runners, a real
PostgreSQL (docs/reliability.md, docs/cancellation.md)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from sqlatasks import Task, enqueue_many, errors, operations
from tests import ledger, robust_tasks
from tests.conftest import count_tasks
from tests.eventually import eventually
from tests.processes import Runners, wait_for_tasks
from tests.robust_tasks import Job

MODULE = "tests.robust_tasks"


async def put(engine: AsyncEngine, fn: Task[Any], keys: range) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        await enqueue_many(session, fn, [Job(key=k) for k in keys])


async def last_errors(engine: AsyncEngine, where: str) -> list[str]:
    async with engine.connect() as conn:
        found = await conn.execute(text(f"SELECT last_error FROM sqlatasks_tasks WHERE {where}"))
        return [str(e) for e in found.scalars()]


def ended(folder: Path) -> set[int | None]:
    return set(ledger.keys(ledger.entries(folder, "end")))


async def wait_until_ended(folder: Path, keys: set[int], timeout: float = 60) -> None:
    await eventually(
        lambda: ended(folder), lambda done: keys <= done, what=f"{keys} to end", timeout=timeout
    )


# -- a cancellation that no scope of ours issued fails that attempt only ---------------------


@pytest.mark.slow
async def test_a_task_raising_cancelled_error_parks_and_the_service_goes_on(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner(
        "--workers", "2", "--concurrency", "2", "--idle-sleep", "0.5", imports=[MODULE]
    )
    await runner.started(2)
    await put(engine, robust_tasks.raises_cancelled, range(2))
    await put(engine, robust_tasks.record, range(10, 16))
    # The poison parks at its max_attempts, with a clear last_error; its neighbours complete.
    await wait_for_tasks(
        engine, exactly=2, where="failed_at IS NOT NULL AND attempts = 3", timeout=60
    )
    await wait_until_ended(tmp_path, set(range(10, 16)))
    assert all(e.startswith("CancelledError") for e in await last_errors(engine, "true"))
    # Later tasks still run, on the same workers: none of them ended.
    await put(engine, robust_tasks.record, range(20, 23))
    await wait_until_ended(tmp_path, set(range(20, 23)))
    assert runner.process.poll() is None
    log = runner.log()
    assert log.count("sqlatasks.worker: started") == 2
    assert "exited" not in log
    assert "Traceback" not in log


@pytest.mark.slow
async def test_cancellations_from_elsewhere_fail_their_attempt_and_deadlines_still_work(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # One worker: each of these runs in the worker that ran the three odd cancellations.
    runner = start_runner(
        "--workers", "1", "--concurrency", "3", "--idle-sleep", "0.5", imports=[MODULE]
    )
    await runner.started(1)
    await put(engine, robust_tasks.cancelled_elsewhere, range(3))
    await wait_for_tasks(
        engine, exactly=3, where="failed_at IS NOT NULL AND attempts = 2", timeout=60
    )
    assert not ended(tmp_path)
    # The worker's own cancellations still work after them: a deadline, a task run to its end.
    await put(engine, robust_tasks.sleeps_past_its_timeout, range(10, 11))
    await put(engine, robust_tasks.record, range(20, 21))
    await wait_until_ended(tmp_path, {20})
    await wait_for_tasks(engine, exactly=4, where="failed_at IS NOT NULL", timeout=30)
    (timeout,) = await last_errors(engine, "task_name LIKE '%sleeps_past_its_timeout'")
    assert timeout.startswith("TimeoutError: exceeded its 0.5 s limit")
    assert runner.process.poll() is None
    assert runner.log().count("sqlatasks.worker: started") == 1


# -- once cancel() answers, no attempt of the task starts again ------------------------------


@pytest.mark.slow
async def test_a_task_failing_right_after_its_cancel_is_never_retried(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runners = [start_runner("--workers", "1", "--concurrency", "4", imports=[MODULE]) for _ in "ab"]
    for runner in runners:
        await runner.started(1)
    await put(engine, robust_tasks.fails_when_released, range(8))  # retry_delay=0
    await ledger.wait_for_entries(tmp_path, "start", 8)
    async with engine.connect() as conn:
        query = text("SELECT id, (payload->>'key')::int FROM sqlatasks_tasks")
        ids: dict[int, int] = {id_: key for id_, key in await conn.execute(query)}
    pending = dict(ids)
    while pending:
        task_id, key = pending.popitem()
        async with async_sessionmaker(engine)() as session, session.begin():
            assert await operations.cancel(session, task_id) == "cancelling"
            # The task fails after `cancel` answered, before its worker can hear of it.
            ledger.open_gate(tmp_path, f"release-{key}")
            await ledger.wait_for_entries(tmp_path, "failing", len(ids) - len(pending))
    await wait_for_tasks(engine, exactly=0, timeout=30)
    # A task enqueued after the cancels runs to its end, and nothing cancelled came back.
    await put(engine, robust_tasks.record, range(100, 101))
    await wait_until_ended(tmp_path, {100})
    starts = Counter(ledger.keys(ledger.entries(tmp_path, "start")))
    assert starts == Counter(range(8)) + Counter([100])
    assert all("Traceback" not in runner.log() for runner in runners)


@pytest.mark.slow
async def test_cancelling_tasks_that_keep_failing_never_says_missing(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    """Churn: 20 tasks failing and claimed again at once, all cancelled while they cycle."""
    runners = [
        start_runner("--workers", "1", "--concurrency", "4", imports=[MODULE]) for _ in range(2)
    ]
    for runner in runners:
        await runner.started(1)
    await put(engine, robust_tasks.fails_at_once, range(20))
    await eventually(  # every task is cycling: fail, due at once, claimed again
        lambda: set(ledger.keys(ledger.entries(tmp_path, "start"))),
        lambda keys: len(keys) == 20,
        what="every task to have started",
    )
    async with engine.connect() as conn:
        query = text("SELECT id, (payload->>'key')::int FROM sqlatasks_tasks")
        ids: dict[int, int] = {id_: key for id_, key in await conn.execute(query)}
    answers: Counter[str] = Counter()
    answered_at: dict[int, float] = {}
    for task_id, key in ids.items():
        async with async_sessionmaker(engine)() as session, session.begin():
            answers[await operations.cancel(session, task_id)] += 1
        answered_at[key] = time.time()
    # Every task existed (they fail for ever until cancelled): never "missing".
    assert answers["missing"] == 0, answers
    await wait_for_tasks(engine, exactly=0, timeout=30)
    # A task enqueued after the cancels runs to its end: the runners went on claiming, and
    # nothing cancelled came back.
    await put(engine, robust_tasks.record, range(100, 101))
    await wait_until_ended(tmp_path, {100})
    # The task's own "end" entry comes before its worker's batched ack deletes the row: wait.
    await wait_for_tasks(engine, exactly=0, timeout=30)
    late = Counter(
        e.key
        for e in ledger.entries(tmp_path, "start")
        if e.key is not None and e.key < 20 and e.at > answered_at[e.key]
    )
    # At most the attempt that was already claimed when the cancel committed.
    assert all(n <= 1 for n in late.values()), late
    assert all("Traceback" not in runner.log() for runner in runners)


@pytest.mark.slow
async def test_a_cancel_the_worker_never_hears_still_stops_the_retries(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # No LISTEN connection: the worker misses the notice, and the attempt runs on, then fails.
    runner = start_runner("--workers", "1", "--no-notify", "--idle-sleep", "0.2", imports=[MODULE])
    await runner.started(1)
    await put(engine, robust_tasks.fails_when_released, range(1))
    await ledger.wait_for_entries(tmp_path, "start", 1)
    async with engine.connect() as conn:
        task_id = (await conn.execute(text("SELECT id FROM sqlatasks_tasks"))).scalar_one()
    async with async_sessionmaker(engine)() as session, session.begin():
        assert await operations.cancel(session, task_id) == "cancelling"
    assert await count_tasks(engine) == 0  # gone at once: nothing left to claim
    ledger.open_gate(tmp_path, "release-0")  # the attempt fails now, after the cancel
    await runner.wait_for_log("outcomes matched no lease")
    await put(engine, robust_tasks.record, range(100, 101))
    await wait_until_ended(tmp_path, {100})
    assert ledger.keys(ledger.entries(tmp_path, "start")) == [0, 100]
    await wait_for_tasks(engine, exactly=0, timeout=30)


# -- a worker killed for an overrunning task charges that task alone -------------------------


@pytest.mark.slow
async def test_a_worker_killed_for_an_overrun_gives_its_neighbours_back_uncounted(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", "--concurrency", "4", imports=[MODULE])
    await runner.started(1)
    await put(engine, robust_tasks.overruns, range(1))
    await put(engine, robust_tasks.until_released, range(10, 13))  # max_attempts=1 each
    await ledger.wait_for_entries(tmp_path, "start", 4)
    await runner.wait_for_log("is hung")
    await runner.wait_for_log("died holding 4 tasks")
    for key in range(10, 13):
        ledger.open_gate(tmp_path, f"release-{key}")
    # The neighbours run again in the new worker, and finish: they were not charged.
    await wait_until_ended(tmp_path, set(range(10, 13)))
    await wait_for_tasks(engine, exactly=1, timeout=30)
    (error,) = await last_errors(engine, "failed_at IS NOT NULL AND attempts = 1")
    assert error.startswith("TimeoutError: it ran past its time limit and ignored its cancel")
    assert runner.log().count("sqlatasks.worker: started") == 2


@pytest.mark.slow
async def test_a_worker_killed_for_blocking_its_loop_charges_only_the_blocker(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # A blocked loop writes no last word: the supervisor reads the running tasks' deadlines
    # from the last beat, and charges only the tasks past their time limit when it killed it.
    runner = start_runner(
        "--workers", "1", "--concurrency", "4", "--check-interval", "0.5", imports=[MODULE]
    )
    await runner.started(1)
    await put(engine, robust_tasks.until_released, range(10, 13))  # max_attempts=1 each
    await ledger.wait_for_entries(tmp_path, "start", 3)
    # Not a timing assertion: room for a heartbeat (every 0.125 s here) to list the neighbours'
    # deadlines; a task that started after the last beat is a suspect like the blocker.
    await anyio.sleep(1)
    await put(engine, robust_tasks.blocks_the_loop, range(1))  # timeout 1 s, max_attempts=1
    await runner.wait_for_log("is hung")
    await runner.wait_for_log("died holding 4 tasks")
    for key in range(10, 13):
        ledger.open_gate(tmp_path, f"release-{key}")
    await wait_until_ended(tmp_path, set(range(10, 13)))  # run again, not parked
    await wait_for_tasks(engine, exactly=1, timeout=30)
    (error,) = await last_errors(engine, "failed_at IS NOT NULL AND attempts = 1")
    assert "TimeoutError" in error, error


@pytest.mark.slow
async def test_a_worker_dead_for_no_reason_it_named_charges_every_task(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", "--concurrency", "4", imports=[MODULE])
    (pid,) = await runner.started(1)
    await put(engine, robust_tasks.until_released, range(10, 12))  # max_attempts=1 each
    await ledger.wait_for_entries(tmp_path, "start", 2)
    os.kill(pid, signal.SIGKILL)  # an OOM kill, say: no task to blame, so each is charged
    await runner.wait_for_log("died holding 2 tasks: each due again")
    parked = await last_errors(engine, "failed_at IS NOT NULL AND attempts = 1")
    assert len(parked) == 2
    assert all(e.startswith("WorkerLost") for e in parked)


# -- exception text is capped: head and tail, and how much was cut ---------------------------


@pytest.mark.slow
async def test_a_20_mb_exception_message_is_stored_and_logged_capped(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(engine, robust_tasks.huge_error, range(1))
    runner = start_runner("--workers", "1", "--burst", imports=[MODULE])
    assert await runner.wait_exit(120) == 0
    (error,) = await last_errors(engine, "failed_at IS NOT NULL")
    assert len(error) <= errors.ERROR_LIMIT
    assert error.startswith("ValueError: HEADxxx")
    assert "TAIL" in error
    assert said_cut(error.partition("\n")[0]) == robust_tasks.HUGE + 8 - (
        error.partition("\n")[0].count("x") + 8
    )  # the first line (the message) says exactly what it lost
    assert max(len(line) for line in runner.log().splitlines()) < 2 * errors.MESSAGE_LIMIT


class Loud(Exception):
    def __str__(self) -> str:
        return "L" * 5_000_000


def recurse(depth: int) -> int:
    return recurse(depth + 1) + 1


def chained(depth: int) -> None:
    try:
        if depth:
            chained(depth - 1)
        raise ValueError("m" * 1_000_000)
    except ValueError as exc:
        raise RuntimeError(f"level {depth}") from exc


@pytest.mark.parametrize("raise_it", ["loud", "recursion", "chain"])
def test_any_exception_text_is_capped(raise_it: str) -> None:
    try:
        if raise_it == "loud":
            raise Loud()
        if raise_it == "recursion":
            recurse(0)
        chained(50)
    except BaseException as exc:
        caught = exc
    for text_ in (errors.describe(caught, with_traceback=True), errors.describe(caught)):
        assert len(text_) <= errors.ERROR_LIMIT
    line = errors.one_line(caught)
    assert len(line) <= errors.MESSAGE_LIMIT + 40
    assert "\n" not in line
    if raise_it == "loud":
        assert line.startswith("Loud: LLL")
        assert line.endswith("LLL")
        assert said_cut(line) == 5_000_000 - (line.count("L") - 1)  # not the L of "Loud"


def said_cut(text_: str) -> int:
    """The number of characters `text_` says were cut from it."""
    found = re.search(r"\[\.\.\. ([\d,]+) characters cut \.\.\.\]", text_)
    assert found is not None, text_[:200]
    return int(found.group(1).replace(",", ""))
