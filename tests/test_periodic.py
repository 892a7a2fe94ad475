"""Periodic tasks: validation at import, slot arithmetic, the scheduler against a real
PostgreSQL, and real runner processes racing for one slot and catching up after downtime."""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sqlatasks import (
    PayloadError,
    Schedule,
    ScheduleError,
    TaskDefinitionError,
    periodic,
    registry,
    scheduler,
    task,
)
from sqlatasks.sql import periodic as sql_periodic
from tests import ledger, periodic_tasks
from tests.eventually import eventually
from tests.processes import Runner, Runners

YEARLY = periodic_tasks.YEARLY
BEAT = periodic_tasks.beat.name


class Defaults(BaseModel):
    n: int = 5


class Required(BaseModel):
    n: int
    label: str = "x"


@task(name="tests.test_periodic:counted")
async def counted(data: Defaults) -> None:
    pass


@task(name="tests.test_periodic:needs_input")
async def needs_input(data: Required) -> None:
    pass


# --- validation, at import ---


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 * * * *", "not a valid expression"),
        ("* * * *", "must have five fields"),
        ("0 * * * * *", "must have five fields"),  # six fields (seconds) are not cron here
        ("0 0 30 2 *", "not a valid expression"),  # 30 February never comes
        ("every five minutes", "must have five fields"),
    ],
)
def test_a_bad_cron_expression_fails_at_import(cron: str, message: str) -> None:
    with pytest.raises(TaskDefinitionError, match=message):

        @task(name="tests.test_periodic:bad_cron", cron=cron)
        async def bad_cron(data: Defaults) -> None:
            pass

    with pytest.raises(ScheduleError, match=message):
        periodic(counted, cron=cron)


def test_a_cron_task_needs_a_payload_with_defaults() -> None:
    with pytest.raises(TaskDefinitionError, match=r"fields without one \(n\).*periodic\("):

        @task(name="tests.test_periodic:cron_required", cron="*/5 * * * *")
        async def cron_required(data: Required) -> None:
            pass


def test_periodic_without_payload_needs_defaults_and_checks_a_given_one() -> None:
    with pytest.raises(ScheduleError, match="pass payload="):
        periodic(needs_input, cron="*/5 * * * *")
    with pytest.raises(PayloadError):
        periodic(needs_input, cron="*/5 * * * *", payload={"label": "no n"})
    with pytest.raises(PayloadError, match="expected Required"):
        periodic(needs_input, cron="*/5 * * * *", payload=Defaults())  # type: ignore[misc]
    with pytest.raises(TypeError, match="takes a @task"):
        periodic(lambda data: None, cron="*/5 * * * *")  # type: ignore[arg-type]


def test_periodic_registers_the_payload_and_refuses_a_taken_name() -> None:
    made = periodic(needs_input, cron="15 3 * * *", payload=Required(n=3), name="nightly-3")
    assert made.payload == '{"n":3,"label":"x"}'
    assert made.task is needs_input
    assert made in registry.all_schedules()
    assert periodic(needs_input, cron="15 3 * * *", payload={"n": 3}, name="nightly-3") == made
    with pytest.raises(ScheduleError, match="another schedule has this name"):
        periodic(needs_input, cron="15 3 * * *", payload=Required(n=4), name="nightly-3")
    with pytest.raises(ScheduleError, match="another schedule has this name"):
        periodic(needs_input, cron="15 4 * * *", payload=Required(n=3), name="nightly-3")


def test_a_cron_task_is_scheduled_with_its_defaults() -> None:
    found = [s for s in registry.all_schedules() if s.name == BEAT]
    assert len(found) == 1
    assert (found[0].cron, found[0].payload) == (YEARLY, '{"key":1}')


def test_slots_are_utc_and_the_latest_includes_now() -> None:
    every5 = Schedule("s", counted, "*/5 * * * *", "{}")
    at = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
    assert every5.latest_slot(at) == at
    assert every5.next_slot(at) == at + timedelta(minutes=5)
    just_before = at - timedelta(microseconds=1)
    assert every5.latest_slot(just_before) == at - timedelta(minutes=5)
    assert every5.next_slot(just_before) == at
    elsewhere = datetime(2026, 3, 1, 12, 7, tzinfo=UTC).astimezone(timezone_plus_2())
    assert every5.latest_slot(elsewhere) == datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    nightly = Schedule("n", counted, "30 2 * * *", "{}")
    assert nightly.latest_slot(at) == datetime(2026, 3, 1, 2, 30, tzinfo=UTC)
    assert nightly.next_slot(at) == datetime(2026, 3, 2, 2, 30, tzinfo=UTC)


def timezone_plus_2() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=2))


# --- the scheduler's tick against a real PostgreSQL ---


def yearly(name: str = "yearly", payload: str = '{"n":9}') -> Schedule:
    return Schedule(name, counted, YEARLY, payload)


async def row(conn: AsyncConnection, name: str) -> Any:
    query = text("SELECT cron, last_slot FROM sqlatasks_periodic WHERE name = :name")
    return (await conn.execute(query, {"name": name})).first()


async def queued(conn: AsyncConnection) -> list[Any]:
    query = text("SELECT task_name, payload::text FROM sqlatasks_tasks ORDER BY id")
    return list((await conn.execute(query)).all())


async def back_date(conn: AsyncConnection, name: str, years: int) -> None:
    query = text(
        "UPDATE sqlatasks_periodic SET last_slot = last_slot - make_interval(years => :years)"
        " WHERE name = :name"
    )
    await conn.execute(query, {"name": name, "years": years})


async def this_years_slot(conn: AsyncConnection) -> datetime:
    query = text("SELECT date_trunc('year', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
    return (await conn.execute(query)).scalar_one()  # type: ignore[no-any-return]


async def test_a_new_schedule_is_seated_without_firing(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        wait = await scheduler.tick(conn, [yearly()], check_interval=3.0)
        assert (await row(conn, "yearly")) == (YEARLY, await this_years_slot(conn))
        assert await queued(conn) == []
    assert wait == 3.0  # the next slot is months away: the check interval bounds the sleep


async def test_downtime_fires_the_latest_slot_once_not_a_burst(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await scheduler.tick(conn, [yearly()], check_interval=1.0)
        await back_date(conn, "yearly", years=5)  # five slots missed
        await conn.commit()
        await scheduler.tick(conn, [yearly()], check_interval=1.0)
        await scheduler.tick(conn, [yearly()], check_interval=1.0)
        assert await queued(conn) == [(counted.name, '{"n": 9}')]
        assert (await row(conn, "yearly")).last_slot == await this_years_slot(conn)


async def test_a_changed_cron_is_seated_anew_without_firing(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await scheduler.tick(conn, [yearly()], check_interval=1.0)
        await back_date(conn, "yearly", years=2)
        await conn.commit()
        monthly = Schedule("yearly", counted, "0 0 1 * *", "{}")
        await scheduler.tick(conn, [monthly], check_interval=1.0)
        now = (await conn.execute(text("SELECT now()"))).scalar_one()
        assert (await row(conn, "yearly")) == ("0 0 1 * *", monthly.latest_slot(now))
        assert await queued(conn) == []


async def test_racing_firers_enqueue_one_task_per_slot(engine: AsyncEngine) -> None:
    """The loser of the row lock re-checks last_slot against the winner's commit."""
    schedule = yearly()
    async with engine.connect() as setup:
        await scheduler.tick(setup, [schedule], check_interval=1.0)
        await back_date(setup, "yearly", years=1)
        await setup.commit()
        slot = await this_years_slot(setup)

    async def fire(conn: AsyncConnection) -> int | None:
        return await sql_periodic.periodic_fire(
            conn,
            name="yearly",
            cron=YEARLY,
            slot=slot,
            task_name=counted.name,
            payload="{}",
            queue="default",
            priority=0,
            max_attempts=None,
        )

    results: dict[str, int | None] = {}
    async with engine.connect() as first, engine.connect() as second:
        pid = (await second.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await second.commit()
        results["first"] = await fire(first)  # holds the row lock until it commits

        async def fire_second() -> None:
            results["second"] = await fire(second)
            await second.commit()

        async with anyio.create_task_group() as group:
            group.start_soon(fire_second)
            await eventually(
                lambda: waits_on_a_lock(engine, pid),
                what="the second firer to wait on the row lock",
                timeout=30,
            )
            await first.commit()
    assert isinstance(results["first"], int)
    assert results["second"] is None
    async with engine.connect() as conn:
        assert len(await queued(conn)) == 1


async def waits_on_a_lock(engine: AsyncEngine, pid: int) -> bool:
    async with engine.connect() as conn:
        query = text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")
        return (await conn.execute(query, {"pid": pid})).scalar_one_or_none() == "Lock"


# --- real runners ---


def start(start_runner: Runners, workers: int = 2) -> Runner:
    return start_runner(
        "--workers", str(workers), "--log-level", "DEBUG", imports=["tests.periodic_tasks"]
    )


async def wait_seated(engine: AsyncEngine, names: list[str]) -> None:
    query = text("SELECT count(*) FROM sqlatasks_periodic WHERE name = ANY(:names)")

    async def seated() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(query, {"names": names})).scalar_one())

    await eventually(seated, lambda count: count == len(names), what=f"schedules {names} seated")


async def ticks_later(runner: Runner, ticks: int = 2) -> None:
    """Wait until `runner`'s scheduler has checked its schedules `ticks` more times."""
    pattern = r"sqlatasks\.scheduler: checked \d+ schedules"
    seen = len(re.findall(pattern, runner.log()))
    await runner.wait_for_log(pattern, seen + ticks, timeout=60)


@pytest.mark.slow
async def test_two_runners_fire_one_slot_once_then_catch_up_once(
    engine: AsyncEngine, tmp_path: Path, start_runner: Runners
) -> None:
    one = start(start_runner)
    two = start(start_runner)
    for runner in (one, two):
        await runner.started(2)
        # one scheduler per runner, in worker 0
        await runner.wait_for_log(r"worker-0\[\d+\] sqlatasks\.scheduler: scheduling")
        assert not re.search(r"worker-1\[\d+\] sqlatasks\.scheduler", runner.log())
    await wait_seated(engine, [BEAT, periodic_tasks.RECORD_SCHEDULE])
    assert ledger.entries(tmp_path) == []  # seen for the first time: nothing fired

    # Make both schedulers attempt the same slot at once: hold inserts into the queue table,
    # then back-date the slot; each scheduler's fire statement waits on the lock.
    async with engine.connect() as gate:
        await gate.execute(text("LOCK TABLE sqlatasks_tasks IN EXCLUSIVE MODE"))
        async with engine.begin() as conn:
            await back_date(conn, BEAT, years=1)
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND application_name LIKE 'sqlatasks scheduler %'"
        )

        async def schedulers_waiting() -> int:
            async with engine.connect() as conn:
                return int((await conn.execute(waiting)).scalar_one())

        await eventually(
            schedulers_waiting,
            lambda count: count == 2,
            what="both schedulers waiting on the lock",
        )
        await gate.rollback()

    beats = await ledger.wait_for_entries(tmp_path, "beat", 1)
    logs = ""
    for runner in (one, two):
        await ticks_later(runner)
        logs += runner.log()
    assert len(re.findall(rf"schedule {re.escape(BEAT)} fired slot", logs)) == 1
    assert len(re.findall(rf"schedule {re.escape(BEAT)} slot .* was fired by another", logs)) == 1
    assert ledger.entries(tmp_path, "beat") == beats

    # Both runners down; five slots of each schedule pass (back-dated); one runner comes back.
    for runner in (one, two):
        runner.signal(signal.SIGTERM)
        assert await runner.wait_exit() == 0
    async with engine.begin() as conn:
        await back_date(conn, BEAT, years=5)
        await back_date(conn, periodic_tasks.RECORD_SCHEDULE, years=5)
    back = start(start_runner, workers=1)
    await ledger.wait_for_entries(tmp_path, "beat", 2)
    await ledger.wait_for_entries(tmp_path, "end", 1)
    await ticks_later(back)
    assert ledger.keys(ledger.entries(tmp_path, "beat")) == [1, 1]  # one before, one catch-up
    assert ledger.keys(ledger.entries(tmp_path, "end")) == [77]  # periodic()'s payload
    async with engine.connect() as conn:
        slot = await this_years_slot(conn)
        slots = text("SELECT name, last_slot FROM sqlatasks_periodic ORDER BY name")
        assert sorted((await conn.execute(slots)).all()) == sorted(
            [(BEAT, slot), (periodic_tasks.RECORD_SCHEDULE, slot)]
        )
