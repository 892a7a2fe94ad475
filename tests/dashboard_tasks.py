"""Tasks and seed data of the dashboard tests (tests/test_dashboard.py, the browser test)."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks import task
from tests import ledger


class Report(BaseModel):
    number: int
    secret: str = "hunter2"


@task(max_attempts=1, keep=3600, queue="reports")
async def flaky(data: Report) -> None:
    """Fails (and parks) the first time it runs in a test; succeeds when retried."""
    if ledger.first_time(f"flaky-{data.number}"):
        raise ValueError(f"report {data.number} failed: printer on fire\nsecond line of error")
    ledger.write("ran", data.number)


@task(keep=3600, queue="reports")
async def tally(data: Report) -> None:
    """Succeeds at once (the browser test's paused-then-resumed queue)."""
    ledger.write("tallied", data.number)


FLAKY = "tests.dashboard_tasks:flaky"

_SEED = [
    # queued (due now), in two queues
    """INSERT INTO sqlatasks_tasks (task_name, payload, queue)
       SELECT 'app:send_mail', jsonb_build_object('n', n), 'mail' FROM generate_series(1, 3) n""",
    """INSERT INTO sqlatasks_tasks (task_name, payload, queue)
       VALUES ('app:resize', '{"n": 1}', 'images')""",
    # scheduled an hour ahead
    """INSERT INTO sqlatasks_tasks (task_name, payload, queue, scheduled_at)
       VALUES ('app:digest', '{"n": 1}', 'mail', now() + interval '1 hour')""",
    # running under a lease
    """INSERT INTO sqlatasks_tasks (task_name, payload, queue, attempts, locked_until, locked_by)
       VALUES ('app:resize', '{"n": 2}', 'images', 1, now() + interval '1 hour', 'worker-7')""",
    # parked, with a two-line error
    """INSERT INTO sqlatasks_tasks (task_name, payload, queue, attempts, max_attempts,
                                    failed_at, last_error)
       VALUES ('app:charge', '{"card": "4242", "amount": 5}', 'billing', 3, 3, now(),
               E'PaymentDeclined: card 4242 declined\\nTraceback line two')""",
    # kept, completed
    """INSERT INTO sqlatasks_finished (id, task_name, queue, state, payload, result, attempts,
                                      created_at, finished_at, keep_until)
       VALUES (1000000, 'app:send_mail', 'mail', 'completed', '{}', '{"sent": true}', 1,
               now(), now(), now() + interval '1 hour')""",
    # a periodic schedule a runner has seen
    """INSERT INTO sqlatasks_periodic (name, cron, last_slot)
       VALUES ('app:nightly', '0 3 * * *', now() - interval '1 day')""",
]


async def seed(engine: AsyncEngine) -> dict[str, int]:
    """A task in every state; their ids by state."""
    async with engine.begin() as conn:
        for statement in _SEED:
            await conn.execute(text(statement))
        found = await conn.execute(
            text("""SELECT CASE WHEN failed_at IS NOT NULL THEN 'parked'
                                WHEN locked_until IS NOT NULL THEN 'running'
                                WHEN scheduled_at > now() THEN 'scheduled'
                                ELSE 'queued' END, max(id)
                    FROM sqlatasks_tasks GROUP BY 1""")
        )
        return {state: int(task_id) for state, task_id in found}
