"""The task the `process` benchmark drains: it does nothing, so what is measured is the queue."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from sqlatasks import task


class Nothing(BaseModel):
    i: int


@task
async def noop(data: Nothing) -> None:
    return None


class Stamp(BaseModel):
    key: int


@task
async def stamp(data: Stamp) -> None:
    """Writes when it started, for the latency benchmark (one short O_APPEND write)."""
    line = f"{data.key} {time.time():.6f}\n".encode()
    fd = os.open(os.environ["SQLATASKS_BENCH_STAMPS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
