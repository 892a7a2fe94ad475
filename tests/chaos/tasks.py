"""Tasks the chaos tests and the soak run. Each execution writes its evidence to the ledger
(tests/ledger.py), outside the queue: row id, test key, attempt, lease token, pid, start and
end."""

from __future__ import annotations

import asyncio
import os
import time

import anyio
from pydantic import BaseModel

from sqlatasks import current_task, task
from tests import ledger
from tests.chaos.invariants import FaultLog


class Work(BaseModel):
    key: int
    sleep: float = 0.0


def record(event: str, data: Work, outcome: str = "") -> None:
    run = current_task()
    ledger.write(
        event,
        data.key,
        id=run.id,
        task=run.task_name,
        attempt=run.attempt,
        max_attempts=run.max_attempts,
        token=str(run.lease_token),
        outcome=outcome,
    )


async def _run(data: Work) -> None:
    record("start", data)
    try:
        await anyio.sleep(data.sleep)
    except BaseException:
        record("end", data, "cancelled")
        raise
    record("end", data, "ok")


@task(retry_delay=0.2)
async def work(data: Work) -> None:
    """Sleeps `data.sleep` seconds, then succeeds."""
    await _run(data)


@task(retry_delay=0.2)
async def fails_once(data: Work) -> None:
    """Raises on its first attempt, succeeds on the next."""
    if current_task().attempt == 1:
        record("start", data)
        record("end", data, "raised")
        raise RuntimeError(f"first attempt of {data.key} fails")
    await _run(data)


@task(retry_delay=0.2, max_attempts=3)
async def always_fails(data: Work) -> None:
    record("start", data)
    record("end", data, "raised")
    raise ValueError(f"task {data.key} is broken")


@task(retry_delay=0.2, max_attempts=3)
async def raises_a_cancellation(data: Work) -> None:
    """Raises a cancellation that no scope of ours issued: it fails this attempt only, never
    the worker, and parks at its 3rd attempt."""
    record("start", data)
    record("end", data, "raised")
    raise asyncio.CancelledError(f"task {data.key} cancels itself")


@task(timeout=0.5, retry_delay=0.2, max_attempts=2)
async def times_out(data: Work) -> None:
    """Runs past its time limit every time: cancelled, retried once, parked."""
    await _run(Work(key=data.key, sleep=30))


@task(timeout=0.5, retry_delay=0.2, max_attempts=2)
async def swallows_cancellation(data: Work) -> None:
    """Ignores its cancellation once and returns late: still a timeout, retried, parked."""
    record("start", data)
    try:  # noqa: SIM105
        await anyio.sleep(2)
    except BaseException:
        pass
    record("end", data, "cancelled")


@task(timeout=0.5, retry_delay=0, max_attempts=1)
async def ignores_cancellation(data: Work) -> None:
    record("start", data)
    while True:
        try:
            await anyio.sleep(10)
        except BaseException:
            continue


@task(timeout=1, retry_delay=0, max_attempts=2)
async def blocks_the_loop(data: Work) -> None:
    record("start", data)
    time.sleep(60)  # noqa: ASYNC251 (the point: a sync call stops the event loop)


@task(retry_delay=0, max_attempts=2)
async def exits(data: Work) -> None:
    record("start", data)
    record("end", data, "exit")
    # Everything else running in this process dies with it: that is a fault, not a duplicate.
    FaultLog(ledger.folder()).record("task called os._exit", [os.getpid()])
    os._exit(7)


@task(retry_delay=0.2)
async def cuts_its_ack(data: Work) -> None:
    """Terminates its own worker's completer connection just before returning, so the ack is
    written on a dead connection: a transient failure of the ack write itself."""
    import asyncpg

    from sqlatasks.listener import asyncpg_dsn

    record("start", data)
    conn = await asyncpg.connect(asyncpg_dsn(os.environ["SQLATASKS_DATABASE_URL"]))
    try:
        cut = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid))"
            " FROM pg_stat_activity a, sqlatasks_tasks t"
            " WHERE t.id = $1 AND a.application_name = 'sqlatasks completer ' || t.locked_by",
            current_task().id,
        )
    finally:
        await conn.close()
    if cut:
        FaultLog(ledger.folder()).record("terminate completer connection at ack")
    record("end", data, "ok")
