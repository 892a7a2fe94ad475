"""Imported lazily by a worker when a row names it: the runner was given `tests.lazypkg`."""

from sqlatasks import task
from tests.runner_tasks import Job, _ledger


@task
async def hello(data: Job) -> None:
    _ledger("lazy", data)
