"""Cron arithmetic: the slots of a five-field expression, in UTC or in an IANA time zone.

A slot is an instant the expression matches. Parsing and stepping are cronsim's (the parser
healthchecks.io runs on). This module knows nothing of tasks or schedules.

In a zone with daylight saving time the expression reads the wall clock, as Debian's cron does:

- an expression with a fixed minute and hour (`0 2 * * *`) fires once a day whatever the
  clock does: a time skipped when clocks go forward fires at the first minute that exists
  after it (02:00 on the night 02:00 becomes 03:00 fires at 03:00); a time repeated when
  clocks go back fires once, on its first pass;
- any other expression (`*/15 * * * *`, `0 * * * *`) follows the wall clock in real time: it
  never fires in the skipped hour, and fires in both passes of the repeated hour.

Every slot is returned as a UTC instant, so a slot is one instant however it was written.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta, tzinfo

import cronsim


def _zone(timezone: str | None) -> tzinfo:
    return UTC if timezone is None else zoneinfo.ZoneInfo(timezone)


def latest_slot(cron: str, now: datetime, timezone: str | None = None) -> datetime:
    """The last slot of `cron` at or before `now`, in UTC."""
    # cronsim steps one second back before it searches: start one second after `now` (whole
    # seconds; slots have none) so that a slot equal to `now` counts.
    start = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    slot = next(cronsim.CronSim(cron, start.astimezone(_zone(timezone)), reverse=True))
    latest = slot.astimezone(UTC)
    # Stepping back through a repeated hour can land a day early (the wall-clock time of the
    # second pass precedes that of the slot's first pass): step forward to the real latest.
    while (later := next_slot(cron, latest, timezone)) <= now:
        latest = later
    return latest


def next_slot(cron: str, now: datetime, timezone: str | None = None) -> datetime:
    """The first slot of `cron` after `now`, in UTC."""
    slots = cronsim.CronSim(cron, now.astimezone(_zone(timezone)))
    while True:
        # In the second pass of a repeated hour, the wall clock gives a time of the first
        # pass, already past: skip it.
        slot = next(slots).astimezone(UTC)
        if slot > now:
            return slot


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


def timezone_problem(timezone: object) -> str | None:
    """Why `timezone` is not None or an IANA time zone name this machine knows, or None."""
    if timezone is None:
        return None
    if not isinstance(timezone, str):
        return f"timezone must be an IANA name such as 'Europe/Paris', not {timezone!r}"
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        return f"timezone {timezone!r} is not a known IANA time zone ({exc})"
    return None
