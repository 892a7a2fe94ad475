"""Cron arithmetic: the slots of a five-field expression, in UTC.

A slot is an instant the expression matches. Parsing and stepping are cronsim's (the parser
healthchecks.io runs on). This module knows nothing of tasks or schedules.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cronsim


def latest_slot(cron: str, now: datetime) -> datetime:
    """The last slot of `cron` at or before `now`, in UTC."""
    # cronsim steps one second back before it searches: start one second after `now` (whole
    # seconds; slots have none) so that a slot equal to `now` counts.
    start = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    return next(cronsim.CronSim(cron, start, reverse=True))


def next_slot(cron: str, now: datetime) -> datetime:
    """The first slot of `cron` after `now`, in UTC."""
    return next(cronsim.CronSim(cron, now.astimezone(UTC)))


def cron_problem(cron: object) -> str | None:
    """Why `cron` is not a five-field cron expression that ever fires, or None if it is."""
    if not isinstance(cron, str):
        return f"cron must be a string such as '*/5 * * * *', not {cron!r}"
    if len(cron.split()) != 5:
        return (
            f"cron {cron!r} must have five fields (minute hour day-of-month month "
            "day-of-week), e.g. '*/5 * * * *'"
        )
    try:
        next(cronsim.CronSim(cron, datetime(2000, 1, 1, tzinfo=UTC)))
    except (cronsim.CronSimError, ValueError, StopIteration) as exc:
        return f"cron {cron!r} is not a valid expression ({exc or type(exc).__name__})"
    return None
