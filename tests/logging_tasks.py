"""Tasks whose module configures logging at import, as applications do (tests/test_logging.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import BaseModel

from sqlatasks import task
from tests import ledger

# The application's own set-up: its handler only, replacing any other (force=True).
if ledger.ENV in os.environ:  # in a runner's processes, not in the tests' own
    logging.basicConfig(
        handlers=[logging.FileHandler(Path(os.environ[ledger.ENV]) / "app.log")],
        level=logging.INFO,
        force=True,
    )
log = logging.getLogger("myapp.tasks")


class Number(BaseModel):
    n: int


@task
async def chatty(payload: Number) -> None:
    n = payload.n
    log.info("chatty says %d", n)
    ledger.write("chatty", n)
