"""The tasks and schedules this process knows: name → Task, name → Schedule.

`@task` and `periodic()` add to it at import. A runner imports only the modules it was allowed
(`--import`), and resolves a queue row's task name lazily only inside those packages: a row
naming anything else is never imported.

`resolve` also says what a row that cannot run here should do (docs/runner.md, "Tasks a
runner does not know"): TaskUnknown when another runner may know it (the name is not
registered here, or its module is another part of the application: not among this runner's
imports, or not found in this deploy), so it waits; plain TaskNotRegistered when no runner
of this application should run it (a module of a package none of the imports belongs to, such
as `os:system`; a module that fails to import), so it is parked.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlatasks import cron as cronexpr
from sqlatasks import errors

if TYPE_CHECKING:  # tasks imports this module to register; the names are for types only
    from sqlatasks.tasks import Task


@dataclass(frozen=True, slots=True)
class Schedule:
    """Enqueue `task` with `payload` (JSON text) at every slot of `cron`, once per slot.

    Each slot fires once however many runners hold the schedule (see `sqlatasks.scheduler`);
    only the latest slot at or before the database's `now()` is ever fired, so a schedule whose
    runners were down catches up on that one slot, never on a burst of missed ones.
    """

    name: str
    task: Task[Any]
    cron: str
    payload: str
    timezone: str | None = None
    """The IANA zone the expression reads in; None means UTC."""

    def latest_slot(self, now: datetime) -> datetime:
        """The last slot at or before `now`, in UTC."""
        return cronexpr.latest_slot(self.cron, now, self.timezone)

    def next_slot(self, now: datetime) -> datetime:
        """The first slot after `now`, in UTC."""
        return cronexpr.next_slot(self.cron, now, self.timezone)


_tasks: dict[str, Task[Any]] = {}
_schedules: dict[str, Schedule] = {}


def add(task: Task[Any]) -> None:
    """Register `task`; a different function under a taken name is TaskNameTaken.

    Re-registering the same definition (a module imported again) replaces the entry.
    """
    existing = _tasks.get(task.name)
    if existing is not None and _origin(existing) != _origin(task):
        raise errors.TaskNameTaken(name=task.name)
    _tasks[task.name] = task


def get(name: str) -> Task[Any]:
    """The task registered under `name`, with no import; TaskNotRegistered if there is none."""
    try:
        return _tasks[name]
    except KeyError:
        raise errors.TaskUnknown(
            name=name, problem="no @task is registered under this name"
        ) from None


def known(name: str) -> bool:
    """Whether a task is registered under `name` in this process (no import)."""
    return name in _tasks


def all_tasks() -> list[Task[Any]]:
    return list(_tasks.values())


def import_modules(modules: Iterable[str]) -> None:
    """Import the modules a runner was allowed to import, registering their tasks.

    A module that cannot be imported is a ConfigurationError naming it, in one line; when the
    module itself (or its package) is not found, the line names the current directory and how
    to make the module importable from it.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module + ".").startswith(exc.name + "."):
                raise _module_failed(module, exc) from exc  # a dependency of the module
            raise errors.ConfigurationError(
                f"cannot import {module!r} ({exc}) from the directory {os.getcwd()}: run from "
                "the project's directory, or set PYTHONPATH to it, or `pip install -e .` there"
            ) from exc
        except Exception as exc:
            raise _module_failed(module, exc) from exc


def _module_failed(module: str, exc: Exception) -> errors.ConfigurationError:
    return errors.ConfigurationError(f"importing {module!r} failed: {errors.one_line(exc)}")


def resolve(name: str, allowed: Iterable[str]) -> Task[Any]:
    """The task for a queue row, importing its module only if it lies inside `allowed`.

    Raises TaskUnknown if the row may be another runner's to run, TaskNotRegistered (never
    TaskUnknown) if it names code outside the application's packages or a broken module.
    """
    task = _tasks.get(name)
    if task is not None:
        return task
    allowed = list(allowed)
    module, sep, _ = name.partition(":")
    if not sep or not module:  # a custom @task(name=...) registered by another runner, perhaps
        return get(name)
    if not _inside(module, allowed):
        if not _inside(module, [package.partition(".")[0] for package in allowed]):
            raise errors.TaskNotRegistered(
                name=name,
                problem=f"module {module!r} is outside the allowed imports {sorted(allowed)}; "
                "add it with --import",
            )
        raise errors.TaskUnknown(
            name=name,
            problem=f"module {module!r} is not among this runner's imports {sorted(allowed)}",
        )
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not _inside(module, [exc.name]):
            raise _import_failed(name, module, exc) from exc
        # Not in this deploy (yet): a newer one may have it.
        raise errors.TaskUnknown(name=name, problem=f"module {module!r} is not found") from exc
    except Exception as exc:
        raise _import_failed(name, module, exc) from exc
    return get(name)


def _inside(module: str, packages: Iterable[str]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def _import_failed(name: str, module: str, exc: Exception) -> errors.TaskNotRegistered:
    return errors.TaskNotRegistered(
        name=name, problem=f"importing {module!r} failed: {errors.one_line(exc)}"
    )


def add_schedule(schedule: Schedule) -> None:
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


def _origin(task: Task[Any]) -> tuple[str, str]:
    return (task.function.__module__, task.function.__qualname__)


def _identity(schedule: Schedule) -> tuple[str, str, str, str | None]:
    return (schedule.task.name, schedule.cron, schedule.payload, schedule.timezone)
