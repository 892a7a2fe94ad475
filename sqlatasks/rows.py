"""Plain records passed between layers: what a statement returns, or takes in bulk.

No module here talks to the database; `sqlatasks.sql` builds and consumes these, and the
layers above (execution, completer, operator API) pass them around.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

TaskState = Literal["scheduled", "queued", "running", "failed", "completed", "cancelled"]
FINAL_STATES: frozenset[TaskState] = frozenset({"failed", "completed", "cancelled"})
"""States a task leaves only by an operator's hand (retry, purge) or by pruning."""


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
    trace_context: str | None = None
    """The enqueue's trace context, JSON text (sqlatasks.tracing); None when none was kept."""


@dataclass(frozen=True, slots=True)
class Keep:
    """A finished task to keep in the finished-tasks table for `seconds`."""

    seconds: float
    result: str | None
    """What the task returned, as JSON text; None when it returned None (or is cancelled)."""
    ran_for: float | None
    """Seconds its last attempt ran, by the worker's clock, from which the database derives
    started_at; None when unknown (a cancel)."""


@dataclass(frozen=True, slots=True)
class Finished:
    """A finished task to move from the queue to the finished-tasks table, if its lease holds."""

    id: int
    lease_token: uuid.UUID
    state: Literal["completed", "cancelled"]
    keep: Keep


@dataclass(frozen=True, slots=True)
class Progress:
    """The last progress value a task reported (`current_task().report(...)`) and a worker
    wrote, as `get_task()` shows it."""

    value: Any
    """The decoded JSON of what the task reported (a model reported comes back as a dict)."""
    reported_at: datetime | None
    """When the task reported it (the database's clock at the write, less the seconds the
    value waited in the worker), at most `context.PROGRESS_PERIOD` before it was written.
    None (and `attempt` None, `value` the whole stored JSON) when the column holds something
    no worker wrote: it was edited by hand."""
    attempt: int | None
    """The attempt that reported it: lower than `TaskInfo.attempts` when the task is running
    again and its new attempt has reported nothing yet."""


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What is known of one task, as `get_task()` returns it (and `sqlatasks show` prints it).

    The state is the database's at the time of the read: `scheduled` (due later), `queued`
    (due), `running` (leased), `failed` (parked), and, for a task that was kept, `completed`
    or `cancelled`.
    """

    id: int
    state: TaskState
    task_name: str
    queue: str
    attempts: int
    max_attempts: int | None
    last_error: str | None
    unique_key: str | None
    enqueued_at: datetime
    scheduled_at: datetime | None
    """When it is (or was last) due; None for a finished task."""
    started_at: datetime | None
    """The last attempt's start, for a finished task (a running one shows `worker` instead)."""
    finished_at: datetime | None
    """When it completed, was cancelled, or was parked."""
    worker: str | None
    """The worker running it, or that ran its last attempt."""
    result: Any = None
    """A kept task's return value: an instance of its return annotation when the task is
    registered in this process, else the decoded JSON."""
    payload: Any = None
    """Only when asked for (`get_task(..., payload=True)`): the decoded JSON."""
    progress: Progress | None = None
    """The last progress reported and written (docs/status.md#progress); None when none was.
    A kept task keeps the progress it had when it left the queue."""


@dataclass(frozen=True, slots=True)
class KeptCount:
    """Kept finished tasks of one queue, as `kept_counts()` and `sqlatasks status` show them."""

    queue: str
    completed: int
    cancelled: int
    oldest_seconds: float | None
    """Age of the oldest kept task (since it finished)."""


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
    trace_context: str | None = None
    """The context every task of the batch records (sqlatasks.tracing), JSON text, or None."""


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
    unknown: int
    """Tasks waiting for a runner that knows them: the last runner to claim each had no such
    task (its last_error says TaskUnknown) and gave it back. Due or scheduled, not failed."""


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
