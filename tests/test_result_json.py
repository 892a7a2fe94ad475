"""A kept result that JSON cannot carry (a float nan or inf) is refused with a warning, as a
NUL character is, instead of being stored as null without a word (docs/status.md, Results)."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import enqueue, get_task, task
from sqlatasks.testing import Completed, run_pending

pytestmark = pytest.mark.anyio


class Measure(BaseModel):
    value: str  # float() of it: a payload cannot carry nan itself (it is refused at enqueue)


class Ratio(BaseModel):
    ratio: float
    notes: dict[str, Any] = {}


class Faithful(BaseModel):
    """Writes NaN and Infinity as strings, which load back: nothing to refuse."""

    model_config = ConfigDict(ser_json_inf_nan="strings")
    ratio: float


@task(keep=3600)
async def returns_a_float(data: Measure) -> float:
    return float(data.value)


@task(keep=3600)
async def returns_a_model(data: Measure) -> Ratio:
    return Ratio(ratio=1.0, notes={"spread": [0.5, float(data.value)]})


@task(keep=3600)
async def returns_a_faithful_model(data: Measure) -> Faithful:
    return Faithful(ratio=float(data.value))


async def _run_one(session: AsyncSession, queued: Any) -> Any:
    session.add(queued)
    await session.flush()
    [outcome] = await run_pending(session)
    assert isinstance(outcome, Completed)  # the task's work is done: it is not run again
    found = await get_task(session, int(queued.id))
    assert found is not None
    assert found.state == "completed"
    return found.result


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
async def test_a_float_nan_or_inf_result_is_not_kept_and_says_why(
    session: AsyncSession, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="sqlatasks"):
        result = await _run_one(session, enqueue(returns_a_float, Measure(value=value)))
    assert result is None
    [line] = [r.getMessage() for r in caplog.records if "not kept" in r.getMessage()]
    assert "the result is not JSON" in line
    assert "the value returned is a float nan or inf" in line


async def test_the_warning_names_the_field_inside_a_model(
    session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sqlatasks"):
        result = await _run_one(session, enqueue(returns_a_model, Measure(value="nan")))
    assert result is None
    assert "notes['spread'][1] is a float nan or inf" in caplog.text


async def test_finite_floats_and_nulls_are_kept_as_before(session: AsyncSession) -> None:
    assert await _run_one(session, enqueue(returns_a_float, Measure(value="2.5"))) == 2.5
    kept = await _run_one(session, enqueue(returns_a_model, Measure(value="0.25")))
    assert kept == Ratio(ratio=1.0, notes={"spread": [0.5, 0.25]})


async def test_a_model_that_writes_nan_as_a_string_keeps_it(session: AsyncSession) -> None:
    kept = await _run_one(session, enqueue(returns_a_faithful_model, Measure(value="inf")))
    assert kept == Faithful(ratio=math.inf)
