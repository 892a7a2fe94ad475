"""Putting tasks on the queue from the application's own session.

Neither function commits. The tasks become visible to workers only when the caller commits;
if the transaction (or the savepoint they were added in) rolls back, they never existed.
Both take an `AsyncSession` or a synchronous `Session` (docs/drivers.md).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, Literal, TypeVar, get_args, overload

import pydantic
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session
from sqlalchemy.orm import Session, scoped_session
from sqlalchemy.sql.elements import ColumnElement

from sqlatasks import (
    batches,
    definition,
    errors,
    hooks,
    registry,
    rows,
    schema_check,
    tasks,
    tracing,
)
from sqlatasks.models import QueuedTask
from sqlatasks.sql import enqueue as sql

PayloadT = TypeVar("PayloadT", bound=pydantic.BaseModel)
Delay = timedelta | float | int
OnDuplicate = Literal["skip", "report"]
UNIQUE_BATCH = 1000  # rows per INSERT when enqueue_many checks unique keys


def enqueue(
    fn: tasks.Task[PayloadT] | str,
    payload: PayloadT | Mapping[str, Any],
    *,
    queue: str | None = None,
    priority: int | None = None,
    delay: Delay | None = None,
    run_at: datetime | None = None,
    unique_key: str | None = None,
    on_duplicate: OnDuplicate = "skip",
    concurrency_key: str | None = None,
) -> QueuedTask:
    """A new queue row for `fn(payload)`, for the caller to `session.add()`.

    `fn` is a `@task` or its name; a name not registered here (another service's task) takes
    a mapping of JSON values, validated by the worker (`tasks.by_name`, docs/flow-control.md).

    The payload is validated here, and written as the JSON text that a worker loads back equal
    to it: a wrong model, invalid values, or a value that would not survive JSON (a float
    `nan`, a `"\\x00"`, a subclass where the field declares its base, docs/payload-evolution.md)
    raise PayloadError naming the field, before anything reaches the database and without
    disturbing the caller's transaction; a `unique_key` holding a NUL raises InvalidOption.
    `delay` counts from the database's clock at insert time (the transaction's `now()`);
    `run_at` must be timezone-aware.

    With `unique_key`, the task is added only if no live task (queued, scheduled or running;
    not parked) holds the same key. Otherwise the row is a duplicate: after `session.flush()`
    its `duplicate_of` is the live task's id (None when it was added). `on_duplicate="skip"`
    deletes the duplicate at once; `"report"` keeps it parked as failed, with last_error
    "duplicate of task N". Neither raises or disturbs the caller's transaction.

    With `concurrency_key`, at most the task's `concurrency_limit` (1 if it sets none) tasks
    with this key run at once, across every runner, in claim order (docs/flow-control.md).
    """
    task = _task(fn)
    row = QueuedTask(
        task_name=task.name,
        payload=task.dump(payload),
        queue=_queue(task, queue),
        priority=_priority(task, priority),
        max_attempts=task.max_attempts,
    )
    if concurrency_key is not None:
        row.concurrency_key = _key("concurrency_key", concurrency_key)
        row.concurrency_limit = task.concurrency_limit or 1
    _check_on_duplicate(on_duplicate)
    if unique_key is not None:
        row.unique_key = _unique_key(unique_key)
        row.on_duplicate = on_duplicate
    scheduled_at = _scheduled_at(delay, run_at)
    if scheduled_at is not None:
        row.scheduled_at = scheduled_at
    if (context := tracing.enqueue_context(row.queue, row.task_name)) is not None:
        row.trace_context = context  # else unset: the INSERT is the one it was before v8
    hooks.emit(hooks.Event("enqueue", row.task_name, row.queue))
    return row


@overload
def enqueue_many(
    session: AsyncSession | async_scoped_session[Any],
    fn: tasks.Task[PayloadT] | str,
    payloads: Iterable[PayloadT | Mapping[str, Any]],
    *,
    queue: str | None = None,
    priority: int | None = None,
    delay: Delay | None = None,
    run_at: datetime | None = None,
    unique_key: Callable[[PayloadT], str | None] | None = None,
    on_duplicate: OnDuplicate = "skip",
) -> Coroutine[Any, Any, int]: ...


@overload
def enqueue_many(
    session: Session | scoped_session[Any],
    fn: tasks.Task[PayloadT] | str,
    payloads: Iterable[PayloadT | Mapping[str, Any]],
    *,
    queue: str | None = None,
    priority: int | None = None,
    delay: Delay | None = None,
    run_at: datetime | None = None,
    unique_key: Callable[[PayloadT], str | None] | None = None,
    on_duplicate: OnDuplicate = "skip",
) -> int: ...


def enqueue_many(
    session: AsyncSession | async_scoped_session[Any] | Session | scoped_session[Any],
    fn: tasks.Task[PayloadT] | str,
    payloads: Iterable[PayloadT | Mapping[str, Any]],
    *,
    queue: str | None = None,
    priority: int | None = None,
    delay: Delay | None = None,
    run_at: datetime | None = None,
    unique_key: Callable[[PayloadT], str | None] | None = None,
    on_duplicate: OnDuplicate = "skip",
) -> Coroutine[Any, Any, int] | int:
    """Insert one task per payload in the session's transaction by COPY; returns the count.

    With an `AsyncSession` (asyncpg or psycopg 3), await it: `n = await enqueue_many(...)`.
    With a synchronous `Session` (psycopg 3 or psycopg2), call it: `n = enqueue_many(...)`.
    The options are checked at the call, before anything reaches the database.

    `payloads` may be any iterable, a generator included: rows stream to the server as they
    are produced, so a batch is never held in memory whole. A payload `enqueue` would refuse
    raises PayloadError naming the field; the COPY has begun, and its abort aborts the
    caller's transaction: roll it back (a savepoint per COPY would cost a subtransaction).

    `unique_key` maps each payload (as its validated model) to its key, or None for none; the
    rules of `enqueue(unique_key=...)` apply row by row, earlier rows of the same batch
    included. The count is then of tasks added: duplicates, skipped or reported, are not
    counted. Keyed batches go by INSERT in chunks of UNIQUE_BATCH rows instead of COPY, so
    that the count is exact; a bad payload stops them before its chunk is sent.
    """
    task = _task(fn)
    _check_on_duplicate(on_duplicate)
    batch = rows.Batch(
        task_name=task.name,
        queue=_queue(task, queue),
        priority=_priority(task, priority),
        max_attempts=task.max_attempts,
        delay_seconds=_delay_seconds(delay, run_at),
        run_at=run_at,
        on_duplicate=on_duplicate,
    )
    if isinstance(session, scoped_session | async_scoped_session):
        session = session()  # the current session of the scope
    if isinstance(session, Session):
        return _enqueue_many_sync(session, task, batch, payloads, unique_key)
    if isinstance(session, AsyncSession):
        return _enqueue_many(session, task, batch, payloads, unique_key)
    raise TypeError(
        f"enqueue_many() takes an AsyncSession or a Session, not {type(session).__name__}"
    )


async def _enqueue_many(
    session: AsyncSession,
    task: tasks.Task[PayloadT],
    batch: rows.Batch,
    payloads: Iterable[PayloadT | Mapping[str, Any]],
    key_of: Callable[[PayloadT], str | None] | None,
) -> int:
    with tracing.sending_batch(batch.queue, batch.task_name) as sending:
        batch = replace(batch, trace_context=sending.carrier)
        with schema_check.named_when_behind():
            if key_of is None:
                records = batches.Records(task, batch, payloads)
                await sql.task_copy(session, records, batch)
                added = records.count
            else:
                added = 0
                for chunk in _keyed_chunks(task, payloads, key_of):
                    added += await sql.task_insert_keyed(session, chunk, batch)
        sending.sent(added)
        return added


def _enqueue_many_sync(
    session: Session,
    task: tasks.Task[PayloadT],
    batch: rows.Batch,
    payloads: Iterable[PayloadT | Mapping[str, Any]],
    key_of: Callable[[PayloadT], str | None] | None,
) -> int:
    with tracing.sending_batch(batch.queue, batch.task_name) as sending:
        batch = replace(batch, trace_context=sending.carrier)
        with schema_check.named_when_behind():
            if key_of is None:
                records = batches.Records(task, batch, payloads)
                sql.task_copy_sync(session, records, batch)
                added = records.count
            else:
                added = sum(
                    sql.task_insert_keyed_sync(session, chunk, batch)
                    for chunk in _keyed_chunks(task, payloads, key_of)
                )
        sending.sent(added)
        return added


def _keyed_chunks(
    task: tasks.Task[PayloadT],
    payloads: Iterable[PayloadT | Mapping[str, Any]],
    key_of: Callable[[PayloadT], str | None],
) -> Iterator[list[rows.KeyedRow]]:
    """The keyed batch's rows in chunks of UNIQUE_BATCH, validated as they are made."""

    def keyed_rows() -> Iterator[rows.KeyedRow]:
        for payload in payloads:
            text = task.dump(payload)  # validates
            model = payload if isinstance(payload, task.model) else task.load(text)
            key = key_of(model)
            yield rows.KeyedRow(text, None if key is None else _unique_key(key))

    chunks = keyed_rows()
    while chunk := list(islice(chunks, UNIQUE_BATCH)):
        yield chunk


def _unique_key(key: object) -> str:
    return _key("unique_key", key)


def _key(option: str, key: object) -> str:
    if not isinstance(key, str) or not key:
        raise errors.InvalidOption(
            option=option, problem=f"{option} must be a non-empty string, not {key!r}"
        )
    _refuse(option, definition.text_problem(option, key))
    return key


def _check_on_duplicate(on_duplicate: object) -> None:
    if on_duplicate not in get_args(OnDuplicate):
        raise errors.InvalidOption(
            option="on_duplicate",
            problem=f'on_duplicate must be "skip" or "report", not {on_duplicate!r}',
        )


def _task(fn: tasks.Task[Any] | str) -> tasks.Task[Any]:
    if isinstance(fn, tasks.Task):
        return fn
    if isinstance(fn, str):
        return registry.get(fn) if registry.known(fn) else tasks.by_name(fn)
    raise TypeError(f"enqueue() takes a @task or a registered task name, not {fn!r}")


def _queue(task: tasks.Task[Any], queue: str | None) -> str:
    if queue is None:
        return task.queue
    _refuse("queue", definition.queue_problem(queue))
    return queue


def _priority(task: tasks.Task[Any], priority: int | None) -> int:
    if priority is None:
        return task.priority
    _refuse("priority", definition.priority_problem(priority))
    return priority


def _delay_seconds(delay: Delay | None, run_at: datetime | None) -> float | None:
    if delay is not None and run_at is not None:
        raise errors.InvalidOption(option="delay", problem="give delay or run_at, not both")
    if run_at is not None and (
        not isinstance(run_at, datetime) or run_at.tzinfo is None or run_at.utcoffset() is None
    ):
        raise errors.InvalidOption(
            option="run_at",
            problem="run_at must be a timezone-aware datetime, e.g. datetime.now(timezone.utc)",
        )
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    _refuse("delay", definition.seconds_problem("delay", seconds, zero_ok=True))
    return float(seconds)


def _refuse(option: str, problem: str | None) -> None:
    if problem is not None:
        raise errors.InvalidOption(option=option, problem=problem)


def _scheduled_at(
    delay: Delay | None, run_at: datetime | None
) -> datetime | ColumnElement[datetime] | None:
    seconds = _delay_seconds(delay, run_at)
    if seconds is not None:
        return sql.database_now_plus(seconds)
    return run_at
