"""Tasks for tests/test_hooks.py."""

from __future__ import annotations

from pydantic import BaseModel

from sqlatasks import task


class Step(BaseModel):
    fail: bool = False


calls: list[str] = []


@task(max_attempts=2, retry_delay=0)
async def step(payload: Step) -> None:
    calls.append("task")
    if payload.fail:
        raise ValueError("asked to fail")
