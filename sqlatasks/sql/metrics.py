"""The supervisor's metrics statement: queue depth and lag, bounded work at any table size.

`plan()` gives its EXPLAIN, for the test that holds it to index scans."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from sqlatasks.models import TABLE_NAME

DEPTH_CAP = 10_000
"""Rows a scrape reads at most: depths above it show as DEPTH_CAP (at least this many)."""

_QUEUE_GAUGES = text(f"""
-- depth per queue and state, and the oldest due task's age: the claim index's first :cap rows,
-- and the parked index's first :cap rows
SELECT queue,
       CASE WHEN locked_until >= now() THEN 'running'
            WHEN scheduled_at <= now() THEN 'due'
            ELSE 'scheduled' END AS state,
       count(*) AS depth,
       coalesce(extract(epoch FROM now() - min(scheduled_at)), 0)::float8 AS lag
FROM (
    -- the claim index (partial on failed_at IS NULL, in claim order): an index scan that
    -- stops after :cap rows, never a count over the whole table
    SELECT queue, scheduled_at, locked_until FROM {TABLE_NAME}
    WHERE failed_at IS NULL
    ORDER BY priority DESC, scheduled_at, id
    LIMIT :cap
) AS head
GROUP BY 1, 2
UNION ALL
SELECT queue, 'parked', count(*), 0
FROM (
    -- the parked index (v6, partial on failed_at IS NOT NULL), in its order: an index scan that
    -- stops after :cap rows, as above
    SELECT queue FROM {TABLE_NAME}
    WHERE failed_at IS NOT NULL
    ORDER BY failed_at DESC, id DESC
    LIMIT :cap
) AS parked
GROUP BY 1
""")


@dataclass(frozen=True, slots=True)
class QueueGauge:
    queue: str
    state: str
    """due (waiting for a worker), running (leased), scheduled (due later), or parked (failed,
    waiting for a person)."""
    depth: int
    lag: float
    """Seconds since the oldest row of this group was due (meaningful for "due")."""


async def queue_gauges(conn: AsyncConnection, cap: int = DEPTH_CAP) -> list[QueueGauge]:
    """Depth per queue and state and the oldest due task's age, reading at most `cap` rows.

    Exact while fewer than `cap` tasks are unparked; beyond, the counts are of the first
    `cap` in claim order (so at least that many), and the lag is exact for a queue whose due
    tasks share one priority (claim order is then oldest first). Parked tasks are counted
    through the parked index (schema v6), up to `cap` of them: the newest failures, when more
    are parked.
    """
    result = await conn.execute(_QUEUE_GAUGES, {"cap": cap})
    return [QueueGauge(r.queue, r.state, int(r.depth), float(r.lag)) for r in result]


async def plan(conn: AsyncConnection, cap: int = DEPTH_CAP) -> str:
    """EXPLAIN of the metrics statement: how PostgreSQL will read the gauges."""
    result = await conn.execute(text(f"EXPLAIN {_QUEUE_GAUGES.text}"), {"cap": cap})
    return "\n".join(result.scalars())
