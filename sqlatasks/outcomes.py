"""What became of one claimed attempt, as a value: the executor returns it, the completer
writes it (River's job result, Oban's closed result type). No I/O here.

    Completed   returned: delete the row (or move it to the kept tasks)
    Failed      raised or timed out: due again in `retry_in` seconds, or parked (None)
    Released    interrupted by shutdown: back in the queue, the attempt uncounted
    Snoozed     raised Snooze: due again later, the attempt uncounted
    Deferred    no runner here knows the task: back in the queue for one that does
    Cancelled   an operator cancelled it; the cancel deleted the row already
    Committed   a session task committed its writes with its row's deletion
    LeaseLost   the lease passed to another claim before the attempt could finish
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlatasks.rows import ClaimedTask, Keep


@dataclass(frozen=True, slots=True)
class Completed:
    """The task returned: delete its row (moved to the finished tasks when `kept`)."""

    task: ClaimedTask
    kept: Keep | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The attempt failed: due again in `retry_in` seconds, or parked when that is None."""

    task: ClaimedTask
    error: str
    retry_in: float | None


@dataclass(frozen=True, slots=True)
class Released:
    """The attempt was interrupted by shutdown: give the task back, the attempt uncounted."""

    task: ClaimedTask


@dataclass(frozen=True, slots=True)
class Snoozed:
    """The task raised Snooze: due again in `after` seconds, the attempt not counted."""

    task: ClaimedTask
    after: float


@dataclass(frozen=True, slots=True)
class Deferred:
    """No runner here knows the task (errors.TaskUnknown): give it back unrun, the attempt
    uncounted, due again in `after` seconds, with `error` (why) kept in last_error."""

    task: ClaimedTask
    error: str
    after: float


@dataclass(frozen=True, slots=True)
class Cancelled:
    """An operator cancelled the running task. The cancel deleted its row already (see
    `sql.operator.task_cancel`): nothing is left to write."""

    task: ClaimedTask


@dataclass(frozen=True, slots=True)
class Committed:
    """A session task returned, and its transaction committed its writes with the deletion of
    its row: nothing is left to write."""

    task: ClaimedTask


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """A session task returned, but its lease had passed to another claim: its transaction
    rolled back, and the row belongs to that claim. Nothing to write."""

    task: ClaimedTask


Outcome = Completed | Failed | Released | Snoozed | Deferred | Cancelled | Committed | LeaseLost
WRITTEN_ELSEWHERE = (Committed, LeaseLost, Cancelled)
"""Outcomes whose row the completer must not touch."""
