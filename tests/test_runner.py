"""The service as a newcomer runs it: real runner processes, real signals, a real PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from sqlatasks import Task, enqueue_many, operations
from tests import ledger, runner_tasks
from tests.conftest import count_tasks
from tests.eventually import eventually
from tests.processes import Runners, alive, now, wait_for_tasks

pytestmark = pytest.mark.slow


async def put(engine: AsyncEngine, fn: Task[Any], payloads: list[Any]) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        await enqueue_many(session, fn, payloads)


def jobs(count: int, sleep: float = 0.0, first: int = 0) -> list[runner_tasks.Job]:
    return [runner_tasks.Job(key=first + i, sleep=sleep) for i in range(count)]


async def row(engine: AsyncEngine, where: str = "true") -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(f"SELECT * FROM sqlatasks_tasks WHERE {where}"))).one()


async def test_burst_runs_everything_then_exits(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(engine, runner_tasks.record, jobs(40))
    runner = start_runner("--workers", "2", "--concurrency", "4", "--burst")
    assert await runner.wait_exit(60) == 0
    ends = Counter(e.key for e in ledger.entries(tmp_path, "end"))
    assert ends == Counter(range(40))
    assert await count_tasks(engine) == 0
    log = runner.log()
    # Worker logs reach the runner's stderr, although anyio silences the workers' own.
    assert "worker-0[" in log
    assert "worker-1[" in log
    assert "exited (drained)" in log
    assert "Traceback" not in log


async def test_burst_waits_for_retries_that_are_due_at_once(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # The failure is written by the completer after the task leaves its slot: a burst runner
    # that looked only at running tasks and the queue could exit before the retry was due.
    await put(engine, runner_tasks.fail_once_now, jobs(20))
    runner = start_runner("--workers", "1", "--concurrency", "20", "--burst")
    assert await runner.wait_exit(60) == 0
    ends = Counter(e.key for e in ledger.entries(tmp_path, "end"))
    assert ends == Counter(range(20))
    assert await count_tasks(engine) == 0


async def test_peak_concurrency_is_workers_times_concurrency(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "2", "--concurrency", "5")
    await runner.started(2)
    await put(engine, runner_tasks.record, jobs(50, sleep=0.5))
    entries = await ledger.wait_for_entries(tmp_path, "end", 50, timeout=60)
    assert ledger.peak_concurrency(ledger.entries(tmp_path)) == 10
    assert Counter(e.key for e in entries) == Counter(range(50))


async def test_two_runners_double_the_concurrency(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    first = start_runner("--workers", "2", "--concurrency", "5")
    second = start_runner("--workers", "2", "--concurrency", "5")
    await first.started(2)
    await second.started(2)
    await put(engine, runner_tasks.record, jobs(60, sleep=1.0))
    await ledger.wait_for_entries(tmp_path, "end", 60, timeout=60)
    assert ledger.peak_concurrency(ledger.entries(tmp_path)) == 20


async def test_timeout_cancels_the_task(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(engine, runner_tasks.too_slow, jobs(1))
    await put(engine, runner_tasks.swallows_cancel, jobs(1, first=1))
    await put(engine, runner_tasks.record, jobs(1, sleep=30, first=2))
    runner = start_runner("--workers", "1", "--task-timeout", "1", "--retry-delay", "60")
    await runner.wait_for_log(r"attempt 1 failed: TimeoutError", count=3, timeout=60)
    # @task(timeout=0.5) beats --task-timeout 1; the global one applies to `record`.
    assert "exceeded its 0.5 s limit" in runner.log()
    assert "exceeded its 1 s limit" in runner.log()
    await wait_for_tasks(
        engine, at_least=3, where="attempts = 1 AND locked_until IS NULL", timeout=10
    )
    for key in (0, 1, 2):
        failed = await row(engine, f"(payload->>'key')::int = {key}")
        assert failed.last_error.startswith("TimeoutError")
        assert failed.failed_at is None  # it will be retried, after the delay
    ends = {e.key for e in ledger.entries(tmp_path, "end")}
    assert ends == {1}  # only the task that swallowed its cancellation went on to its end


async def test_retry_delay_spaces_the_attempts_and_max_attempts_parks(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(engine, runner_tasks.always_fail, jobs(1))  # @task(retry_delay=0.2, max_attempts=3)
    await put(engine, runner_tasks.fail_once, jobs(1, first=1))  # @task(retry_delay=0.5)
    runner = start_runner("--workers", "1", "--retry-delay", "5")
    await runner.wait_for_log("failed and is parked", timeout=60)
    await ledger.wait_for_entries(tmp_path, "end", 1, timeout=60)
    starts = [e.at for e in ledger.entries(tmp_path, "start") if e.key == 0]
    assert len(starts) == 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(0.2 <= gap < 5 for gap in gaps), gaps
    parked = await row(engine, "(payload->>'key')::int = 0")
    assert parked.attempts == 3
    assert parked.failed_at is not None
    assert parked.locked_until is None
    assert parked.last_error.startswith("ValueError: job 0 is broken")
    assert "Traceback" in parked.last_error
    assert "runner_tasks.py" in parked.last_error
    retried = [e.at for e in ledger.entries(tmp_path) if e.key == 1]
    assert len(retried) == 3  # start (fails), start, end
    assert retried[1] - retried[0] >= 0.5
    # Only the parked one is left, once the retried task's ack follows its last ledger line.
    await wait_for_tasks(engine, exactly=1, timeout=10)


async def test_global_retry_delay_applies_without_a_task_one(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(engine, runner_tasks.fail_once_default, jobs(1))
    runner = start_runner("--workers", "1", "--retry-delay", "1.5")
    await ledger.wait_for_entries(tmp_path, "end", 1, timeout=60)
    starts = [e.at for e in ledger.entries(tmp_path, "start")]
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 1.5
    assert "due again in 1.5 s" in runner.log()


async def in_idle_wait(engine: AsyncEngine, *, listening: bool = False) -> None:
    """Wait until the worker's claim found nothing (its connection idle after a claim), and,
    if `listening`, its listener has run its LISTENs: from then on it waits to be woken."""
    sessions = [("claim", "%SKIP LOCKED%")] + ([("listener", "LISTEN %")] if listening else [])

    async def ready() -> list[str]:
        found = []
        async with engine.connect() as conn:
            for role, last_query in sessions:
                query = text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE :name"
                    " AND state = 'idle' AND query LIKE :last_query"
                )
                params = {"name": f"sqlatasks {role} %", "last_query": last_query}
                if (await conn.execute(query, params)).scalar_one():
                    found.append(role)
        return found

    await eventually(ready, lambda found: len(found) == len(sessions), what="an idle worker")


async def test_idle_sleep_bounds_pickup_without_notify(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", "--no-notify", "--idle-sleep", "1")
    await runner.started(1)
    await in_idle_wait(engine)
    for key in range(3):
        enqueued = now()
        await put(engine, runner_tasks.record, jobs(1, first=key))
        (start,) = [
            e for e in await ledger.wait_for_entries(tmp_path, "start", key + 1) if e.key == key
        ]
        assert start.at - enqueued < 1 + 1.0  # the idle sleep, plus generous slack
        await anyio.sleep(0.3 * key)


async def test_notify_wakes_an_idle_worker_long_before_its_idle_sleep(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", "--idle-sleep", "60")
    await runner.started(1)
    await in_idle_wait(engine, listening=True)
    enqueued = now()
    await put(engine, runner_tasks.record, jobs(1))
    (start,) = await ledger.wait_for_entries(tmp_path, "start", 1, timeout=30)
    assert start.at - enqueued < 10


async def test_a_dead_worker_is_replaced_at_once_not_at_the_next_check(
    engine: AsyncEngine, start_runner: Runners
) -> None:
    # A dead worker's call ends as it dies: its restart waits for no check (30 s apart here).
    runner = start_runner("--workers", "1", "--check-interval", "30", "--lease", "300")
    (pid,) = await runner.started(1)
    killed_at = now()
    os.kill(pid, signal.SIGKILL)
    pids = await runner.started(2, timeout=20)
    assert pids[1] != pid
    (restarted,) = runner.log_times("restarting worker-0")
    assert restarted - killed_at < 5  # an anti-hang bound, far below the check interval


async def test_check_interval_bounds_the_detection_of_a_hung_worker(
    engine: AsyncEngine, start_runner: Runners
) -> None:
    interval = 1.0
    runner = start_runner("--workers", "1", "--check-interval", str(interval))
    (pid,) = await runner.started(1)
    # A worker is hung once its last beat is two intervals old (the heartbeat timeout); the
    # supervisor notices at its next check, at most one interval later. Beats come every
    # interval / 4; log stamps are truncated to the millisecond: hence the margins.
    low, high = 2 * interval - 0.5, 3 * interval + 0.5
    os.kill(pid, signal.SIGSTOP)  # hung: alive, but it beats no more
    stopped = now()
    await runner.wait_for_log("worker-0 is hung", timeout=high + 10)
    (checked,) = runner.log_times("worker-0 is hung")
    assert low < checked - stopped < high
    (_, pid) = await runner.started(2)
    # Again, half an interval after a check (they come every interval from the one just
    # seen): its last beat turns two intervals old mid-way between checks, so the next check
    # must catch it 2.5 intervals after the stop. A slower check loop is late whatever phase
    # it had, and the margin no longer hides it.
    ahead = interval * math.ceil((now() - checked + 0.1) / interval)
    await anyio.sleep(checked + ahead + interval / 2 - now())  # a phase, not an event
    os.kill(pid, signal.SIGSTOP)
    stopped = now()
    await runner.wait_for_log("worker-0 is hung", count=2, timeout=high + 10)
    detected = runner.log_times("worker-0 is hung")[1]
    assert low < detected - stopped < 3 * interval
    pids = await runner.started(3)
    assert len(set(pids)) == 3


async def test_sigstopped_worker_is_killed_and_replaced(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", "--check-interval", "0.5", "--retry-delay", "0")
    (pid,) = await runner.started(1)
    await put(engine, runner_tasks.record, jobs(1, sleep=2))
    await ledger.wait_for_entries(tmp_path, "start", 1)
    os.kill(pid, signal.SIGSTOP)
    await runner.wait_for_log("worker-0 is hung", timeout=30)
    pids = await runner.started(2)
    assert pids[1] != pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
    ends = await ledger.wait_for_entries(tmp_path, "end", 1, timeout=30)
    assert ends[0].pid == pids[1]
    assert not alive(pid)


async def test_sigterm_lets_tasks_finish_and_exits_0(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "2", "--concurrency", "2", "--shutdown-timeout", "10")
    await runner.started(2)
    await put(engine, runner_tasks.record, jobs(10, sleep=1.0))
    await ledger.wait_for_entries(tmp_path, "start", 4)
    runner.signal(signal.SIGTERM)
    assert await runner.wait_exit(10 + 10) == 0
    entries = ledger.entries(tmp_path)
    started = {e.key for e in entries if e.event == "start"}
    ended = {e.key for e in entries if e.event == "end"}
    assert started == ended  # every running task finished
    assert await count_tasks(engine) == 10 - len(ended)  # the rest is still queued
    assert await count_tasks(engine, "locked_until IS NOT NULL OR attempts > 0") == 0


async def test_sigterm_releases_what_does_not_finish_in_time(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "1", "--concurrency", "3", "--shutdown-timeout", "1")
    await runner.started(1)
    await put(engine, runner_tasks.record, jobs(3, sleep=60))
    await ledger.wait_for_entries(tmp_path, "start", 3)
    runner.signal(signal.SIGTERM)
    assert await runner.wait_exit(1 + 15) == 0
    assert "released 3 unfinished tasks" in runner.log()
    # Released: due at once, the interrupted attempt not counted, nothing lost.
    assert await count_tasks(engine, "locked_until IS NULL AND attempts = 0") == 3


async def test_second_signal_stops_at_once(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "2", "--concurrency", "2", "--shutdown-timeout", "300")
    await runner.started(2)
    await put(engine, runner_tasks.record, jobs(4, sleep=60))
    await ledger.wait_for_entries(tmp_path, "start", 4)
    runner.signal(signal.SIGINT)
    await runner.wait_for_log("SIGINT: stopping workers")
    runner.signal(signal.SIGTERM)
    assert await runner.wait_exit(30) == 0
    assert await count_tasks(engine, "locked_until IS NULL AND attempts = 0") == 4


async def test_forbidden_rows_are_parked_and_never_imported(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    names = [
        "os:system",
        "tests.forbidden_side_effect:boom",
        "tests.runner_tasks:no_such_task",
        "not a task name",
        "tests.runner_tasks:record",  # registered, but its payload no longer validates
        "tests.lazypkg.tasks:hello",  # not imported yet, but inside an allowed package
    ]
    async with engine.begin() as conn:
        for name in names:
            payload = '{"key": "not a number"}' if name.endswith(":record") else '{"key": 7}'
            await conn.execute(
                text("INSERT INTO sqlatasks_tasks (task_name, payload) VALUES (:n, :p)"),
                {"n": name, "p": payload},
            )
    runner = start_runner(
        "--workers", "1", "--burst", imports=["tests.runner_tasks", "tests.lazypkg"]
    )
    assert await runner.wait_exit(60) == 0
    async with engine.connect() as conn:
        query = text(
            "SELECT task_name, last_error FROM sqlatasks_tasks WHERE failed_at IS NOT NULL"
        )
        parked: dict[str, str] = {name: error for name, error in await conn.execute(query)}
    assert set(parked) == {"os:system", "tests.runner_tasks:record"}
    assert "outside the allowed imports" in parked["os:system"]
    assert "Input should be a valid integer" in parked["tests.runner_tasks:record"]
    # Names no runner here knows wait, never imported, for a runner that knows them
    # (tests/test_robust_unknown_tasks.py).
    unknown = "failed_at IS NULL AND attempts = 0 AND last_error LIKE 'TaskUnknown:%'"
    assert await count_tasks(engine, unknown) == 3
    # No side effect of an import outside the allowed ones; the lazy import did run.
    assert [e.event for e in ledger.entries(tmp_path)] == ["lazy"]


async def test_exactly_once_with_three_runners(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(engine, runner_tasks.record, jobs(10_000))
    runners = [start_runner("--workers", "2", "--concurrency", "20", "--burst") for _ in range(3)]
    for runner in runners:
        assert await runner.wait_exit(240) == 0
    executions = Counter(e.key for e in ledger.entries(tmp_path, "end"))
    assert executions == Counter(range(10_000))  # every task, exactly once
    assert await count_tasks(engine) == 0
    assert len({e.pid for e in ledger.entries(tmp_path)}) >= 2


async def test_queue_flag_serves_only_the_named_queues(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        await enqueue_many(session, runner_tasks.record, jobs(3), queue="mail")
        await enqueue_many(session, runner_tasks.record, jobs(3, first=10), queue="reports")
        await enqueue_many(session, runner_tasks.record, jobs(3, first=20))
    runner = start_runner("--workers", "1", "--queue", "mail", "--queue", "default", "--burst")
    assert await runner.wait_exit(60) == 0
    ran = {e.key for e in ledger.entries(tmp_path, "end")}
    assert ran == {0, 1, 2, 20, 21, 22}
    assert await count_tasks(engine, "queue = 'reports' AND attempts = 0") == 3


async def test_tasks_that_exit_or_fail_oddly_fail_only_themselves(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(engine, runner_tasks.calls_exit, jobs(2))
    await put(engine, runner_tasks.nul_in_error, jobs(2, first=10))
    await put(engine, runner_tasks.record, jobs(5, first=20))
    runner = start_runner("--workers", "1", "--concurrency", "4", "--burst")
    assert await runner.wait_exit(60) == 0
    assert {e.key for e in ledger.entries(tmp_path, "end")} == set(range(20, 25))
    async with engine.connect() as conn:
        query = text("SELECT last_error FROM sqlatasks_tasks")
        errors: list[str] = sorted((await conn.execute(query)).scalars())
    assert len(errors) == 4
    assert [e.partition(":")[0] for e in errors] == ["SystemExit"] * 2 + ["ValueError"] * 2
    assert "\\0" in errors[2]
    log = runner.log()
    assert "crashed" not in log
    assert "died" not in log
    assert log.count("sqlatasks.worker: started") == 1


async def test_workers_of_a_killed_runner_finish_their_tasks_and_exit(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner("--workers", "2", "--concurrency", "2")
    pids = await runner.started(2)
    await put(engine, runner_tasks.record, jobs(4, sleep=1.5))
    await ledger.wait_for_entries(tmp_path, "start", 4)
    runner.process.kill()  # the supervisor alone: its workers are orphans now
    ends = await ledger.wait_for_entries(tmp_path, "end", 4, timeout=30)
    assert {e.key for e in ends} == set(range(4))
    await eventually(
        lambda: [pid for pid in pids if alive(pid)],
        lambda living: not living,
        what="the orphaned workers to exit",
        timeout=30,
    )
    assert await count_tasks(engine) == 0  # their acks were written before they left


async def test_retry_asks_for_a_later_run_without_counting_a_failure(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    await put(engine, runner_tasks.not_yet, jobs(1))
    runner = start_runner("--workers", "1", "--idle-sleep", "0.2")
    first = (await ledger.wait_for_entries(tmp_path, "start", 1))[0]
    # Released, the attempt uncounted, no error recorded.
    await wait_for_tasks(engine, exactly=1, where="locked_until IS NULL AND attempts = 0")
    assert (await row(engine)).last_error is None
    (end,) = await ledger.wait_for_entries(tmp_path, "end", 1, timeout=30)
    assert end.at - first.at >= 0.5
    await wait_for_tasks(engine, exactly=0, timeout=10)
    assert "failed" not in runner.log()


async def test_cancel_interrupts_a_running_task_and_deletes_it(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    # Two runners with one slot each: the cancel reaches whichever runs the task, by NOTIFY.
    runners = [start_runner("--workers", "1", "--concurrency", "1") for _ in range(2)]
    for runner in runners:
        await runner.started(1)
    await put(engine, runner_tasks.record, jobs(2, sleep=60))
    await ledger.wait_for_entries(tmp_path, "start", 2)
    assert len({e.pid for e in ledger.entries(tmp_path)}) == 2  # one task in each runner
    target = (await row(engine, "(payload->>'key')::int = 0")).id
    async with async_sessionmaker(engine)() as session, session.begin():
        assert await operations.cancel(session, target) == "cancelling"
    await wait_for_tasks(engine, exactly=0, where=f"id = {target}", timeout=10)
    # The cancel deleted the row on commit; its worker hears the NOTIFY and stops the run.
    interrupted = f"task {target} tests.runner_tasks:record cancelled while running"
    await eventually(
        lambda: "".join(runner.log() for runner in runners),
        lambda logs: interrupted in logs,
        what="the worker running it to interrupt it",
        timeout=30,
    )
    assert await count_tasks(engine, "locked_until > now()") == 1  # the other one runs on
    assert not [e for e in ledger.entries(tmp_path, "end")]


async def test_cancel_racing_the_claim_loses_nothing_and_leaves_nothing(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runners = [start_runner("--workers", "1", "--concurrency", "4") for _ in range(2)]
    for runner in runners:
        await runner.started(1)
    await put(engine, runner_tasks.record, jobs(60, sleep=0.3))
    async with engine.connect() as conn:
        query = text("SELECT id, (payload->>'key')::int FROM sqlatasks_tasks ORDER BY id")
        keys: dict[int, int] = {id_: key for id_, key in await conn.execute(query)}
    results: dict[int, str] = {}
    for task_id in list(keys)[::2]:  # cancel every other task while the workers claim them
        async with async_sessionmaker(engine)() as session, session.begin():
            results[keys[task_id]] = await operations.cancel(session, task_id)
    # Every task ends: run, deleted, or interrupted and deleted.
    await wait_for_tasks(engine, exactly=0, timeout=60)
    started = {e.key for e in ledger.entries(tmp_path, "start")}
    ends = {e.key for e in ledger.entries(tmp_path, "end")}
    assert set(range(1, 60, 2)) <= ends  # nothing that was not cancelled was lost
    deleted = {key for key, said in results.items() if said == "deleted"}
    assert deleted, results  # some cancels beat the claim (60 tasks, 8 slots, 0.3 s each)
    assert not deleted & started  # a task deleted while queued never ran
    missing = {key for key, said in results.items() if said == "missing"}
    assert missing <= ends  # only a task that had run to its end was gone already
    assert all("Traceback" not in runner.log() for runner in runners)
