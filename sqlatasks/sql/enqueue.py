"""The producer's statements: insert tasks in the application's own transaction.

Nothing here commits: the caller's transaction decides whether the tasks ever exist. The
`_sync` twins serve a synchronous `Session`; COPY goes through each driver's own API
(asyncpg's `copy_records_to_table`, psycopg's `cursor.copy`, psycopg2's `copy_expert`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from sqlatasks import errors, rows
from sqlatasks.models import SCHEMA, TABLE_NAME, QueuedTask

COPY_COLUMNS = ("task_name", "queue", "priority", "max_attempts", "payload")

Records = Callable[[datetime | None], Iterator[tuple[Any, ...]]]
"""A batch's rows for COPY_COLUMNS (then scheduled_at, given a due time, then trace_context,
given one), made as they stream."""

# SELECT now(): the due time of delayed rows, and the statement that makes the driver send
# BEGIN before the COPY (see task_copy).
_NOW = text("SELECT now()")


def database_now_plus(seconds: float) -> ColumnElement[datetime]:
    """`now() + seconds`, evaluated by the database when the row is inserted."""
    return func.now() + timedelta(seconds=seconds)


async def task_copy(session: AsyncSession, records: Records, batch: rows.Batch) -> None:
    """COPY the rows in the session's transaction, through asyncpg or psycopg 3 (async)."""
    conn = await session.connection()
    # Run a statement first: the asyncpg adapter sends BEGIN lazily, and a COPY issued on the
    # raw connection before it would run outside the caller's transaction and survive rollback.
    scheduled_at = _scheduled_at((await conn.execute(_NOW)).scalar_one(), batch)
    columns = _columns(scheduled_at, batch)
    driver: Any = (await conn.get_raw_connection()).driver_connection
    name = conn.dialect.driver
    if name == "asyncpg":
        await driver.copy_records_to_table(
            QueuedTask.__tablename__,
            schema_name=SCHEMA,  # asyncpg quotes both names itself
            records=records(scheduled_at),
            columns=columns,
        )
    elif name in PSYCOPG:
        async with driver.cursor() as cursor, cursor.copy(_copy_from_stdin(columns)) as copy:
            for row in records(scheduled_at):
                await copy.write_row(row)
    else:
        raise _no_copy(name)


def task_copy_sync(session: Session, records: Records, batch: rows.Batch) -> None:
    """COPY the rows in the session's transaction, through psycopg 3 or psycopg2 (sync)."""
    conn = session.connection()
    # As in task_copy: the COPY must run inside the transaction that the caller's commit or
    # rollback decides (both drivers begin on the first statement; this one makes it so).
    scheduled_at = _scheduled_at(conn.execute(_NOW).scalar_one(), batch)
    statement = _copy_from_stdin(_columns(scheduled_at, batch))
    driver: Any = conn.connection.driver_connection
    name = conn.dialect.driver
    if name in PSYCOPG:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in records(scheduled_at):
                copy.write_row(row)
    elif name in PSYCOPG2:
        stream = TextCopyStream(records(scheduled_at))
        with driver.cursor() as cursor:
            try:
                cursor.copy_expert(statement, stream)
            except driver.Error:
                # psycopg2 turns an error raised by the rows (a PayloadError) into a
                # QueryCanceled; the caller should see the error itself, as with the others.
                if stream.error is not None:
                    raise stream.error from None
                raise
    else:
        raise _no_copy(name)


PSYCOPG = {"psycopg", "psycopg_async"}
PSYCOPG2 = {"psycopg2", "psycopg2cffi"}


def _scheduled_at(now: datetime, batch: rows.Batch) -> datetime | None:
    if batch.delay_seconds is not None:
        return now + timedelta(seconds=batch.delay_seconds)
    return batch.run_at


def _columns(scheduled_at: datetime | None, batch: rows.Batch) -> tuple[str, ...]:
    timed = () if scheduled_at is None else ("scheduled_at",)
    return (*COPY_COLUMNS, *timed, *(() if batch.trace_context is None else ("trace_context",)))


def _copy_from_stdin(columns: tuple[str, ...]) -> str:
    # -- COPY a batch into the queue table: the fastest path, one statement for any count
    return f"COPY {TABLE_NAME} ({', '.join(columns)}) FROM STDIN"


def _no_copy(driver: str) -> errors.ConfigurationError:
    return errors.ConfigurationError(
        f"enqueue_many needs asyncpg or psycopg (async), or psycopg or psycopg2 (sync), for "
        f"COPY; the session's driver is {driver!r}. Use session.add(enqueue(...)) per task, "
        "or a postgresql+asyncpg:// or postgresql+psycopg:// engine"
    )


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class TextCopyStream:
    """Rows as COPY's text format, read by psycopg2's `copy_expert` in chunks as it sends them:
    tab-separated, NULL as \\N, and backslash, tab, newline and carriage return escaped."""

    def __init__(self, rows: Iterator[tuple[Any, ...]]) -> None:
        self._rows = rows
        self._pending = ""
        self.error: Exception | None = None
        """What making a row raised: copy_expert reports it only as a failed COPY."""

    def read(self, size: int = -1) -> str:
        parts, length = [self._pending], len(self._pending)
        while size < 0 or length < size:
            try:
                row = next(self._rows, None)
            except Exception as exc:
                self.error = exc
                raise
            if row is None:
                break
            line = "\t".join(
                "\\N" if value is None else str(value).translate(_ESCAPES) for value in row
            )
            parts.append(line + "\n")
            length += len(line) + 1
        chunk = "".join(parts)
        cut = len(chunk) if size < 0 else size
        self._pending = chunk[cut:]
        return chunk[:cut]

    def readline(self, size: int = -1) -> str:
        return self.read(size)


_INSERT_KEYED = text(f"""
WITH added AS (
    INSERT INTO {TABLE_NAME} (task_name, queue, priority, max_attempts, scheduled_at,
                              payload, unique_key, on_duplicate, trace_context)
    SELECT :task_name, :queue, :priority, :max_attempts,
           coalesce(CAST(:run_at AS timestamptz),
                    now() + make_interval(secs => coalesce(CAST(:delay AS float8), 0))),
           CAST(row.payload AS jsonb), row.unique_key,
           CASE WHEN row.unique_key IS NOT NULL THEN CAST(:on_duplicate AS text) END,
           CAST(:trace_context AS jsonb)
    -- ORDINALITY + ORDER BY: rows go in as given, so the first of a batch's duplicates wins
    FROM unnest(CAST(:payloads AS text[]), CAST(:keys AS text[]))
         WITH ORDINALITY AS row(payload, unique_key, n)
    ORDER BY row.n
    -- the insert trigger sets duplicate_of; a skipped duplicate is deleted after, yet returned
    RETURNING duplicate_of
)
SELECT count(*) FILTER (WHERE duplicate_of IS NULL) FROM added
""")


_LOCK_KEYS = text(f"""
-- The locks the unique-key trigger takes row by row, taken first in one order (by the lock's
-- own number): two batches with keys in opposite orders would otherwise deadlock.
SELECT pg_advisory_xact_lock(CAST(CAST('{TABLE_NAME}' AS regclass) AS oid)::integer, h)
FROM (SELECT DISTINCT hashtext(k) AS h
      FROM unnest(CAST(:keys AS text[])) AS k WHERE k IS NOT NULL) AS locks
ORDER BY h
""")


async def task_insert_keyed(
    session: AsyncSession, keyed: Sequence[rows.KeyedRow], batch: rows.Batch
) -> int:
    """Insert rows that may carry unique keys, in order, in the session's transaction; returns
    how many were added (not duplicates). A delay counts from the transaction's `now()`."""
    conn = await session.connection()
    keys = [r.unique_key for r in keyed]
    await conn.execute(_LOCK_KEYS, {"keys": keys})
    result = await conn.execute(_INSERT_KEYED, _keyed_parameters(keyed, batch))
    return int(result.scalar_one())


def task_insert_keyed_sync(
    session: Session, keyed: Sequence[rows.KeyedRow], batch: rows.Batch
) -> int:
    """`task_insert_keyed` in a synchronous session."""
    conn = session.connection()
    conn.execute(_LOCK_KEYS, {"keys": [r.unique_key for r in keyed]})
    return int(conn.execute(_INSERT_KEYED, _keyed_parameters(keyed, batch)).scalar_one())


def _keyed_parameters(keyed: Sequence[rows.KeyedRow], batch: rows.Batch) -> dict[str, Any]:
    return {
        "task_name": batch.task_name,
        "queue": batch.queue,
        "priority": batch.priority,
        "max_attempts": batch.max_attempts,
        "run_at": batch.run_at,
        "delay": batch.delay_seconds,
        "on_duplicate": batch.on_duplicate,
        "trace_context": batch.trace_context,
        "payloads": [r.payload for r in keyed],
        "keys": [r.unique_key for r in keyed],
    }
