"""The queue row, mapped for the ORM: what `enqueue()` returns and the caller `session.add()`s.

The table itself is created by the versioned DDL in `sqlatasks.migrations`; a test checks that
this mapping and `alembic upgrade head` agree.

Where the objects live is fixed here, once, at import: `SCHEMA`, from SQLATASKS_SCHEMA. Unset
(the default), every name below is bare and found through the connection's `search_path`, as
before the option existed; set, every table and function name is qualified
(`"jobs".sqlatasks_tasks`), and so is every statement built from these constants, whatever the
caller's `search_path`
(docs/integration.md, "A schema of its own").
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Dialect,
    Double,
    FetchedValue,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Text,
    Uuid,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from sqlatasks import settings

SCHEMA = settings.schema_from_environment()
"""The PostgreSQL schema of sqlatasks' tables and functions (SQLATASKS_SCHEMA), or None: bare
names, resolved through `search_path` (normally `public`)."""


def qualified(name: str) -> str:
    """`name` as SQL in sqlatasks' schema: `"jobs".name`, or `name` itself when none is set
    (so the default's statements are byte for byte what they were)."""
    return name if SCHEMA is None else f'"{SCHEMA}".{name}'


TABLE_NAME = qualified("sqlatasks_tasks")
PERIODIC_TABLE_NAME = qualified("sqlatasks_periodic")
CLAIM_INDEX_NAME = "sqlatasks_tasks_claim_idx"
UNIQUE_KEY_INDEX_NAME = "sqlatasks_tasks_unique_key_idx"
FINISHED_TABLE_NAME = qualified("sqlatasks_finished")
CONCURRENCY_KEY_INDEX_NAME = "sqlatasks_tasks_concurrency_key_idx"
PARKED_INDEX_NAME = "sqlatasks_tasks_parked_idx"
QUEUES_TABLE_NAME = qualified("sqlatasks_queues")
KEY_ADMITS_FUNCTION = qualified("sqlatasks_key_admits")  # v5: a concurrency key's room
QUEUE_ROOM_FUNCTION = qualified("sqlatasks_queue_room")  # v5: a queue's room
THROUGHPUT_TABLE_NAME = qualified("sqlatasks_throughput")
SCHEMA_VERSION = 9  # the migration version this mapping matches
SCHEMA_COMMENT_PREFIX = "sqlatasks schema version "


def schema_version(comment: str | None) -> int:
    """The schema version a queue table's comment records; 0 when it records none."""
    number = (comment or "").removeprefix(SCHEMA_COMMENT_PREFIX)
    return int(number) if comment and comment != number and number.isdigit() else 0


NOTIFY_CHANNEL = "sqlatasks"  # the v1 trigger notifies this channel on every insert
# Payload: the id of a running task to interrupt. One channel per schema: channels are per
# database, and task ids of two schemas' queues overlap.
CANCEL_CHANNEL = "sqlatasks_cancel" if SCHEMA is None else f"sqlatasks_cancel_{SCHEMA}"
FINISHED_CHANNEL = "sqlatasks_finished"  # payload: ids of tasks just kept or parked, "1,2,3"


class JsonText(TypeDecorator[Any]):
    """JSONB written from JSON text as is.

    Payloads are serialised once, by pydantic (`model_dump_json`); the asyncpg adapter's JSONB
    codec takes text, so skipping SQLAlchemy's own `json.dumps` avoids a second encoding.
    Reading gives what the adapter's codec gives: the decoded JSON value.
    """

    impl = JSONB
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


class Base(DeclarativeBase):
    """sqlatasks' own metadata; separate from the application's so it never creates our table."""

    metadata = MetaData()


class QueuedTask(Base):
    """One task that is due, scheduled, running, or parked as failed.

    Finished tasks are deleted, so the table holds only live work and stays small.
    """

    __tablename__ = "sqlatasks_tasks"
    __table_args__ = (
        CheckConstraint(
            "on_duplicate IN ('skip', 'report')", name="sqlatasks_tasks_on_duplicate_check"
        ),
        {"comment": f"{SCHEMA_COMMENT_PREFIX}{SCHEMA_VERSION}", "schema": SCHEMA},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    task_name: Mapped[str] = mapped_column(Text)
    payload: Mapped[Any] = mapped_column(JsonText)
    queue: Mapped[str] = mapped_column(Text, server_default="default")
    priority: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    scheduled_at: Mapped[datetime] = mapped_column(
        TIMESTAMP(timezone=True), server_default=func.now()
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int | None] = mapped_column(Integer)
    locked_until: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    locked_by: Mapped[str | None] = mapped_column(Text)
    lease_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # FetchedValue: the unique-key trigger may set these at insert (a duplicate is inserted
    # parked); the ORM then reads them back in the INSERT's RETURNING instead of assuming NULL.
    last_error: Mapped[str | None] = mapped_column(Text, server_default=FetchedValue())
    failed_at: Mapped[datetime | None] = mapped_column(
        TIMESTAMP(timezone=True), server_default=FetchedValue()
    )
    created_at: Mapped[datetime] = mapped_column(
        TIMESTAMP(timezone=True), server_default=func.now()
    )
    unique_key: Mapped[str | None] = mapped_column(Text)
    on_duplicate: Mapped[str | None] = mapped_column(Text)
    duplicate_of: Mapped[int | None] = mapped_column(BigInteger, server_default=FetchedValue())
    """Set by the database at insert when a live task already held `unique_key`: that task's id.
    Read it after `session.flush()`; None means this row was added."""
    concurrency_key: Mapped[str | None] = mapped_column(Text)
    """At most `concurrency_limit` tasks with this key run at once, across every runner."""
    concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[Any | None] = mapped_column(JSONB)
    """The last progress value its attempt reported (schema version 7; see
    `sqlatasks.context.TaskRun.report`): {"value", "reported_at", "attempt"}, or None."""
    # evaluates_none: an unset context is left out of the ORM's INSERT (else it names the
    # column, NULL), so an untraced enqueue() runs on a database not yet at version 8.
    trace_context: Mapped[Any | None] = mapped_column(JsonText().evaluates_none())
    """The OpenTelemetry context `enqueue()` recorded (schema version 8), as the JSON text of
    the global propagator's carrier, e.g. '{"traceparent": "00-..."}'; None when nothing was
    traced (docs/tracing.md)."""

    def __repr__(self) -> str:
        return f"<QueuedTask id={self.id} {self.task_name} queue={self.queue!r}>"


class ScheduleSlot(Base):
    """The last slot fired of one periodic schedule (schema version 3).

    Written only by runners, through `sqlatasks.sql.periodic`; mapped here so that the migrations
    test can check it against `alembic upgrade head`.
    """

    __tablename__ = "sqlatasks_periodic"
    __table_args__ = ({"schema": SCHEMA},)

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    cron: Mapped[str] = mapped_column(Text)
    last_slot: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True))


class FinishedTask(Base):
    """A finished task kept for `get_task` (schema version 4), until `keep_until`.

    Written only by the completer and a session task's transaction (sqlatasks.sql.outcomes);
    mapped here so that the migrations test can check it against `alembic upgrade head`.
    """

    __tablename__ = "sqlatasks_finished"
    __table_args__ = (
        CheckConstraint(
            "state IN ('completed', 'cancelled')", name="sqlatasks_finished_state_check"
        ),
        {"schema": SCHEMA},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    task_name: Mapped[str] = mapped_column(Text)
    queue: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text)
    payload: Mapped[Any] = mapped_column(JSONB)
    result: Mapped[Any | None] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    unique_key: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(
        TIMESTAMP(timezone=True), server_default=func.now()
    )
    keep_until: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True))
    progress: Mapped[Any | None] = mapped_column(JSONB)
    """Its last progress as it left the queue (schema version 7)."""


Index("sqlatasks_finished_keep_until_idx", FinishedTask.keep_until)
Index(
    "sqlatasks_finished_unique_key_idx",
    FinishedTask.unique_key,
    FinishedTask.id,
    postgresql_where=FinishedTask.unique_key.isnot(None),
)


class QueueSettings(Base):
    """What every runner obeys about one queue (schema version 5): paused, running at most
    `max_running`, starting at most `per_second`. Written by `sqlatasks.operations`; the claim
    reads it (docs/flow-control.md)."""

    __tablename__ = "sqlatasks_queues"
    __table_args__ = (
        CheckConstraint("max_running >= 0", name="sqlatasks_queues_max_running_check"),
        CheckConstraint("per_second > 0", name="sqlatasks_queues_per_second_check"),
        {"schema": SCHEMA},
    )

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, server_default=false())
    max_running: Mapped[int | None] = mapped_column(Integer)
    per_second: Mapped[float | None] = mapped_column(Double)
    next_start: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))


class ThroughputMinute(Base):
    """One worker's outcome counts of one queue in one minute (schema version 9): the
    dashboard's chart. Added to by the worker every `throughput_interval` seconds
    (sqlatasks.throughput), deleted after two hours by the scheduler."""

    __tablename__ = "sqlatasks_throughput"
    __table_args__ = ({"schema": SCHEMA},)

    minute: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True), primary_key=True)
    queue: Mapped[str] = mapped_column(Text, primary_key=True)
    worker: Mapped[str] = mapped_column(Text, primary_key=True)
    completed: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    """Parked: the attempt failed and left none."""
    retried: Mapped[int] = mapped_column(Integer, server_default="0")
    """The attempt failed and the task is due again later."""


Index(
    CLAIM_INDEX_NAME,
    QueuedTask.priority.desc(),
    QueuedTask.scheduled_at,
    QueuedTask.id,
    postgresql_where=QueuedTask.failed_at.is_(None),
)
Index(
    UNIQUE_KEY_INDEX_NAME,
    QueuedTask.unique_key,
    unique=True,
    postgresql_where=QueuedTask.unique_key.isnot(None) & QueuedTask.failed_at.is_(None),
)
Index(
    CONCURRENCY_KEY_INDEX_NAME,
    QueuedTask.concurrency_key,
    postgresql_where=QueuedTask.concurrency_key.isnot(None) & QueuedTask.failed_at.is_(None),
)
Index(
    PARKED_INDEX_NAME,
    QueuedTask.failed_at.desc(),
    QueuedTask.id.desc(),
    postgresql_where=QueuedTask.failed_at.isnot(None),
)
