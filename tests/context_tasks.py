"""Tasks for tests/test_context_isolation.py: one sets a ContextVar and never resets it, the
next (in the same execution slot) writes what it sees to the ledger (tests/ledger.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel

from sqlatasks import current_task, task
from tests import ledger

tenant: ContextVar[int] = ContextVar("tenant")
"""What an application might keep per request or per task (a tenant, a trace id)."""

by_middleware: ContextVar[int] = ContextVar("by_middleware")


class Job(BaseModel):
    key: int


@task
async def sets_and_keeps(data: Job) -> None:
    """Sets `tenant` to its key and leaves it set."""
    tenant.set(data.key)
    ledger.write("end", data.key)


@task
async def reports_what_it_sees(data: Job) -> None:
    """Writes the `tenant` and `by_middleware` it sees (-1: unset) and its own task id."""
    ledger.write(
        "end",
        data.key,
        tenant=tenant.get(-1),
        by_middleware=by_middleware.get(-1),
        own_id_seen=current_task().id,
    )


async def sets_a_variable(run: Any, call_next: Callable[[], Awaitable[None]]) -> None:
    """Middleware (--middleware tests.context_tasks:sets_a_variable): sets `by_middleware` to
    the running task's id after each task, and leaves it set."""
    await call_next()
    by_middleware.set(run.id)
