"""`@task`: an `async def` taking one pydantic model becomes a `Task`, registered by name.

A task may take a second parameter annotated `AsyncSession`: the runner then passes a session
whose transaction also deletes the task's row, so the task's writes in that session happen
exactly once (docs/exactly-once.md).

A task's name is `module:qualname` unless `@task(name=...)` says otherwise. The name is what
the queue row stores, so it is the contract between producers and workers: renaming a function
while keeping `name=` keeps old rows runnable.
"""

from __future__ import annotations

import functools
import sys
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, overload

import pydantic
from sqlalchemy.ext.asyncio import AsyncSession

from sqlatasks import attempts, definition, errors, payloads, registry
from sqlatasks.attempts import Backoff
from sqlatasks.definition import DEFAULT_QUEUE

PayloadT = TypeVar("PayloadT", bound=pydantic.BaseModel)
TaskFunction = Callable[[PayloadT], Awaitable[Any]]
SessionTaskFunction = Callable[[PayloadT, AsyncSession], Awaitable[Any]]
AnyTaskFunction = TaskFunction[PayloadT] | SessionTaskFunction[PayloadT]


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
    """See `sqlatasks.attempts.RetryPolicy`."""
    retry_delay_max: float = 3600.0
    max_attempts: int | None = None
    """Attempts before the task is parked as failed; None means unlimited."""
    keep: float | None = None
    """Seconds a finished (or cancelled) task is kept for `get_task`, with its result; None
    means the runner's --keep (0 by default: deleted at once)."""
    returns: Any = Any
    """The return annotation: the type of a kept result."""
    concurrency_limit: int | None = None
    """Tasks with one concurrency key running at once, across every runner (1 when None)."""
    retry_on: tuple[type[BaseException], ...] | None = None
    """Only these exceptions (and their subclasses) are retried; None means every one."""
    no_retry_on: tuple[type[BaseException], ...] = ()
    """These exceptions park the task at once, without a retry."""

    async def __call__(self, payload: PayloadT, session: AsyncSession | None = None) -> Any:
        if not self.wants_session:
            if session is not None:
                raise TypeError(f"task {self.name!r} takes no session")
            return await typing.cast("TaskFunction[PayloadT]", self.function)(payload)
        if session is None:
            raise TypeError(
                f"task {self.name!r} writes through a session: call it as "
                "`await task(payload, session)`"
            )
        return await typing.cast("SessionTaskFunction[PayloadT]", self.function)(payload, session)

    @functools.cached_property
    def policy(self) -> attempts.RetryPolicy:
        """Its time limit and retry options, for `sqlatasks.attempts`; built once, read often."""
        return attempts.RetryPolicy(
            timeout=self.timeout,
            retry_delay=self.retry_delay,
            backoff=self.backoff,
            retry_delay_max=self.retry_delay_max,
            retry_on=self.retry_on,
            no_retry_on=self.no_retry_on,
        )

    @functools.cached_property
    def _results(self) -> pydantic.TypeAdapter[Any]:
        return pydantic.TypeAdapter(self.returns)

    def dump_result(self, value: Any) -> str | None:
        """What the task returned, as JSON text (None for None); PydanticSerializationError
        when it does not fit its annotation's JSON form, ValueError when JSON or jsonb cannot
        hold it (a float nan or inf, a NUL character): `sqlatasks.payloads.result_json`."""
        return payloads.result_json(self._results, value)

    def load_result(self, text: str) -> Any:
        """A stored result, validated as the return annotation's type."""
        return self._results.validate_json(text)

    def dump(self, payload: PayloadT | Mapping[str, Any]) -> str:
        """The payload as JSON text that a worker loads back equal to it (`self.load`), or
        PayloadError naming the field that is invalid or would not survive JSON
        (`sqlatasks.payloads`)."""
        return payloads.dump(self.name, self.model, payload)

    def load(self, text: str) -> PayloadT:
        """The payload model validated from JSON text (keys by alias or by name), or
        PayloadError."""
        try:
            return payloads.load(self.model, text)
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
    keep: float | None = None,
    timezone: str | None = None,
    concurrency_limit: int | None = None,
    retry_on: tuple[type[BaseException], ...] | None = None,
    no_retry_on: tuple[type[BaseException], ...] = (),
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
    keep: float | None = None,
    timezone: str | None = None,
    concurrency_limit: int | None = None,
    retry_on: tuple[type[BaseException], ...] | None = None,
    no_retry_on: tuple[type[BaseException], ...] = (),
) -> Task[Any] | _Decorator:
    """Register an `async def f(payload: SomeModel)` as a task; usable as `@task` or `@task(...)`.

    `async def f(payload: SomeModel, session: AsyncSession)` asks for a session whose
    transaction commits the task's writes with the deletion of its row. `cron` (five fields,
    UTC or the IANA `timezone`): runners also enqueue it once per slot (see `periodic`).

    `keep`: seconds a finished task is kept, with its JSON-able result (docs/status.md).

    Every problem a worker would meet later (a sync function, a payload that is not a pydantic
    model, a function workers cannot import, a name already taken, a bad cron expression or
    time zone, a cron payload with required fields) is raised here, at import.
    """

    options: dict[str, Any] = {
        "queue": queue,
        "priority": priority,
        "timeout": timeout,
        "retry_delay": retry_delay,
        "backoff": backoff,
        "retry_delay_max": retry_delay_max,
        "max_attempts": max_attempts,
        "keep": keep,
        "concurrency_limit": concurrency_limit,
        "retry_on": retry_on,
        "no_retry_on": no_retry_on,
    }

    def decorate(fn: AnyTaskFunction[Any]) -> Task[Any]:
        return _define(fn, name, cron, timezone, options)

    if function is not None:
        return decorate(function)
    return typing.cast(_Decorator, decorate)


def _define(
    fn: AnyTaskFunction[Any],
    name: str | None,
    cron: str | None,
    timezone: str | None,
    options: dict[str, Any],
) -> Task[Any]:
    """Check everything about `fn` and its options, then build and register its Task."""
    label = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    o = options
    definition.check_options(
        label,
        o["queue"],
        o["priority"],
        o["timeout"],
        o["retry_delay"],
        o["max_attempts"],
        o["keep"],
    )
    definition.check_backoff(label, o["backoff"], o["retry_delay_max"], o["concurrency_limit"])
    definition.check_flow(label, o["retry_on"], o["no_retry_on"], timezone)
    model, wants_session = definition.parameters(label, fn)
    returns = definition.result_type(label, fn)
    cron_payload = None if cron is None else definition.cron_payload(label, cron, model)
    built = Task(
        function=fn,
        name=name if name is not None else definition.default_name(label, fn),
        model=model,
        wants_session=wants_session,
        returns=returns,
        **options,
    )
    registry.add(built)
    if cron is not None and cron_payload is not None:  # both or neither
        registry.add_schedule(registry.Schedule(built.name, built, cron, cron_payload, timezone))
    return built


# -- periodic schedules ---------------------------------------------------------------------


def periodic(
    fn: Task[PayloadT],
    *,
    cron: str,
    payload: PayloadT | Mapping[str, Any] | None = None,
    name: str | None = None,
    timezone: str | None = None,
) -> registry.Schedule:
    """Enqueue `fn(payload)` at every slot of `cron` (five fields, in UTC or in the IANA
    `timezone`, daylight saving included: docs/periodic.md), once per slot.

    `payload` defaults to the payload model built from its field defaults. `name` (default:
    the task's name) identifies the schedule in the database; give each schedule of one task
    its own. Every problem (a bad expression, an invalid payload, a name taken by a different
    schedule) is raised here, at import, as ScheduleError or PayloadError.
    """
    if not isinstance(fn, Task):
        raise TypeError(f"periodic() takes a @task, not {fn!r}")
    label = name if name is not None else fn.name
    problem = definition.schedule_problem(cron, timezone)
    if problem:
        raise errors.ScheduleError(name=label, problem=problem)
    if payload is None:
        if definition.fields_without_defaults(fn.model):
            raise errors.ScheduleError(
                name=label,
                problem=f"{fn.model.__name__} has fields without defaults: pass payload=",
            )
        payload = fn.model()
    schedule = registry.Schedule(
        name=label, task=fn, cron=cron, payload=fn.dump(payload), timezone=timezone
    )
    registry.add_schedule(schedule)
    return schedule


# -- tasks of other services, enqueued by name ---------------------------------------------


class AnyPayload(pydantic.BaseModel):
    """The payload of a task this process has not registered: any JSON object."""

    model_config = pydantic.ConfigDict(extra="allow")


async def _elsewhere(payload: AnyPayload) -> None:
    raise AssertionError("a task enqueued by name runs in the worker that registers it")


def by_name(name: str) -> Task[AnyPayload]:
    """A stand-in, never registered, for the task named `name` that another process defines:
    enqueued with the default queue and priority, its payload a JSON object that the worker
    validates against the real model (and parks the task if it does not fit). A name whose
    module this process has imported is a typo: TaskNotRegistered."""
    module, sep, qualname = name.partition(":")
    if module in sys.modules:  # its module is imported here, and registers no such task
        return registry.get(name)  # TaskNotRegistered: a typo, most likely
    if not (sep and module and qualname) or definition.text_problem("name", name):
        raise errors.TaskNotRegistered(
            name=name,
            problem="it is not registered here, and a task enqueued by name must be named "
            "module:qualname, e.g. 'billing.tasks:charge'",
        )
    return Task(function=_elsewhere, name=name, model=AnyPayload)
