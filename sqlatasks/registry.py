"""Task name → Task, and the rule for which code a worker may import to find one.

A worker runs only functions that `@task` registered. A row whose task is not registered yet
may cause an import only when its module lies inside one of the packages the runner was told
to import (`--import`); anything else (`os:system`, a typo, an outside module) is refused
without importing it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlatasks import errors

if TYPE_CHECKING:
    from sqlatasks.tasks import Task

_tasks: dict[str, Task[Any]] = {}


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
        raise errors.TaskNotRegistered(
            name=name, problem="no @task is registered under this name"
        ) from None


def all_tasks() -> list[Task[Any]]:
    return list(_tasks.values())


def import_modules(modules: Iterable[str]) -> None:
    """Import the modules a runner was allowed to import, registering their tasks."""
    for module in modules:
        importlib.import_module(module)


def resolve(name: str, allowed: Iterable[str]) -> Task[Any]:
    """The task for a queue row, importing its module only if it lies inside `allowed`."""
    task = _tasks.get(name)
    if task is not None:
        return task
    module, sep, _ = name.partition(":")
    if not sep or not module:
        raise errors.TaskNotRegistered(name=name, problem="a task name has the form module:name")
    if not any(module == package or module.startswith(package + ".") for package in allowed):
        raise errors.TaskNotRegistered(
            name=name,
            problem=f"module {module!r} is outside the allowed imports {sorted(allowed)}; "
            "add it with --import",
        )
    try:
        importlib.import_module(module)
    except Exception as exc:
        raise errors.TaskNotRegistered(
            name=name, problem=f"importing {module!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    return get(name)


def _origin(task: Task[Any]) -> tuple[str, str]:
    return (task.function.__module__, task.function.__qualname__)
