"""A task of tests/test_progress_thread.py: reports its progress from a worker thread."""

from __future__ import annotations

import anyio
from pydantic import BaseModel

from sqlatasks import current_task, task
from tests import ledger


class Work(BaseModel):
    chunks: int = 2


def _blocking_chunk(done: int) -> None:
    """Blocking work run in a thread, as a task runs what would block its event loop."""
    current_task().report({"done": done})


@task(keep=3600)
async def threaded(data: Work) -> int:
    """Reports each chunk from its thread, then waits until the test has seen the last one."""
    for done in range(1, data.chunks + 1):
        await anyio.to_thread.run_sync(_blocking_chunk, done)
    await ledger.gate("seen")
    return data.chunks
