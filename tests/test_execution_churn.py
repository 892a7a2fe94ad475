"""Many tasks ending on both sides of their time limit, in few slots, while leases are renewed
(issue 17): each slot hands its one long-lived scope from task to task, and the watchdog cuts
off only the task whose deadline passed. A cancel meant for one task never reaches another (it
would be cut off before its limit), and every outcome written matches what the task did.
Real runner, real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests import execution_tasks as t
from tests import ledger
from tests.conftest import count_tasks
from tests.execution_support import MODULE, put_in_order
from tests.execution_tasks import Job
from tests.processes import Runners, wait_for_tasks

TASKS = 160
LIMIT = 0.5


def sleep_of(key: int) -> float:
    return 0.2 + (key % 13) * 0.05  # 0.2 … 0.8 s: about half of them past the limit


@pytest.mark.slow
async def test_churn_around_the_limit_cuts_off_exactly_the_overrunning_tasks(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    runner = start_runner(
        "--workers", "1", "--concurrency", "8", "--check-interval", "0.5", "--lease", "15",
        imports=[MODULE],
    )  # fmt: skip
    await runner.started(1)
    ids = await put_in_order(
        engine, *[(t.near_its_limit, Job(key=k, sleep=sleep_of(k))) for k in range(TASKS)]
    )
    # Each ends deleted (returned) or parked (max_attempts=1: its timeout's failure).
    await wait_for_tasks(engine, exactly=0, where="failed_at IS NULL", timeout=120)
    query = text("SELECT id, last_error FROM sqlatasks_tasks WHERE failed_at IS NOT NULL")
    async with engine.connect() as conn:
        parked: dict[int, str] = {i: str(e) for i, e in (await conn.execute(query)).all()}
    key_of = dict(zip(ids, range(TASKS), strict=True))
    parked_keys = {key_of[i] for i in parked}
    other = [e for e in parked.values() if not e.startswith("TimeoutError: exceeded its 0.5 s")]
    assert not other, other
    by_key: dict[int, list[ledger.Entry]] = {}
    for one in ledger.entries(tmp_path):
        assert one.key is not None
        by_key.setdefault(one.key, []).append(one)
    assert set(by_key) == set(range(TASKS))
    for key, found in by_key.items():
        events = [e.event for e in found]
        if key in parked_keys:
            # Cut off; or it returned just as its deadline passed (the watchdog had cancelled
            # it in the same loop turn): it ran past its limit, a timeout either way.
            assert events in (["start", "cancelled"], ["start", "end"]), (key, events)
            after = found[1].fields["after"]
            # Never before its own limit (a cancel meant for another task), nor long after.
            assert LIMIT - 0.01 <= after < LIMIT + 1.0, (key, events, after)
        else:
            assert events == ["start", "end"], (key, events)
        if sleep_of(key) <= LIMIT - 0.1:
            assert key not in parked_keys, key
        if sleep_of(key) >= LIMIT + 0.1:
            assert key in parked_keys, key
    assert await count_tasks(engine, "lease_token IS NOT NULL") == 0
    assert "Traceback" not in runner.log()
