"""The task of the chaos round of the `hosts` benchmark: holds its lease a while, and writes
when it started and ended, on which host, to SQLATASKS_BENCH_STAMPS (one O_APPEND write each)."""

from __future__ import annotations

import json
import os
import time

import anyio
from pydantic import BaseModel

from sqlatasks import current_task, task


class Hold(BaseModel):
    key: int
    seconds: float


def _write(event: str, key: int) -> None:
    line = {
        "event": event,
        "key": key,
        "at": time.time(),
        "host": os.environ.get("SQLATASKS_BENCH_HOST", "?"),
        "attempt": current_task().attempt,
    }
    fd = os.open(os.environ["SQLATASKS_BENCH_STAMPS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


@task(retry_delay=0)
async def hold(data: Hold) -> None:
    _write("start", data.key)
    await anyio.sleep(data.seconds)
    _write("end", data.key)
