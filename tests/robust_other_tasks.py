"""A second module of tasks for the robustness tests: a runner started with only
`--import tests.robust_conn_tasks` does not know these."""

from __future__ import annotations

from sqlatasks import task
from tests import ledger
from tests.robust_conn_tasks import Mark


@task(max_attempts=1000, retry_delay=0.5)
async def other_note(data: Mark) -> None:
    ledger.write("ran", data.key)
