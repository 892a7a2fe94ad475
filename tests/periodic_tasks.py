"""Periodic tasks for the runner tests, in a module of their own so that only the tests that
import it (`--import tests.periodic_tasks`) run a scheduler.

Their slots are a year apart (midnight UTC on 1 January): no real slot passes while a test
runs, so every firing a test sees is one that it caused by back-dating `last_slot`.
"""

from __future__ import annotations

from pydantic import BaseModel

from sqlatasks import periodic, task
from tests import ledger, runner_tasks

YEARLY = "0 0 1 1 *"
RECORD_SCHEDULE = "record-77"


class Beat(BaseModel):
    key: int = 1


@task(cron=YEARLY)
async def beat(data: Beat) -> None:
    """Leaves one `beat` line in the ledger per run."""
    ledger.write("beat", data.key)


# An existing task with a fixed payload: each run leaves `start 77` and `end 77`.
periodic(runner_tasks.record, cron=YEARLY, payload=runner_tasks.Job(key=77), name=RECORD_SCHEDULE)
