"""Module-level tasks for the tests (tasks must live at module level to be importable)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sqlatasks import task


class Greeting(BaseModel):
    name: str = Field(min_length=1)
    times: int = 1


class Other(BaseModel):
    value: int


@task
async def greet(data: Greeting) -> None:
    return None


@task(name="greetings.v2", queue="mail", priority=5, timeout=12, retry_delay=3, max_attempts=4)
async def greet_renamed(data: Greeting) -> None:
    return None


@task(max_attempts=1)
async def refuse(data: Greeting) -> None:
    raise ValueError(f"no greeting for {data.name}")
