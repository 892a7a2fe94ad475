"""Flow control without a runner: the claim's keys and queue settings against a real
PostgreSQL, cron in time zones across DST, giving up, retry filters, enqueue by name."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

import sqlatasks
from sqlatasks import (
    attempts,
    commands,
    cron,
    enqueue,
    errors,
    operations,
    rows,
    testing,
)
from sqlatasks import outcomes as outcome_types
from sqlatasks.sql import claim
from tests import flow_tasks
from tests.flow_tasks import Job, hold, hold_two


async def _claim(
    conn: AsyncConnection,
    limit: int = 10,
    *,
    limited: str | None = None,
    queues: tuple[str, ...] = (),
) -> list[rows.ClaimedTask]:
    return await claim.task_claim(
        conn,
        queues=queues,
        limited=limited,
        limit=limit,
        lease_seconds=60,
        worker_id="test",
        token=uuid.uuid4(),
    )


async def _add(engine: AsyncEngine, *rows_: sqlatasks.QueuedTask) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        session.add_all(rows_)


def _payloads(claimed: list[rows.ClaimedTask]) -> list[tuple[int, str]]:
    jobs = [Job.model_validate_json(c.payload) for c in claimed]
    return sorted((job.key, job.group) for job in jobs)


async def _free(engine: AsyncEngine, claimed: list[rows.ClaimedTask]) -> None:
    """End the claimed tasks' runs, as an ack would."""
    async with engine.begin() as conn:
        ids = [c.id for c in claimed]
        await conn.execute(text("DELETE FROM sqlatasks_tasks WHERE id = ANY(:ids)"), {"ids": ids})


# -- concurrency keys ------------------------------------------------------------------------


async def test_a_key_runs_one_task_at_a_time_in_claim_order(engine: AsyncEngine) -> None:
    await _add(
        engine,
        *(enqueue(hold, Job(key=k, group="a"), concurrency_key="a") for k in (1, 2, 3)),
        enqueue(hold, Job(key=0, group="a"), concurrency_key="a", priority=5),  # first
        *(enqueue(hold, Job(key=k, group="b"), concurrency_key="b") for k in (4, 5)),
        *(enqueue(hold, Job(key=k)) for k in (6, 7)),
    )
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        first = await _claim(conn)
        assert _payloads(first) == [(0, "a"), (4, "b"), (6, ""), (7, "")]
        assert await _claim(conn) == []  # both keys are running: nothing else is due
        await _free(engine, [c for c in first if c.payload.find('"a"') > 0])
        assert _payloads(await _claim(conn)) == [(1, "a")]  # the next of "a", in order


async def test_a_key_limit_of_two_admits_two_in_one_claim(engine: AsyncEngine) -> None:
    await _add(engine, *(enqueue(hold_two, Job(key=k), concurrency_key="c") for k in range(5)))
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        assert _payloads(await _claim(conn)) == [(0, ""), (1, "")]
        assert await _claim(conn) == []


async def test_a_full_key_at_the_head_blocks_no_other_task(engine: AsyncEngine) -> None:
    hot = [
        enqueue(hold, Job(key=k, group="hot"), concurrency_key="hot", priority=9) for k in range(50)
    ]
    await _add(engine, *hot, *(enqueue(hold, Job(key=100 + k)) for k in range(3)))
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        assert _payloads(await _claim(conn, limit=2)) == [(0, "hot"), (100, "")]
        # 49 rows of the running key come first in claim order: skipped, not waited on.
        assert _payloads(await _claim(conn, limit=2)) == [(101, ""), (102, "")]


async def test_a_key_being_claimed_elsewhere_is_skipped_and_then_seen_full(
    engine: AsyncEngine,
) -> None:
    # One key in two queues: the second claimer never meets the first one's row, so only the
    # key's lock tells it that the key is being taken (the lease is not committed yet).
    await _add(
        engine,
        enqueue(hold, Job(key=1, group="a"), concurrency_key="a", queue="one"),
        enqueue(hold, Job(key=2, group="a"), concurrency_key="a", queue="two"),
        enqueue(hold, Job(key=3, group="b"), concurrency_key="b", queue="two"),
    )
    async with engine.connect() as first, engine.connect() as second:
        await second.execution_options(isolation_level="AUTOCOMMIT")
        await first.begin()
        assert _payloads(await _claim(first, queues=("one",))) == [(1, "a")]  # uncommitted
        # The first claimer holds "a" until it commits: the second takes only "b".
        assert _payloads(await _claim(second, queues=("two",))) == [(3, "b")]
        await first.commit()
        assert await _claim(second, queues=("two",)) == []  # "a" is running now


async def test_unkeyed_claim_keeps_its_plan(session: AsyncSession) -> None:
    plan = await claim.task_claim_plan(await session.connection(), queues=())
    assert "Index Scan using sqlatasks_tasks_claim_idx" in plan, plan
    assert "Sort" not in plan, plan
    assert "Seq Scan" not in plan, plan


def test_a_key_must_be_a_non_empty_string() -> None:
    for bad in ("", "a\x00b", 42):
        with pytest.raises(errors.InvalidOption, match="concurrency_key"):
            enqueue(hold, Job(key=1), concurrency_key=bad)  # type: ignore[arg-type]
    with pytest.raises(errors.TaskDefinitionError, match="concurrency_limit"):
        sqlatasks.task(concurrency_limit=0)(flow_tasks.hold.function)


# -- queue settings: pause, max_running, per_second -------------------------------------------


async def _set(engine: AsyncEngine, **change: object) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        if "paused" in change:
            pause = operations.pause_queue if change["paused"] else operations.resume_queue
            await pause(session, "flow")
        else:
            await operations.set_queue_limits(session, "flow", **change)  # type: ignore[arg-type]


async def test_a_paused_queue_starts_nothing_until_resumed(engine: AsyncEngine) -> None:
    await _add(engine, *(enqueue(hold, Job(key=k)) for k in range(3)))
    await _set(engine, paused=True)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        assert await _claim(conn, limited="flow") == []
        await _set(engine, paused=False)
        assert len(await _claim(conn, limited="flow")) == 3
        async with async_sessionmaker(engine)() as session:
            assert await operations.queue_settings(session) == []  # nothing left to say


async def test_max_running_counts_every_claimer(engine: AsyncEngine) -> None:
    await _add(engine, *(enqueue(hold, Job(key=k)) for k in range(5)))
    await _set(engine, max_running=2)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        first = await _claim(conn, limited="flow")
        assert len(first) == 2
        assert await _claim(conn, limited="flow") == []
        await _free(engine, first[:1])
        assert len(await _claim(conn, limited="flow")) == 1


async def test_per_second_spaces_the_starts(engine: AsyncEngine) -> None:
    await _add(engine, *(enqueue(hold, Job(key=k)) for k in range(5)))
    await _set(engine, per_second=0.01)  # one start per 100 s
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        assert len(await _claim(conn, limited="flow")) == 1
        assert await _claim(conn, limited="flow") == []
        await conn.execute(text("UPDATE sqlatasks_queues SET next_start = now()"))
        assert len(await _claim(conn, limited="flow")) == 1
    async with async_sessionmaker(engine)() as session:
        (settings,) = await operations.queue_settings(session)
        assert settings == rows.QueueSettings("flow", False, None, 0.01)


async def test_limits_are_checked(session: AsyncSession) -> None:
    with pytest.raises(errors.InvalidOption, match="max_running"):
        await operations.set_queue_limits(session, "flow", max_running=-1)
    with pytest.raises(errors.InvalidOption, match="per_second"):
        await operations.set_queue_limits(session, "flow", per_second=0)


# -- give up, retry filters --------------------------------------------------------------------


def test_give_up_and_the_filters_park_at_once() -> None:
    policy = attempts.RetryPolicy(retry_delay=1, retry_on=(ConnectionError,))
    assert attempts.after_failure(policy, 1, None, 10, flow_tasks.Unreachable) == 1
    assert attempts.after_failure(policy, 1, None, 10, ValueError) is None
    assert attempts.after_failure(policy, 1, None, 10, errors.GiveUp) is None
    assert attempts.after_failure(policy, 1, None, 10, None) == 1  # a lost worker: retried
    both = attempts.RetryPolicy(retry_on=(OSError,), no_retry_on=(ConnectionError,))
    assert attempts.after_failure(both, 1, None, 10, OSError) == 10
    assert attempts.after_failure(both, 1, None, 10, flow_tasks.Unreachable) is None
    plain = attempts.RetryPolicy()
    assert attempts.after_failure(plain, 1, 3, 10, errors.GiveUp) is None
    assert attempts.after_failure(plain, 1, 3, 10, ValueError) == 10


async def test_a_task_parks_after_one_attempt_by_its_filters(session: AsyncSession) -> None:
    cases: list[tuple[sqlatasks.Task[Job], str, bool]] = [
        (flow_tasks.give_up, "", True),
        (flow_tasks.retried_on_connection_errors, "connection", False),
        (flow_tasks.retried_on_connection_errors, "", True),
        (flow_tasks.not_retried_on_key_errors, "key", True),
        (flow_tasks.not_retried_on_key_errors, "", False),
    ]
    for fn, group, parked in cases:
        session.add(enqueue(fn, Job(key=1, group=group)))
        # retry_delay=0: a retried task is due again at once, and runs again in the same call.
        outcomes = await testing.run_pending(session, max_rounds=2)
        assert [type(o) for o in outcomes] == [outcome_types.Failed] * (1 if parked else 2), fn
        last = outcomes[-1]
        assert isinstance(last, outcome_types.Failed), fn
        assert (last.retry_in is None) is parked, fn
        await session.execute(text("DELETE FROM sqlatasks_tasks"))


# -- cron in a time zone, across DST ----------------------------------------------------------

PARIS = "Europe/Paris"


def _utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_a_skipped_hour_fires_at_the_first_minute_after_it() -> None:
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:00 never happens that day.
    assert cron.next_slot("0 2 * * *", _utc(2026, 3, 28, 12), PARIS) == _utc(2026, 3, 29, 1)
    assert cron.next_slot("0 2 * * *", _utc(2026, 3, 29, 1), PARIS) == _utc(2026, 3, 30, 0)
    assert cron.latest_slot("0 2 * * *", _utc(2026, 3, 29, 1, 30), PARIS) == _utc(2026, 3, 29, 1)
    # Before the change, 02:00 Paris is 01:00 UTC; after it, 00:00 UTC.
    assert cron.next_slot("0 2 * * *", _utc(2026, 3, 27, 12), PARIS) == _utc(2026, 3, 28, 1)


def test_a_repeated_hour_fires_once_on_its_first_pass() -> None:
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:00-03:00 happens twice.
    first_pass = _utc(2026, 10, 25, 0)  # 02:00 CEST
    assert cron.next_slot("0 2 * * *", _utc(2026, 10, 24, 12), PARIS) == first_pass
    assert cron.next_slot("0 2 * * *", first_pass, PARIS) == _utc(2026, 10, 26, 1)
    # In the second pass (01:10 UTC = 02:10 CET), the latest slot is still the first pass's
    # 02:30 CEST, and the next is tomorrow's.
    second_pass = _utc(2026, 10, 25, 1, 10)
    assert cron.latest_slot("30 2 * * *", second_pass, PARIS) == _utc(2026, 10, 25, 0, 30)
    assert cron.next_slot("30 2 * * *", second_pass, PARIS) == _utc(2026, 10, 26, 1, 30)


def test_an_expression_without_a_fixed_hour_follows_real_time() -> None:
    slots, at = [], _utc(2026, 10, 24, 23, 59)
    for _ in range(5):
        at = cron.next_slot("0 * * * *", at, PARIS)
        slots.append(at.hour)
    assert slots == [0, 1, 2, 3, 4]  # 02:00 CEST and 02:00 CET both fire, an hour apart


def test_a_schedule_in_a_time_zone() -> None:
    schedule = sqlatasks.periodic(
        flow_tasks.hold, cron="0 2 * * *", payload=Job(key=1), name="flow-paris", timezone=PARIS
    )
    assert schedule.next_slot(_utc(2026, 3, 28, 12)) == _utc(2026, 3, 29, 1)
    with pytest.raises(errors.ScheduleError, match="Mars/Olympus"):
        sqlatasks.periodic(
            flow_tasks.hold, cron="0 2 * * *", payload=Job(key=1), timezone="Mars/Olympus"
        )


# -- enqueue by name ---------------------------------------------------------------------------


async def test_an_unknown_name_is_enqueued_with_a_json_payload(session: AsyncSession) -> None:
    row = enqueue("billing.tasks:charge", {"amount": 5, "lines": [{"sku": "a"}]}, queue="bill")
    session.add(row)
    await session.flush()
    found = await session.execute(
        text("SELECT task_name, payload, queue FROM sqlatasks_tasks WHERE id = :id"),
        {"id": row.id},
    )
    assert found.one() == ("billing.tasks:charge", {"amount": 5, "lines": [{"sku": "a"}]}, "bill")
    outcomes = await testing.run_pending(session)  # this process cannot run it: parked
    assert isinstance(outcomes[0], outcome_types.Failed)
    assert outcomes[0].retry_in is None


def test_enqueue_by_name_refuses_what_no_worker_could_load() -> None:
    with pytest.raises(errors.PayloadError, match="nan"):
        enqueue("billing.tasks:charge", {"amount": float("nan")})
    with pytest.raises(errors.PayloadError, match="mapping"):
        enqueue("billing.tasks:charge", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(errors.TaskNotRegistered, match="module:qualname"):
        enqueue("charge", {})
    # A registered name validates at enqueue, against its model.
    with pytest.raises(errors.PayloadError):
        enqueue(hold.name, {"key": "not a number"})


# -- the command line ---------------------------------------------------------------------------


def test_the_cli_pauses_limits_and_lists_queues(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str) -> int:
        return commands.main(["--database-url", db_url, *args])

    assert run("pause", "exports") == 0
    assert run("limit", "emails", "--max-running", "5", "--per-second", "10") == 0
    capsys.readouterr()
    assert run("queues", "--json") == 0
    assert json.loads(capsys.readouterr().out) == [
        {"queue": "emails", "paused": False, "max_running": 5, "per_second": 10.0},
        {"queue": "exports", "paused": True, "max_running": None, "per_second": None},
    ]
    assert run("resume", "exports") == 0
    assert run("limit", "emails") == 0  # every limit lifted: nothing left to say
    capsys.readouterr()
    assert run("queues", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run("limit", "emails", "--max-running", "-1") == 2
    assert "max_running" in capsys.readouterr().err
