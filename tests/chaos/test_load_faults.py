"""Many committers at once, with NOTIFY on, while two runners drain."""

from __future__ import annotations

import anyio
import pytest

from tests.chaos import tasks
from tests.chaos.harness import Chaos
from tests.chaos.invariants import read_executions

pytestmark = pytest.mark.slow


async def test_16_concurrent_committers_with_notify(chaos: Chaos) -> None:
    for _ in range(2):
        await chaos.runner("--workers", "1", "--concurrency", "8", "--idle-sleep", "30").started(1)

    async def committer(number: int) -> None:
        for i in range(40):
            # One task per transaction, as a web request would; every tenth rolls back.
            await chaos.enqueue(tasks.work, 1, sleep=0.01, rollback=(number + i) % 10 == 0)

    async with anyio.create_task_group() as committers:
        for number in range(16):
            committers.start_soon(committer, number)
    # The idle sleep is 30 s: the work moves on NOTIFY wake-ups.
    verdict = await chaos.settled(timeout=25)
    verdict.assert_ok()
    assert verdict.completed == 16 * 36  # by the ledger: each committed task ran to its end
    ran = {run.key for run in read_executions(chaos.folder)}
    assert ran.isdisjoint(chaos.rolled_back)  # and none of the 64 rolled back ever ran
    assert not verdict.duplicates
