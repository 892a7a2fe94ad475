"""Imported lazily by a worker when a row names it: the runner was given `tests.lazypkg`."""

from sqlatasks import task
from tests import ledger
from tests.runner_tasks import Job


@task
async def hello(data: Job) -> None:
    ledger.write("lazy", data.key)
