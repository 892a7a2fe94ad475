"""Telling how an attempt ended: the log lines, the hooks' events, the metrics' labels.

Nothing here can fail the task's bookkeeping: hooks' errors are logged by `hooks.emit`, and
an outcome this module does not know still gets a name.
"""

from __future__ import annotations

import logging

from sqlatasks import hooks
from sqlatasks.outcomes import Failed, LeaseLost, Outcome
from sqlatasks.rows import ClaimedTask

log = logging.getLogger("sqlatasks.dispatcher")  # the runner's lines about task outcomes

TRACEBACK_LINES = 6
"""Lines of a failed task's traceback (its tail) in its log line."""


OUTCOME_NAMES = {
    "Completed": "completed",
    "Committed": "completed",
    "Released": "released",
    "Snoozed": "snoozed",
    "Deferred": "deferred",
    "Cancelled": "cancelled",
    "LeaseLost": "lease_lost",
}


def outcome_name(outcome: Outcome) -> str:
    """The outcome's label in logs, events and metrics: completed, retry, parked, ..."""
    if isinstance(outcome, Failed):
        return "parked" if outcome.retry_in is None else "retry"
    kind = type(outcome).__name__
    return OUTCOME_NAMES.get(kind, kind.lower())


def report(outcome: Outcome, duration: float) -> None:
    """Log a task's end at DEBUG, and tell the hooks: end, and retry or park."""
    claimed, name = outcome.task, outcome_name(outcome)
    if log.isEnabledFor(logging.DEBUG):  # no record's arguments built per task when off
        log.debug(
            "task %d %s attempt %d ended: %s in %.3f s",
            claimed.id,
            claimed.task_name,
            claimed.attempts,
            name,
            duration,
            extra={"outcome": name, "duration": duration},
        )
    base = (claimed.task_name, claimed.queue, claimed.id, claimed.attempts)
    if hooks.wanted("end"):  # no event built per task for no one
        hooks.emit(hooks.Event("end", *base, outcome=name, duration=duration))
    if isinstance(outcome, Failed):
        kind: hooks.EventKind = "park" if outcome.retry_in is None else "retry"
        hooks.emit(hooks.Event(kind, *base, outcome=name, error=outcome.error))


def log_failure(claimed: ClaimedTask, outcome: Outcome) -> None:
    """Log an attempt that failed (WARNING, or ERROR when parked) or lost its lease."""
    if isinstance(outcome, LeaseLost):
        log.warning(
            "task %d %s attempt %d lost its lease before it could commit: its "
            "transaction was rolled back (another claim took it over, or it was cancelled)",
            claimed.id,
            claimed.task_name,
            claimed.attempts,
        )
    elif isinstance(outcome, Failed):
        first_line, _, traceback = outcome.error.partition("\n")
        # The traceback's tail on lines of their own: where it failed, without a debugger.
        tail = "".join(f"\n    {line}" for line in traceback.splitlines()[-TRACEBACK_LINES:])
        if outcome.retry_in is None:
            log.error(
                "task %d %s attempt %d failed and is parked: %s%s",
                claimed.id,
                claimed.task_name,
                claimed.attempts,
                first_line,
                tail,
            )
        else:
            log.warning(
                "task %d %s attempt %d failed: %s; due again in %g s%s",
                claimed.id,
                claimed.task_name,
                claimed.attempts,
                first_line,
                outcome.retry_in,
                tail,
            )
