"""Whatever enqueue accepts, the worker loads equal to what was given; the rest is refused at
enqueue with PayloadError naming the field, and the caller's transaction stays usable.

Tasks run through `sqlatasks.testing.run_pending` (the runner's claim, execution and outcome
path) in a rolled-back session; one test runs them under the real runner.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sqlatasks import (
    InvalidOption,
    PayloadError,
    QueuedTask,
    TaskDefinitionError,
    enqueue,
    enqueue_many,
    task,
)
from sqlatasks.tasks import Task
from sqlatasks.testing import Completed, run_pending
from tests import ledger
from tests import payload_tasks as pt
from tests.conftest import count_tasks
from tests.processes import Runners


async def run_one(session: AsyncSession, fn: Task[Any], payload: BaseModel) -> BaseModel:
    """Enqueue `payload`, run it as the runner would, and return what the task received."""
    pt.received.clear()
    session.add(enqueue(fn, payload))
    outcomes = await run_pending(session)
    assert [type(o) for o in outcomes] == [Completed], outcomes
    [loaded] = pt.received
    return loaded


async def refused(session: AsyncSession, fn: Task[Any], payload: Any, field: str) -> str:
    """Enqueue is refused with PayloadError naming `field`; the transaction still works."""
    with pytest.raises(PayloadError) as caught:
        enqueue(fn, payload)
    assert field in caught.value.problem
    await still_usable(session)
    return caught.value.problem


async def still_usable(session: AsyncSession) -> None:
    loaded = await run_one(session, pt.post, pt.Letter(**{"from": "ann", "to": "bob"}))
    assert loaded == pt.Letter(**{"from": "ann", "to": "bob"})


# -- non-finite floats ----------------------------------------------------------------------


async def test_a_non_finite_float_is_refused_at_enqueue(session: AsyncSession) -> None:
    for value in (math.nan, math.inf, -math.inf):
        problem = await refused(session, pt.measure, pt.Reading(ratio=value), "field ratio")
        assert "null" in problem


async def test_a_non_finite_float_inside_a_dict_is_refused(session: AsyncSession) -> None:
    payload = pt.Reading(ratio=1.0, weights={"a": 0.5, "b": math.inf})
    await refused(session, pt.measure, payload, "weights.b")


async def test_a_model_that_writes_nan_as_a_string_gets_its_nan_back(
    session: AsyncSession,
) -> None:
    loaded = await run_one(session, pt.measure_leniently, pt.LenientReading(ratio=math.nan))
    assert isinstance(loaded, pt.LenientReading)
    assert math.isnan(loaded.ratio)


# -- aliases --------------------------------------------------------------------------------


async def test_a_field_with_an_alias_loads_back_equal(session: AsyncSession) -> None:
    given = pt.Letter(**{"from": "ann", "to": "bob"})
    assert await run_one(session, pt.post, given) == given


async def test_an_alias_generator_in_a_nested_model_loads_back_equal(
    session: AsyncSession,
) -> None:
    given = pt.Team(teamName="ops", leadPerson=pt.Person(firstName="Ann", lastName="Lee"))
    assert await run_one(session, pt.greet_team, given) == given
    # a mapping by field names is accepted too, and gives the same payload
    by_name = {"team_name": "ops", "lead_person": {"first_name": "Ann", "last_name": "Lee"}}
    assert await run_one(session, pt.greet_team, by_name) == given  # type: ignore[arg-type]


async def test_a_row_written_under_field_names_still_loads(session: AsyncSession) -> None:
    """Rows enqueued before payloads were written by alias keep running."""
    pt.received.clear()
    session.add(QueuedTask(task_name=pt.post.name, payload='{"sender": "ann", "to": "bob"}'))
    outcomes = await run_pending(session)
    assert [type(o) for o in outcomes] == [Completed], outcomes
    assert pt.received == [pt.Letter(**{"from": "ann", "to": "bob"})]


class Split(BaseModel):
    x: int = Field(validation_alias="a", serialization_alias="b")


class Hidden(BaseModel):
    x: int = Field(exclude=True)


def test_a_model_written_and_read_under_different_keys_is_refused_at_task() -> None:
    async def split(data: Split) -> None: ...

    with pytest.raises(TaskDefinitionError, match="written under 'b' but read from 'a'"):
        task(name="payload_tests.split")(split)


# -- computed and excluded fields -----------------------------------------------------------


async def test_a_computed_field_on_a_model_that_forbids_extra_loads_back(
    session: AsyncSession,
) -> None:
    given = pt.Rectangle(width=2, height=3)
    loaded = await run_one(session, pt.paint, given)
    assert loaded == given
    assert isinstance(loaded, pt.Rectangle)
    assert loaded.area == 6


async def test_a_computed_field_in_a_nested_model_that_forbids_extra_loads_back(
    session: AsyncSession,
) -> None:
    given = pt.Floor(name="ground", room=pt.Rectangle(width=4, height=5))
    assert await run_one(session, pt.furnish, given) == given


async def test_an_excluded_field_holding_a_value_is_refused(session: AsyncSession) -> None:
    await refused(session, pt.upload, pt.Upload(name="a.txt", token="secret"), "field token")
    assert await run_one(session, pt.upload, pt.Upload(name="a.txt")) == pt.Upload(name="a.txt")


def test_a_required_excluded_field_is_refused_at_task() -> None:
    async def hidden(data: Hidden) -> None: ...

    with pytest.raises(TaskDefinitionError, match=r"Hidden\.x is required but excluded"):
        task(name="payload_tests.hidden")(hidden)


# -- subclasses -----------------------------------------------------------------------------


async def test_a_subclass_in_a_field_typed_as_its_base_is_refused(session: AsyncSession) -> None:
    payload = pt.Kennel(guest=pt.Dog(name="rex", breed="collie"))
    problem = await refused(session, pt.board, payload, "field guest")
    assert "a Dog, which loads back as Animal" in problem


async def test_a_subclass_in_a_list_of_its_base_is_refused(session: AsyncSession) -> None:
    payload = pt.Kennel(
        guest=pt.Animal(name="tom"), others=[pt.Animal(name="a"), pt.Dog(name="b", breed="pug")]
    )
    await refused(session, pt.board, payload, "field others[1]")


async def test_a_discriminated_union_loads_back_equal(session: AsyncSession) -> None:
    given = pt.Tank(pets=[pt.Cat(lives=9), pt.Fish(fresh_water=True)])
    assert await run_one(session, pt.feed, given) == given


# -- text PostgreSQL cannot store -----------------------------------------------------------


async def test_a_nul_in_a_string_is_refused_before_the_database(session: AsyncSession) -> None:
    problem = await refused(session, pt.note, pt.Note(text="a\x00b"), "field text")
    assert "NUL" in problem


async def test_a_nul_in_a_dict_key_is_refused(session: AsyncSession) -> None:
    await refused(session, pt.note, pt.Note(labels={"k\x00": "v"}), "field labels")


async def test_text_that_is_not_utf8_is_refused_naming_the_field(session: AsyncSession) -> None:
    await refused(session, pt.note, pt.Note(text="lone \ud800"), "field text")
    await refused(session, pt.note, pt.Note(blob=b"\xff\xfe"), "field blob")


async def test_a_tuple_in_an_untyped_field_is_refused(session: AsyncSession) -> None:
    await refused(session, pt.note, pt.Note(extra=(1, 2)), "field extra")


async def test_a_backslash_u0000_that_is_only_text_is_accepted(session: AsyncSession) -> None:
    given = pt.Note(text="C:\\u0000")
    assert await run_one(session, pt.note, given) == given


async def test_a_nul_in_a_unique_key_is_refused_before_the_database(
    session: AsyncSession,
) -> None:
    with pytest.raises(InvalidOption, match="NUL"):
        enqueue(pt.note, pt.Note(), unique_key="order\x00")
    with pytest.raises(InvalidOption, match="NUL"):
        await enqueue_many(session, pt.note, [pt.Note()], unique_key=lambda p: "k\x00")
    await still_usable(session)


def notes_with_a_nul_in_the_middle() -> Iterator[pt.Note]:
    yield pt.Note(text="first")
    yield pt.Note(text="bad\x00")
    yield pt.Note(text="last")


async def test_enqueue_many_with_a_bad_payload_mid_stream_fails_clearly(
    session: AsyncSession,
) -> None:
    """The COPY path: the generator's bad payload raises PayloadError naming the field and
    saying that the transaction is aborted; once rolled back, nothing of the batch is left."""
    with pytest.raises(PayloadError, match="field text") as caught:
        await enqueue_many(session, pt.note, notes_with_a_nul_in_the_middle())
    assert "payload 2" in " ".join(caught.value.__notes__)
    with pytest.raises(DBAPIError, match="current transaction is aborted"):
        await session.execute(text("SELECT 1"))
    await session.rollback()
    assert await session.scalar(text("SELECT count(*) FROM sqlatasks_tasks")) == 0
    await still_usable(session)


async def test_keyed_enqueue_many_with_a_bad_payload_adds_nothing(session: AsyncSession) -> None:
    with pytest.raises(PayloadError, match="field text"):
        await enqueue_many(
            session, pt.note, notes_with_a_nul_in_the_middle(), unique_key=lambda p: p.text
        )
    await still_usable(session)


# -- the real runner ------------------------------------------------------------------------


@pytest.mark.slow
async def test_the_runner_loads_payloads_equal_to_what_was_given(
    engine: AsyncEngine, start_runner: Runners
) -> None:
    given: list[tuple[Task[Any], BaseModel]] = [
        (pt.post, pt.Letter(**{"from": "ann", "to": "bob"})),
        (pt.paint, pt.Rectangle(width=2, height=3)),
        (pt.greet_team, pt.Team(teamName="x", leadPerson=pt.Person(firstName="A", lastName="B"))),
        (pt.feed, pt.Tank(pets=[pt.Cat(lives=9), pt.Fish(fresh_water=False)])),
    ]
    async with async_sessionmaker(engine)() as session, session.begin():
        session.add_all(enqueue(fn, payload) for fn, payload in given)
    runner = start_runner("--workers", "1", "--burst", imports=["tests.payload_tasks"])
    assert await runner.wait_exit(120) == 0, start_runner.logs()
    loaded = [e.fields["repr"] for e in ledger.entries(start_runner.folder, "payload")]
    assert sorted(loaded) == sorted(repr(payload) for _, payload in given), start_runner.logs()
    assert await count_tasks(engine) == 0
