"""The throughput rollup (schema v9, the dashboard's chart): each worker counts its attempts'
ends per minute and queue in memory, and adds them to the database every
`throughput_interval` seconds, one statement per flush, through its completer's connection.

Off the hot path: counting an outcome is a dictionary increment, no I/O; the flush is one
INSERT … ON CONFLICT per worker per interval, on rows only that worker writes (its id is in the
key), so workers never wait on each other. What a worker counted since its last flush is lost
if it dies (killed, or its database unreachable past its shutdown): the chart then shows
fewer, never more — it is for people watching trends, not an audit (the tasks themselves are
still at-least-once). A flush that fails keeps its counts for the next one.

Minutes are the worker's own clock (UTC, whole minutes since the epoch), taken when the
outcome is counted: a skew between hosts shifts their bars, it loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from sqlatasks.outcomes import Committed, Completed, Failed, Outcome
from sqlatasks.sql import throughput as sql

MINUTE = 60
KEEP = 2 * 3600.0
"""Seconds of minutes the scheduler keeps: the chart's hour, and one more for late flushes."""

Counts = list[tuple[datetime, str, int, int, int]]
"""(minute, queue, completed, failed, retried), one per (minute, queue)."""


class Tally:
    """One worker's outcome counts since its last flush."""

    def __init__(
        self, worker_id: str, *, interval: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.worker_id = worker_id
        self.interval = interval
        """Seconds between flushes."""
        self._clock = clock
        self._counts: dict[tuple[int, str], list[int]] = {}

    def count(self, outcome: Outcome) -> None:
        """Count one attempt's end: completed (also a session task's commit), failed (parked)
        or retried; other outcomes (released, snoozed, cancelled, …) are not counted."""
        if isinstance(outcome, Completed | Committed):
            column = 0
        elif isinstance(outcome, Failed):
            column = 1 if outcome.retry_in is None else 2
        else:
            return
        key = (int(self._clock()) // MINUTE, outcome.task.queue)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0, 0, 0]
        counts[column] += 1

    def take(self) -> Counts:
        """The counts so far, which the tally forgets (`restore` gives them back)."""
        taken, self._counts = self._counts, {}
        return [
            (datetime.fromtimestamp(minute * MINUTE, UTC), queue, c[0], c[1], c[2])
            for (minute, queue), c in taken.items()
        ]

    def restore(self, counts: Counts) -> None:
        """Add back counts that a failed flush did not write."""
        for minute, queue, *values in counts:
            key = (int(minute.timestamp()) // MINUTE, queue)
            kept = self._counts.setdefault(key, [0, 0, 0])
            for column, value in enumerate(values):
                kept[column] += value


async def flush(tally: Tally, conn: AsyncConnection) -> int:
    """Add the tally's counts to the rollup in one statement; how many (minute, queue) rows.
    On an error the counts go back to the tally, and the error is raised."""
    counts = tally.take()
    if not counts:
        return 0
    try:
        await sql.throughput_add(conn, tally.worker_id, counts)
    except BaseException:
        tally.restore(counts)
        raise
    return len(counts)
