"""The dashboard's reads (sqlatasks.dashboard): bounded work per page at any table size.

Every statement here reads through an index and stops after a cap: the claim index's head for
live tasks (as `sql/metrics.py` does), the parked index (schema v6, newest failure first) for
parked tasks, the finished table's `keep_until` index for kept ones, the throughput rollup's
primary key (schema v9) for the chart. No page counts the whole table;
tests/test_dashboard.py checks each plan with EXPLAIN on a table of its own.
All read only (SELECT privileges and pg_stat_activity): docs/dashboard.md names the grants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause

from sqlatasks.models import (
    FINISHED_TABLE_NAME,
    PERIODIC_TABLE_NAME,
    TABLE_NAME,
    THROUGHPUT_TABLE_NAME,
)
from sqlatasks.rows import QueueSettings
from sqlatasks.sql import claim, server

_STATE = """CASE WHEN locked_until >= now() THEN 'running'
            WHEN scheduled_at > now() THEN 'scheduled'
            ELSE 'queued' END"""

OVERVIEW_LIVE = text(f"""
-- per queue and state, the claim index's first :cap rows: counts (at least) and the lag
SELECT queue, {_STATE} AS state, count(*) AS depth,
       coalesce(extract(epoch FROM now() - min(scheduled_at)), 0)::float8 AS lag
FROM (
    SELECT queue, scheduled_at, locked_until FROM {TABLE_NAME}
    WHERE failed_at IS NULL                     -- the claim index is partial on this
    ORDER BY priority DESC, scheduled_at, id    -- its order: an index scan that stops at :cap
    LIMIT :cap
) AS head
GROUP BY 1, 2
""")

OVERVIEW_PARKED = text(f"""
-- parked tasks per queue among the newest :cap parked ones (the parked index, stops at :cap)
SELECT queue, count(*) AS parked FROM (
    SELECT queue FROM {TABLE_NAME}
    WHERE failed_at IS NOT NULL                 -- the parked index is partial on this
    ORDER BY failed_at DESC, id DESC            -- its order: an index scan that stops at :cap
    LIMIT :cap
) AS newest GROUP BY 1
""")

OVERVIEW_KEPT = text(f"""
-- kept finished tasks per queue among the :cap kept longest (keep_until index, capped)
SELECT queue, count(*) AS kept FROM (
    SELECT queue FROM {FINISHED_TABLE_NAME} ORDER BY keep_until DESC LIMIT :cap
) AS kept GROUP BY 1
""")

THROUGHPUT = text(f"""
-- completed, failed (parked) and retried per minute and queue over the last :minutes minutes:
-- a range of the rollup's primary key (minute first), at most minutes x queues x workers rows
SELECT minute, queue, sum(completed)::bigint AS completed, sum(failed)::bigint AS failed,
       sum(retried)::bigint AS retried
FROM {THROUGHPUT_TABLE_NAME}
WHERE minute >= date_trunc('minute', now()) - make_interval(mins => :minutes - 1)
GROUP BY 1, 2
""")

# Keyset on the claim index (priority DESC, scheduled_at, id): two index ranges, merged; the
# first page starts from the sentinel cursor (32767, -infinity, 0). The window reads at most
# :scan rows past the cursor, whatever the filters: a filter matching nothing costs one window.
LIVE_PAGE = text(f"""
-- live tasks after a keyset cursor in claim order, filtered within a window of :scan rows
WITH win AS MATERIALIZED (
    SELECT * FROM (
        (SELECT id, priority, scheduled_at, queue, task_name, attempts, max_attempts,
                locked_until, locked_by, created_at, last_error FROM {TABLE_NAME}
         WHERE failed_at IS NULL AND priority = :priority
           AND (scheduled_at, id) > (CAST(:scheduled_at AS timestamptz), CAST(:id AS bigint))
         ORDER BY scheduled_at, id LIMIT :scan)
        UNION ALL
        (SELECT id, priority, scheduled_at, queue, task_name, attempts, max_attempts,
                locked_until, locked_by, created_at, last_error FROM {TABLE_NAME}
         WHERE failed_at IS NULL AND priority < :priority
         ORDER BY priority DESC, scheduled_at, id LIMIT :scan)
    ) AS both_ranges
    ORDER BY priority DESC, scheduled_at, id LIMIT :scan
)
(SELECT *, {_STATE} AS state, false AS edge, 0::bigint AS window_rows FROM win
 WHERE (CAST(:queue AS text) IS NULL OR queue = :queue)
   AND (CAST(:task_name AS text) IS NULL OR task_name = :task_name)
   AND (CAST(:state AS text) IS NULL OR {_STATE} = :state)
 ORDER BY priority DESC, scheduled_at, id LIMIT :page)
UNION ALL
-- the window's last row: where the next page starts when the filters left this one short
(SELECT *, {_STATE}, true, (SELECT count(*) FROM win) FROM win
 ORDER BY priority, scheduled_at DESC, id DESC LIMIT 1)
""")

# Keyset on the parked index (failed_at DESC, id DESC): the first page starts from the sentinel
# cursor (the latest timestamp, the largest id). The filters are not in the index: a filter
# that matches few parked tasks reads on through the parked rows (only those) for a page.
PARKED_PAGE = text(f"""
-- parked tasks after a keyset cursor, newest failure first (the parked index, schema v6)
SELECT id, task_name, queue, attempts, failed_at, last_error FROM {TABLE_NAME}
WHERE failed_at IS NOT NULL
  AND (failed_at, id) < (CAST(:failed_at AS timestamptz), CAST(:id AS bigint))
  AND (CAST(:queue AS text) IS NULL OR queue = :queue)
  AND (CAST(:task_name AS text) IS NULL OR task_name = :task_name)
ORDER BY failed_at DESC, id DESC
LIMIT :page
""")

PERIODIC = text(f"""
-- every periodic schedule's recorded expression and last slot fired
SELECT name, cron, last_slot FROM {PERIODIC_TABLE_NAME} ORDER BY name
""")

WORKERS = text("""
-- runner processes' connections: the supervisor and each worker's claim loop (their labels)
SELECT pid, application_name AS name, state, client_addr::text AS client,
       backend_start, extract(epoch FROM now() - coalesce(state_change, backend_start))::float8
           AS idle_seconds
FROM pg_stat_activity
WHERE datname = current_database()
  AND (application_name LIKE 'sqlatasks claim %' OR application_name = 'sqlatasks supervisor')
ORDER BY application_name, pid
""")

PAGE_STATEMENTS: dict[str, tuple[TextClause, dict[str, Any]]] = {
    "overview_live": (OVERVIEW_LIVE, {"cap": 10_000}),
    "overview_parked": (OVERVIEW_PARKED, {"cap": 10_000}),
    "overview_kept": (OVERVIEW_KEPT, {"cap": 10_000}),
    "throughput": (THROUGHPUT, {"minutes": 60}),
    "live_page": (
        LIVE_PAGE,
        {
            "priority": 32767,
            "scheduled_at": datetime(1, 1, 1, tzinfo=UTC),
            "id": 0,
            "scan": 50_000,
            "page": 50,
            "queue": "q1",
            "task_name": None,
            "state": "scheduled",
        },
    ),
    "parked_page": (
        PARKED_PAGE,
        {
            "failed_at": datetime.max.replace(tzinfo=UTC),
            "id": 2**63 - 1,
            "queue": None,
            "task_name": None,
            "page": 50,
        },
    ),
}
"""The page statements with typical parameters, for EXPLAIN (tests/test_dashboard.py)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in claim order: the next page starts after this row."""

    priority: int
    scheduled_at: datetime
    id: int


FIRST = Cursor(32767, datetime(1, 1, 1, tzinfo=UTC), 0)
"""Before every task: the highest priority, the earliest time (the first page starts here)."""


@dataclass(frozen=True, slots=True)
class ParkedCursor:
    """A position in the parked order (newest failure first): the next page starts after."""

    failed_at: datetime
    id: int


NEWEST = ParkedCursor(datetime.max.replace(tzinfo=UTC), 2**63 - 1)
"""Before every parked task: the first parked page starts here."""


async def overview(conn: AsyncConnection, cap: int) -> dict[str, dict[str, float]]:
    """Per queue: queued, scheduled, running (read from the claim index's first `cap` rows),
    lag, parked (of the `cap` newest parked) and kept (of `cap` kept): floors past cap."""
    queues: dict[str, dict[str, float]] = {}
    for row in await conn.execute(OVERVIEW_LIVE, {"cap": cap}):
        counts = queues.setdefault(row.queue, {})
        counts[row.state] = int(row.depth)
        if row.state == "queued":
            counts["lag"] = float(row.lag)
    for statement, column in [(OVERVIEW_PARKED, "parked"), (OVERVIEW_KEPT, "kept")]:
        for row in await conn.execute(statement, {"cap": cap}):
            queues.setdefault(row.queue, {})[column] = int(row[1])
    return dict(sorted(queues.items()))


async def throughput(conn: AsyncConnection, minutes: int) -> tuple[datetime, list[Row[Any]]]:
    """The database's current minute, and per minute and queue of the last `minutes` (the
    current one included) the attempts completed, failed (parked) and retried, as the
    workers' last flushes left them (up to `throughput_interval` seconds behind)."""
    now = (await server.database_now(conn)).replace(second=0, microsecond=0)
    return now, list((await conn.execute(THROUGHPUT, {"minutes": minutes})).all())


async def live_page(
    conn: AsyncConnection, after: Cursor, *, filters: dict[str, str | None], page: int, scan: int
) -> tuple[list[Row[Any]], Cursor | None]:
    """Up to `page` live tasks after `after` matching `filters` (queue, task_name, state),
    and the cursor of the next page (None at the end). Reads at most `scan` index rows."""
    parameters = {
        "priority": after.priority, "scheduled_at": after.scheduled_at, "id": after.id,
        "scan": scan, "page": page + 1, **filters,
    }  # fmt: skip
    found = (await conn.execute(LIVE_PAGE, parameters)).all()
    rows = [r for r in found if not r.edge]
    edge = [r for r in found if r.edge]
    if len(rows) > page:
        last = rows[page - 1]
        return rows[:page], Cursor(last.priority, last.scheduled_at, last.id)
    if edge and edge[0].window_rows >= scan:  # a full window: more may follow it
        return rows, Cursor(edge[0].priority, edge[0].scheduled_at, edge[0].id)
    return rows, None


async def parked_page(
    conn: AsyncConnection,
    after: ParkedCursor,
    *,
    queue: str | None,
    task_name: str | None,
    page: int,
) -> list[Row[Any]]:
    """Up to `page` parked tasks after `after`, newest failure first (as `failed_tasks`)."""
    parameters = {"failed_at": after.failed_at, "id": after.id, "queue": queue,
                  "task_name": task_name, "page": page}  # fmt: skip
    return list((await conn.execute(PARKED_PAGE, parameters)).all())


async def periodic(conn: AsyncConnection) -> list[Row[Any]]:
    return list((await conn.execute(PERIODIC)).all())


async def workers(conn: AsyncConnection) -> list[Row[Any]]:
    """The supervisor's and the claim loops' connections; `idle_seconds` is the heartbeat age
    (since the last statement finished: a claim loop polls at least every poll interval)."""
    return list((await conn.execute(WORKERS)).all())


async def queue_settings(conn: AsyncConnection) -> dict[str, QueueSettings]:
    """Flow control's settings (pause, limits) by queue: the rows every runner obeys, read by
    the statement the runners read them with (a handful of rows, docs/flow-control.md)."""
    return {s.queue: s for s in await claim.queue_settings(conn)}


async def plan(conn: AsyncConnection, name: str, *, analyze: bool = False) -> str:
    """EXPLAIN (ANALYZE if asked) of one page statement, with its typical parameters."""
    statement, parameters = PAGE_STATEMENTS[name]
    explain = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
    result = await conn.execute(text(explain + statement.text), parameters)
    return "\n".join(result.scalars())
