"""A payload model that changed between enqueue and execution.

Rows are written as an older version of the application wrote them (that version's model, as
JSON), then run by today's tasks through `run_pending`: the runner's own execution path, in a
rolled-back session.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import QueuedTask, Task, task
from sqlatasks.testing import Completed, Failed, run_pending

seen: list[BaseModel] = []


class SignupV1(BaseModel):
    """Yesterday's payload of `welcome`."""

    user_id: int
    email: str
    newsletter: bool  # dropped since


class Signup(BaseModel):
    """Today's: `newsletter` is gone, `locale` is new and optional."""

    user_id: int
    email: str
    locale: str = "en"


@task(name="evolution.welcome")
async def welcome(data: Signup) -> None:
    seen.append(data)


class StrictSignup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int
    email: str


@task(name="evolution.strict_welcome")
async def strict_welcome(data: StrictSignup) -> None:
    seen.append(data)


class InvoiceV1(BaseModel):
    order: str  # was a reference like "A-7"


class Invoice(BaseModel):
    """A breaking change: `order` became a number, and `currency` is new and required."""

    order: int
    currency: str


@task(name="evolution.invoice")  # no max_attempts: it would be retried without limit
async def send_invoice(data: Invoice) -> None:
    seen.append(data)


def written_by_an_older_version(fn: Task[Any], old: BaseModel) -> QueuedTask:
    """The row an older release enqueued for `fn`: its payload is the old model's JSON."""
    return QueuedTask(task_name=fn.name, payload=old.model_dump_json())


async def test_an_added_optional_field_and_a_dropped_field_still_run(
    session: AsyncSession,
) -> None:
    seen.clear()
    old = SignupV1(user_id=1, email="ann@example.com", newsletter=True)
    session.add(written_by_an_older_version(welcome, old))
    outcomes = await run_pending(session)
    assert [type(o) for o in outcomes] == [Completed]
    # The new field takes its default; the dropped one is ignored (pydantic's default).
    assert seen == [Signup(user_id=1, email="ann@example.com", locale="en")]
    assert await live_rows(session) == 0


async def test_a_model_that_forbids_extra_fields_parks_old_payloads(
    session: AsyncSession,
) -> None:
    seen.clear()
    old = SignupV1(user_id=2, email="bob@example.com", newsletter=False)
    session.add(written_by_an_older_version(strict_welcome, old))
    (outcome,) = await run_pending(session)
    assert isinstance(outcome, Failed)
    assert outcome.retry_in is None  # parked
    assert "newsletter" in outcome.error
    assert "Extra inputs are not permitted" in outcome.error
    assert seen == []


async def test_a_breaking_change_parks_the_task_at_once_with_pydantics_message(
    session: AsyncSession,
) -> None:
    seen.clear()
    session.add(written_by_an_older_version(send_invoice, InvoiceV1(order="A-7")))
    outcomes = await run_pending(session)
    assert len(outcomes) == 1
    (outcome,) = outcomes
    assert isinstance(outcome, Failed)
    assert outcome.retry_in is None  # parked on its first attempt, although unlimited
    assert outcome.error.startswith("PayloadError: invalid payload for task 'evolution.invoice'")
    assert "Input should be a valid integer" in outcome.error  # order: "A-7"
    assert "Field required" in outcome.error  # currency
    assert seen == []

    found = await session.execute(
        text("SELECT attempts, failed_at IS NOT NULL, last_error FROM sqlatasks_tasks")
    )
    ((attempts, parked, last_error),) = found.all()
    assert (attempts, parked) == (1, True)
    assert last_error == outcome.error
    # Parked is final: nothing claims it again by itself.
    assert await run_pending(session) == []


async def live_rows(session: AsyncSession) -> int:
    found = await session.execute(text("SELECT count(*) FROM sqlatasks_tasks"))
    return int(found.scalar_one())
