"""Plain records passed between layers: what a statement returns, or takes in bulk.

No module here talks to the database; `sqlatasks.sql` builds and consumes these, and the
layers above (execution, completer, operator API) pass them around.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A row this worker holds under `lease_token` until its lease runs out."""

    id: int
    task_name: str
    queue: str
    payload: str
    """JSON text, validated by the task's model when it runs."""
    attempts: int
    """Attempts including this one."""
    max_attempts: int | None
    lease_token: uuid.UUID


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt to record: due again in `retry_in` seconds, or parked when None."""

    id: int
    lease_token: uuid.UUID
    error: str
    retry_in: float | None


@dataclass(frozen=True, slots=True)
class Batch:
    """What every task of one `enqueue_many` batch shares."""

    task_name: str
    queue: str
    priority: int
    max_attempts: int | None
    delay_seconds: float | None
    """Counted from the database's clock (the transaction's `now()`)."""
    run_at: datetime | None
    on_duplicate: str
    """Of keyed batches: "skip" or "report"."""


@dataclass(frozen=True, slots=True)
class KeyedRow:
    """One payload of a keyed `enqueue_many` batch."""

    payload: str
    """JSON text."""
    unique_key: str | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue's tasks by state, as `queue_stats()` and `sqlatasks status` show them."""

    queue: str
    due: int
    scheduled: int
    running: int
    failed: int
    oldest_due_seconds: float | None
    """Age of the oldest due task (how long it has waited past its due time)."""


@dataclass(frozen=True, slots=True)
class FailedTask:
    """One parked task, as `failed_tasks()` lists it."""

    id: int
    task_name: str
    queue: str
    attempts: int
    failed_at: datetime
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the database says about one schedule; cron and last_slot None if it has no row."""

    name: str
    cron: str | None
    last_slot: datetime | None


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """What every runner obeys about one queue, as `queue_settings()` and `sqlatasks queues`
    show it; None means no limit."""

    queue: str
    paused: bool
    max_running: int | None
    per_second: float | None
