"""A task module that configures logging with dictConfig at import, disabling existing loggers
(its default) and replacing the root's handlers (tests/test_logging.py)."""

from __future__ import annotations

import logging
import logging.config
import os

from pydantic import BaseModel

from sqlatasks import current_task, task
from tests import ledger

if ledger.ENV in os.environ:  # in a runner's processes, not in the tests' own
    logging.config.dictConfig(
        {
            "version": 1,
            "handlers": {"null": {"class": "logging.NullHandler"}},
            "root": {"handlers": ["null"], "level": "INFO"},
        }
    )
log = logging.getLogger("myapp.dict")


class Number(BaseModel):
    n: int


@task
async def noted(payload: Number) -> None:
    n = payload.n
    log.info("noted %d", n)
    ledger.write("noted", n)
    if n == 0 and current_task().attempt == 1:
        raise RuntimeError("first attempt of 0 fails")
