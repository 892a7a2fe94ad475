"""Tasks for the robustness tests (connections, start-up, tasks no runner knows yet): each
execution writes one "ran" entry to the test's ledger (tests/ledger.py)."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import task
from tests import ledger


class Mark(BaseModel):
    key: int


@task(max_attempts=1000, retry_delay=0.5)
async def note(data: Mark) -> None:
    ledger.write("ran", data.key)


@task(max_attempts=1000, retry_delay=0.5)
async def note_in_session(data: Mark, session: AsyncSession) -> None:
    """A session task: its row's DELETE and COMMIT run on a connection of the worker's task
    pool (the entry is written before them: it does not prove the commit)."""
    ledger.write("ran", data.key)
