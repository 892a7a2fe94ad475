"""The throughput rollup's writes (schema v9): a worker adds its outcome counts, the
scheduler prunes old minutes. The dashboard's read is in `sql/dashboard.py`.

Each worker writes only rows with its own id in the key, so two workers' flushes never touch
the same row; a flush is one statement whatever the number of minutes and queues in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from sqlatasks.models import THROUGHPUT_TABLE_NAME

_ADD = text(f"""
-- one worker's outcome counts per (minute, queue) since its last flush, added to its own rows
INSERT INTO {THROUGHPUT_TABLE_NAME} AS t (minute, queue, worker, completed, failed, retried)
SELECT c.minute, c.queue, :worker, c.completed, c.failed, c.retried
FROM unnest(CAST(:minutes AS timestamptz[]), CAST(:queues AS text[]),
            CAST(:completed AS integer[]), CAST(:failed AS integer[]),
            CAST(:retried AS integer[])) AS c(minute, queue, completed, failed, retried)
ON CONFLICT (minute, queue, worker) DO UPDATE
SET completed = t.completed + excluded.completed,
    failed = t.failed + excluded.failed,
    retried = t.retried + excluded.retried
""")


async def throughput_add(
    conn: AsyncConnection, worker: str, counts: Sequence[tuple[datetime, str, int, int, int]]
) -> None:
    """Add `counts` — (minute, queue, completed, failed, retried) each, one per (minute,
    queue) — to `worker`'s rows, in one statement."""
    columns = list(zip(*counts, strict=True)) if counts else [(), (), (), (), ()]
    names = ("minutes", "queues", "completed", "failed", "retried")
    await conn.execute(
        _ADD, {"worker": worker, **{n: list(c) for n, c in zip(names, columns, strict=True)}}
    )


_PRUNE = text(f"""
-- minutes older than :keep seconds, oldest first, a bounded batch per statement (the primary
-- key's leading column is minute: an index range, never a scan of the table)
DELETE FROM {THROUGHPUT_TABLE_NAME}
WHERE (minute, queue, worker) IN (
    SELECT minute, queue, worker FROM {THROUGHPUT_TABLE_NAME}
    WHERE minute < now() - make_interval(secs => :keep)
    ORDER BY minute LIMIT :batch)
""")


async def throughput_prune(conn: AsyncConnection, *, keep: float, batch: int) -> int:
    """Delete up to `batch` rows of minutes more than `keep` seconds old; how many."""
    return (await conn.execute(_PRUNE, {"keep": keep, "batch": batch})).rowcount
