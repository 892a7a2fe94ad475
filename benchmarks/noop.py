"""The task the `process` benchmark drains: it does nothing, so what is measured is the queue."""

from __future__ import annotations

from pydantic import BaseModel

from sqlatasks import task


class Nothing(BaseModel):
    i: int


@task
async def noop(data: Nothing) -> None:
    return None
