"""Tasks of the flow-control tests (tests/test_flow_control*.py). The runner ones write their
`start` and `end` to the ledger, with their concurrency key as `group`."""

from __future__ import annotations

import anyio
from pydantic import BaseModel

from sqlatasks import GiveUp, task
from tests import ledger


class Job(BaseModel):
    key: int
    group: str = ""
    sleep: float = 0.0


@task(queue="flow")
async def hold(data: Job) -> None:
    """Runs `sleep` seconds; one key at a time unless the key's limit says otherwise."""
    ledger.write("start", data.key, group=data.group)
    await anyio.sleep(data.sleep)
    ledger.write("end", data.key, group=data.group)


@task(queue="flow", concurrency_limit=2)
async def hold_two(data: Job) -> None:
    """As `hold`, two per key."""
    await hold(data)


@task(max_attempts=5, retry_delay=0)
async def give_up(data: Job) -> None:
    raise GiveUp(f"job {data.key}: no retry can help")


class Unreachable(ConnectionError):
    pass


@task(max_attempts=5, retry_delay=0, retry_on=(ConnectionError, TimeoutError))
async def retried_on_connection_errors(data: Job) -> None:
    if data.group == "connection":
        raise Unreachable("the API is down")
    raise ValueError("a bug: retrying cannot help")


@task(max_attempts=5, retry_delay=0, no_retry_on=(KeyError,))
async def not_retried_on_key_errors(data: Job) -> None:
    if data.group == "key":
        raise KeyError("customer 42 was deleted")
    raise RuntimeError("a glitch")
