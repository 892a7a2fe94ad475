"""What makes a function a task, and the checks of the options `@task` and `enqueue()` share.

Each `*_problem` function returns why a value is refused, or None; `@task` raises the problem
as TaskDefinitionError (at import), `enqueue()` as InvalidOption (at the call). The rest raise
TaskDefinitionError themselves, naming the function.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import cron, errors, payloads

AnyFunction = Callable[..., Awaitable[Any]]

PRIORITY_RANGE = range(-32768, 32768)
"""The priority column is a smallint."""
DEFAULT_QUEUE = "default"


BIGINT = (-(2**63), 2**63 - 1)
"""The range of a task id: the id columns are PostgreSQL `bigint` (8 bytes, signed)."""


def task_id_problem(task_id: object) -> str | None:
    """Why `task_id` can be no task's id (not an int, or outside `bigint`); None if it can be.
    Checked before a statement, which would otherwise fail with the driver's own error."""
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        return f"a task id is an int, not {task_id!r}"
    if not BIGINT[0] <= task_id <= BIGINT[1]:
        return f"task ids are PostgreSQL bigint (-2**63 to 2**63-1): {task_id} is out of range"
    return None


def checked_task_ids(*task_ids: object, where: str) -> None:
    """InvalidOption (naming `where`, the function called) for the first id that is no task's."""
    for task_id in task_ids:
        problem = task_id_problem(task_id)
        if problem is not None:
            raise errors.InvalidOption(option="task_id", problem=problem, where=where)


def queue_problem(queue: object) -> str | None:
    if not isinstance(queue, str) or not queue:
        return f"queue must be a non-empty string, not {queue!r}"
    return text_problem("queue", queue)


def text_problem(name: str, value: str) -> str | None:
    """A string PostgreSQL cannot store in a text column: a NUL, or a lone surrogate (not
    UTF-8). Refused here, or the caller's transaction would fail at the insert."""
    if value.isascii() and "\x00" not in value:
        return None
    if "\x00" in value:
        return f"{name} must not contain a NUL character (\\x00), not {value!r}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{name} must be valid Unicode text (no lone surrogates), not {value!r}"
    return None


def priority_problem(priority: object) -> str | None:
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or priority not in PRIORITY_RANGE
    ):
        return (
            f"priority must be an integer in [{PRIORITY_RANGE.start}, {PRIORITY_RANGE.stop - 1}], "
            f"not {priority!r}"
        )
    return None


def seconds_problem(name: str, value: object, *, zero_ok: bool) -> str | None:
    """`value` must be a finite number of seconds, positive (or zero when `zero_ok`), and at
    most errors.LONGEST_WAIT (a century)."""
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if zero_ok else value > 0)
        and value <= errors.LONGEST_WAIT
    )
    if ok:
        return None
    what = "zero or a positive" if zero_ok else "a positive"
    return f"{name} must be {what} number of seconds up to a century, not {value!r}"


def max_attempts_problem(max_attempts: object) -> str | None:
    if max_attempts is None:
        return None
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        return f"max_attempts must be at least 1 (or None for unlimited), not {max_attempts!r}"
    return None


def default_name(label: str, fn: AnyFunction) -> str:
    module, qualname = fn.__module__, fn.__qualname__
    if module in {"__main__", "__mp_main__"}:
        raise errors.TaskDefinitionError(
            function=label,
            problem="it is defined in __main__, which workers cannot import; "
            "move it into an importable module (or pass name= and import that module)",
        )
    if "<locals>" in qualname:
        raise errors.TaskDefinitionError(
            function=label,
            problem="it is defined inside another function; define tasks at module level",
        )
    return f"{module}:{qualname}"


def parameters(label: str, fn: AnyFunction) -> tuple[type[pydantic.BaseModel], bool]:
    """The payload model, and whether the function takes a session second."""
    if not inspect.iscoroutinefunction(fn):
        raise errors.TaskDefinitionError(function=label, problem="a task must be an `async def`")
    parameters = list(inspect.signature(fn).parameters.values())
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    required_other = [p for p in parameters if p.default is p.empty and p not in positional[:2]]
    if not positional or required_other:
        raise errors.TaskDefinitionError(
            function=label,
            problem="a task takes one required argument, its pydantic payload, and optionally "
            f"a second one annotated AsyncSession (found {[p.name for p in parameters]})",
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise errors.TaskDefinitionError(
            function=label, problem=f"its annotations cannot be resolved ({exc})"
        ) from exc
    model = hints.get(positional[0].name)
    if model is None:
        raise errors.TaskDefinitionError(
            function=label,
            problem=f"annotate {positional[0].name!r} with the pydantic model of the payload",
        )
    if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
        raise errors.TaskDefinitionError(
            function=label,
            problem=f"the payload annotation must be a pydantic BaseModel subclass, not {model!r}",
        )
    problem = payloads.model_problem(model)
    if problem:
        raise errors.TaskDefinitionError(function=label, problem=problem)
    if len(positional) == 1:
        return model, False
    second = hints.get(positional[1].name)
    # The annotation, not the name, says what the runner must pass: a second parameter of any
    # other type is a mistake to report now, not at the first execution.
    if second is not AsyncSession:  # a subclass would promise methods a plain session lacks
        raise errors.TaskDefinitionError(
            function=label,
            problem=f"a task's second parameter must be annotated AsyncSession "
            f"(sqlalchemy.ext.asyncio), not {second!r}; it receives the session whose "
            f"transaction also completes the task",
        )
    return model, True


def result_type(label: str, fn: AnyFunction) -> Any:
    """The type of what the task returns, from its return annotation (Any without one): a
    pydantic model or any type pydantic can write as JSON; refused here otherwise, since a kept
    result is stored as JSON."""
    returns = typing.get_type_hints(fn).get("return", Any)  # resolvable: `parameters` checked
    if returns is None:
        return type(None)
    try:
        pydantic.TypeAdapter(returns).json_schema(mode="serialization")
    except pydantic.PydanticUserError as exc:
        raise errors.TaskDefinitionError(
            function=label,
            problem=f"its return annotation {returns!r} cannot be stored as JSON: return a "
            f"pydantic model or a JSON-able value ({str(exc).partition(chr(10))[0]})",
        ) from exc
    return returns


def cron_payload(label: str, expression: str, model: type[pydantic.BaseModel]) -> str:
    """The payload of every run of a cron task (its model's defaults) as JSON text."""
    problem = cron.cron_problem(expression)
    required = fields_without_defaults(model)
    if problem is None and required:
        problem = (
            f"a cron task is enqueued with its payload's defaults, but {model.__name__} has "
            f"fields without one ({', '.join(required)}); give them defaults, or use "
            "periodic(fn, cron=..., payload=...)"
        )
    if problem:
        raise errors.TaskDefinitionError(function=label, problem=problem)
    try:
        return payloads.dump(label, model, model())
    except (pydantic.ValidationError, errors.PayloadError) as exc:
        raise errors.TaskDefinitionError(
            function=label, problem=f"its payload's defaults do not validate ({exc})"
        ) from exc


def check_options(
    label: str,
    queue: str,
    priority: int,
    timeout: float | None,
    retry_delay: float | None,
    max_attempts: int | None,
    keep: float | None = None,
) -> None:
    problem = (
        queue_problem(queue)
        or priority_problem(priority)
        or (None if timeout is None else seconds_problem("timeout", timeout, zero_ok=False))
        or (
            None
            if retry_delay is None
            else seconds_problem("retry_delay", retry_delay, zero_ok=True)
        )
        or max_attempts_problem(max_attempts)
        or (None if keep is None else seconds_problem("keep", keep, zero_ok=True))
    )
    if problem:
        raise errors.TaskDefinitionError(function=label, problem=problem)


def check_backoff(
    label: str, backoff: str, retry_delay_max: float, concurrency_limit: object = None
) -> None:
    problem = concurrency_limit_problem(concurrency_limit)
    if problem:
        raise errors.TaskDefinitionError(function=label, problem=problem)
    if backoff not in ("fixed", "exponential"):
        raise errors.TaskDefinitionError(
            function=label, problem=f"backoff must be 'fixed' or 'exponential', not {backoff!r}"
        )
    problem = seconds_problem("retry_delay_max", retry_delay_max, zero_ok=True)
    if problem:
        raise errors.TaskDefinitionError(function=label, problem=problem)


def fields_without_defaults(model: type[pydantic.BaseModel]) -> list[str]:
    """The fields a payload built from its defaults would lack: empty for a cron payload."""
    return [name for name, field in model.model_fields.items() if field.is_required()]


def check_flow(label: str, retry_on: object, no_retry_on: object, timezone: object) -> None:
    """The retry filters and time zone of `@task` (docs/flow-control.md)."""
    problem = (
        (None if retry_on is None else exceptions_problem("retry_on", retry_on))
        or exceptions_problem("no_retry_on", no_retry_on)
        or cron.timezone_problem(timezone)
    )
    if problem:
        raise errors.TaskDefinitionError(function=label, problem=problem)


def concurrency_limit_problem(limit: object) -> str | None:
    if limit is None:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        return f"concurrency_limit must be at least 1 (or None for 1 per key), not {limit!r}"
    return None


def exceptions_problem(name: str, value: object) -> str | None:
    if isinstance(value, tuple) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    ):
        return None
    return f"{name} must be a tuple of exception classes, such as (TimeoutError,), not {value!r}"


def schedule_problem(expression: object, timezone: object) -> str | None:
    """Why a schedule's cron expression or time zone cannot fire, or None."""
    return cron.cron_problem(expression) or cron.timezone_problem(timezone)
