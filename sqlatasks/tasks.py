"""`@task`: an `async def` taking one pydantic model becomes a `Task`, registered by name.

A task may take a second parameter annotated `AsyncSession`: the runner then passes a session
whose transaction also deletes the task's row, so the task's writes in that session happen
exactly once (docs/exactly-once.md).

A task's name is `module:qualname` unless `@task(name=...)` says otherwise. The name is what
the queue row stores, so it is the contract between producers and workers: renaming a function
while keeping `name=` keeps old rows runnable.
"""

from __future__ import annotations

import inspect
import math
import random
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, overload

import pydantic
import pydantic_core
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import errors, registry, schedules

PayloadT = TypeVar("PayloadT", bound=pydantic.BaseModel)
TaskFunction = Callable[[PayloadT], Awaitable[Any]]
SessionTaskFunction = Callable[[PayloadT, AsyncSession], Awaitable[Any]]
AnyTaskFunction = TaskFunction[PayloadT] | SessionTaskFunction[PayloadT]

PRIORITY_RANGE = range(-32768, 32768)  # the column is a smallint
Backoff = Literal["fixed", "exponential"]
DEFAULT_QUEUE = "default"


@dataclass(frozen=True, eq=False)
class Task(Generic[PayloadT]):
    """A registered task: the function, its payload model, and its defaults.

    Calling it runs the function directly, in-process, with no queue involved (a session task
    needs the caller's session: `await fn(payload, session)`).
    """

    function: AnyTaskFunction[PayloadT]
    name: str
    model: type[PayloadT]
    wants_session: bool = False
    """The function takes a second parameter, an AsyncSession in the transaction that also
    deletes the task's row."""
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    timeout: float | None = None
    """Seconds one attempt may run; None means the runner's --task-timeout."""
    retry_delay: float | None = None
    """Seconds before a failed attempt is due again; None means the runner's --retry-delay."""
    backoff: Backoff = "fixed"
    """"fixed": every retry waits retry_delay. "exponential": attempt n waits
    retry_delay * 2^(n-1), capped at retry_delay_max, with jitter (between half and all of it)."""
    retry_delay_max: float = 3600.0
    max_attempts: int | None = None
    """Attempts before the task is parked as failed; None means unlimited."""

    async def __call__(self, payload: PayloadT, session: AsyncSession | None = None) -> Any:
        if not self.wants_session:
            if session is not None:
                raise TypeError(f"task {self.name!r} takes no session")
            return await typing.cast(TaskFunction[PayloadT], self.function)(payload)
        if session is None:
            raise TypeError(
                f"task {self.name!r} writes through a session: call it as "
                "`await task(payload, session)`"
            )
        return await typing.cast(SessionTaskFunction[PayloadT], self.function)(payload, session)

    def retry_in(self, attempt: int, default_delay: float) -> float:
        """Seconds before attempt `attempt` (1 = the first, which just failed) runs again."""
        base = default_delay if self.retry_delay is None else self.retry_delay
        if self.backoff == "fixed":
            return base
        capped = min(self.retry_delay_max, base * 2.0 ** min(attempt - 1, 60))
        return capped * random.uniform(0.5, 1.0)  # jitter: retries of a burst spread out

    def dump(self, payload: PayloadT | Mapping[str, Any]) -> str:
        """The payload as JSON text, or PayloadError if it is not a valid `self.model`."""
        try:
            if isinstance(payload, self.model):
                return payload.model_dump_json()
            if isinstance(payload, pydantic.BaseModel):
                raise errors.PayloadError(
                    task_name=self.name,
                    problem=f"expected {self.model.__name__}, got {type(payload).__name__}",
                )
            if isinstance(payload, Mapping):
                return self.model.model_validate(payload).model_dump_json()
        except (pydantic.ValidationError, pydantic_core.PydanticSerializationError) as exc:
            raise errors.PayloadError(task_name=self.name, problem=str(exc)) from exc
        raise errors.PayloadError(
            task_name=self.name,
            problem=f"expected {self.model.__name__} or a mapping, got {type(payload).__name__}",
        )

    def load(self, text: str) -> PayloadT:
        """The payload model validated from JSON text, or PayloadError."""
        try:
            return self.model.model_validate_json(text)
        except pydantic.ValidationError as exc:
            raise errors.PayloadError(task_name=self.name, problem=str(exc)) from exc


class _Decorator(Protocol):
    @overload
    def __call__(self, function: TaskFunction[PayloadT], /) -> Task[PayloadT]: ...
    @overload
    def __call__(self, function: SessionTaskFunction[PayloadT], /) -> Task[PayloadT]: ...


@overload
def task(function: TaskFunction[PayloadT], /) -> Task[PayloadT]: ...


@overload
def task(function: SessionTaskFunction[PayloadT], /) -> Task[PayloadT]: ...


@overload
def task(
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    timeout: float | None = None,
    retry_delay: float | None = None,
    backoff: Backoff = "fixed",
    retry_delay_max: float = 3600.0,
    max_attempts: int | None = None,
    cron: str | None = None,
) -> _Decorator: ...


def task(
    function: AnyTaskFunction[Any] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    timeout: float | None = None,
    retry_delay: float | None = None,
    backoff: Backoff = "fixed",
    retry_delay_max: float = 3600.0,
    max_attempts: int | None = None,
    cron: str | None = None,
) -> Task[Any] | _Decorator:
    """Register an `async def f(payload: SomeModel)` as a task; usable as `@task` or `@task(...)`.

    `async def f(payload: SomeModel, session: AsyncSession)` asks for a session whose
    transaction commits the task's writes together with the deletion of its row.

    With `cron` (five fields, UTC, e.g. "*/5 * * * *"), runners also enqueue it once per slot
    of that expression, with the payload model built from its defaults (see `periodic`).

    Every problem a worker would meet later (a sync function, a payload that is not a pydantic
    model, a function workers cannot import, a name already taken, a bad cron expression, a
    cron payload with required fields) is raised here, at import.
    """

    def decorate(fn: AnyTaskFunction[Any]) -> Task[Any]:
        label = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        _check_options(label, queue, priority, timeout, retry_delay, max_attempts)
        _check_backoff(label, backoff, retry_delay_max)
        model, wants_session = _parameters(label, fn)
        cron_payload = None if cron is None else _cron_payload(label, cron, model)
        built = Task(
            function=fn,
            name=name if name is not None else _default_name(label, fn),
            model=model,
            wants_session=wants_session,
            queue=queue,
            priority=priority,
            timeout=timeout,
            retry_delay=retry_delay,
            backoff=backoff,
            retry_delay_max=retry_delay_max,
            max_attempts=max_attempts,
        )
        registry.add(built)
        if cron is not None and cron_payload is not None:  # both or neither
            schedules.add(schedules.Schedule(built.name, built, cron, cron_payload))
        return built

    if function is not None:
        return decorate(function)
    return typing.cast(_Decorator, decorate)


def _default_name(label: str, fn: AnyTaskFunction[Any]) -> str:
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


def _parameters(label: str, fn: AnyTaskFunction[Any]) -> tuple[type[pydantic.BaseModel], bool]:
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


def _cron_payload(label: str, cron: str, model: type[pydantic.BaseModel]) -> str:
    """The payload of every run of a cron task (its model's defaults) as JSON text."""
    problem = schedules.cron_problem(cron)
    required = schedules.fields_without_defaults(model)
    if problem is None and required:
        problem = (
            f"a cron task is enqueued with its payload's defaults, but {model.__name__} has "
            f"fields without one ({', '.join(required)}); give them defaults, or use "
            "periodic(fn, cron=..., payload=...)"
        )
    if problem:
        raise errors.TaskDefinitionError(function=label, problem=problem)
    try:
        return model().model_dump_json()
    except (pydantic.ValidationError, pydantic_core.PydanticSerializationError) as exc:
        raise errors.TaskDefinitionError(
            function=label, problem=f"its payload's defaults do not validate ({exc})"
        ) from exc


def _check_options(
    label: str,
    queue: str,
    priority: int,
    timeout: float | None,
    retry_delay: float | None,
    max_attempts: int | None,
) -> None:
    problem = None
    if not queue:
        problem = "queue must be a non-empty string"
    elif priority not in PRIORITY_RANGE:
        problem = f"priority must be an integer in [{PRIORITY_RANGE.start}, 32767]"
    elif timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        problem = "timeout must be a positive number of seconds"
    elif retry_delay is not None and not (retry_delay >= 0 and math.isfinite(retry_delay)):
        problem = "retry_delay must be zero or a positive number of seconds"
    elif max_attempts is not None and max_attempts < 1:
        problem = "max_attempts must be at least 1 (or None for unlimited)"
    if problem:
        raise errors.TaskDefinitionError(function=label, problem=problem)


def _check_backoff(label: str, backoff: str, retry_delay_max: float) -> None:
    if backoff not in ("fixed", "exponential"):
        raise errors.TaskDefinitionError(
            function=label, problem=f"backoff must be 'fixed' or 'exponential', not {backoff!r}"
        )
    if not (retry_delay_max >= 0 and math.isfinite(retry_delay_max)):
        raise errors.TaskDefinitionError(
            function=label, problem="retry_delay_max must be zero or a positive number of seconds"
        )
