"""A task that logs one record far over the log relay's 1 MiB line (tests/test_log_relay_cap.py)."""

from __future__ import annotations

import logging

from pydantic import BaseModel

from sqlatasks import task

log = logging.getLogger("myapp.big")


class Size(BaseModel):
    mebibytes: int


@task
async def log_a_huge_line(data: Size) -> None:
    log.warning("huge-start %s huge-end", "x" * (data.mebibytes << 20))
    log.warning("the line after the huge one")
