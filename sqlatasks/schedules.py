"""Periodic tasks: `@task(cron=...)` and `periodic(fn, cron=..., payload=...)`, and their slots.

A schedule is a name, a task, a fixed payload and a cron expression (five fields, UTC). Its
slots are the instants the expression matches. Each slot fires once: the runner that fires it
records the slot in the database in the same statement that enqueues the task, so however
many runners hold the schedule, one wins (see `sqlatasks.scheduler`). Only the latest slot
at or before the database's `now()` is ever fired: a schedule whose runners were down catches
up on that one slot, never on a burst of missed ones.

Cron parsing is cronsim's (the parser healthchecks.io runs on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import cronsim
import pydantic

from sqlatasks import errors

if TYPE_CHECKING:
    from sqlatasks.tasks import Task

PayloadT = TypeVar("PayloadT", bound=pydantic.BaseModel)

_schedules: dict[str, Schedule] = {}


@dataclass(frozen=True, slots=True)
class Schedule:
    """Enqueue `task` with `payload` (JSON text) at every slot of `cron`, once per slot."""

    name: str
    task: Task[Any]
    cron: str
    payload: str

    def latest_slot(self, now: datetime) -> datetime:
        """The last slot at or before `now` (UTC)."""
        # cronsim steps one second back before it searches: start one second after `now`
        # (whole seconds; slots have none) so that a slot equal to `now` counts.
        start = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        return next(cronsim.CronSim(self.cron, start, reverse=True))

    def next_slot(self, now: datetime) -> datetime:
        """The first slot after `now` (UTC)."""
        return next(cronsim.CronSim(self.cron, now.astimezone(UTC)))


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


def fields_without_defaults(model: type[pydantic.BaseModel]) -> list[str]:
    """The fields a payload built from its defaults would lack: empty for a cron payload."""
    return [name for name, field in model.model_fields.items() if field.is_required()]


def periodic(
    fn: Task[PayloadT],
    *,
    cron: str,
    payload: PayloadT | Mapping[str, Any] | None = None,
    name: str | None = None,
) -> Schedule:
    """Enqueue `fn(payload)` at every slot of `cron` (five fields, UTC), once per slot.

    `payload` defaults to the payload model built from its field defaults. `name` (default:
    the task's name) identifies the schedule in the database; give each schedule of one task
    its own. Every problem (a bad expression, an invalid payload, a name taken by a different
    schedule) is raised here, at import, as ScheduleError or PayloadError.
    """
    from sqlatasks.tasks import Task  # tasks imports this module for @task(cron=)

    if not isinstance(fn, Task):
        raise TypeError(f"periodic() takes a @task, not {fn!r}")
    label = name if name is not None else fn.name
    problem = cron_problem(cron)
    if problem:
        raise errors.ScheduleError(name=label, problem=problem)
    if payload is None:
        if fields_without_defaults(fn.model):
            raise errors.ScheduleError(
                name=label,
                problem=f"{fn.model.__name__} has fields without defaults: pass payload=",
            )
        payload = fn.model()
    schedule = Schedule(name=label, task=fn, cron=cron, payload=fn.dump(payload))
    add(schedule)
    return schedule


def add(schedule: Schedule) -> None:
    """Register `schedule`; a different schedule under a taken name is ScheduleError.

    Registering the same schedule again (its module imported again) changes nothing.
    """
    if not schedule.name:
        raise errors.ScheduleError(name=schedule.name, problem="a schedule needs a name")
    existing = _schedules.get(schedule.name)
    if existing is not None and _identity(existing) != _identity(schedule):
        raise errors.ScheduleError(
            name=schedule.name,
            problem="another schedule has this name; give each one its own periodic(name=...)",
        )
    _schedules[schedule.name] = schedule


def all_schedules() -> list[Schedule]:
    return list(_schedules.values())


def _identity(schedule: Schedule) -> tuple[str, str, str]:
    return (schedule.task.name, schedule.cron, schedule.payload)
