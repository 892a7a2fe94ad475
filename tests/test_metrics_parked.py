"""`sqlatasks_queue_depth{state="parked"}`: parked tasks counted through the parked index
(schema v6), and the metrics statement never scans the queue table (EXPLAIN, after ANALYZE)."""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks.observe import Metrics
from sqlatasks.sql import metrics

ROWS = 200_000


async def test_parked_depth_is_read_through_the_parked_index(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        # One task in 1,000 parked (200 in all, 40 per queue); due, running and later ones.
        await conn.execute(
            text(f"""
            INSERT INTO sqlatasks_tasks (task_name, payload, queue, priority, scheduled_at,
                                         locked_until, failed_at, last_error)
            SELECT 'app:t', '{{}}', 'q' || (n / 1000 % 5), (n % 3)::smallint,
                   now() + make_interval(secs => n % 1000 - 500),
                   CASE WHEN n % 7 = 0 THEN now() + interval '1 hour' END,
                   CASE WHEN n % 1000 = 0 THEN now() END,
                   CASE WHEN n % 1000 = 0 THEN 'E: x' END
            FROM generate_series(1, {ROWS}) AS n""")
        )
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE sqlatasks_tasks"))
        plan = await metrics.plan(conn)
        gauges = await metrics.queue_gauges(conn)
        few = await metrics.queue_gauges(conn, cap=50)
    assert not re.search(r"Seq Scan on sqlatasks_", plan), plan
    assert "Index Scan using sqlatasks_tasks_parked_idx" in plan, plan
    assert "sqlatasks_tasks_claim_idx" in plan, plan
    parked = {g.queue: g.depth for g in gauges if g.state == "parked"}
    assert parked == {f"q{i}": 40 for i in range(5)}
    assert sum(g.depth for g in few if g.state == "parked") == 50  # capped, as the others

    exported = Metrics()
    await exported.refresh(engine)
    text_format = exported.exposition().decode()
    assert 'sqlatasks_queue_depth{queue="q0",state="parked"} 40.0' in text_format
