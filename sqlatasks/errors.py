"""Every error sqlatasks raises on purpose.

    SqlatasksError
    ├── TaskDefinitionError      @task was given something a worker could not run
    ├── TaskNameTaken            a second task under a name that is already registered
    ├── ScheduleError            periodic() was given a schedule no runner could fire
    ├── InvalidOption            enqueue() was given an option no task could be queued with
    ├── PayloadError             a payload of the wrong model, or one its model rejects
    ├── ProgressError            report() was given a value that cannot be stored as progress
    ├── TaskNotRegistered        a row names no task that this process may run
    │   └── TaskUnknown          …because nothing here registers that name: it waits
    ├── ConfigurationError       a setting is invalid, or the database cannot be reached
    ├── Snooze                   raised by a task: run me again later, this was no failure
    └── GiveUp                   raised by a task: park me now, retrying cannot help

Each exception carries its facts as attributes, and its message says what to do next.
"""

from __future__ import annotations

import traceback
from datetime import timedelta

LONGEST_WAIT = 100 * 365.25 * 86_400
"""Seconds at most in any wait sqlatasks is given (a delay, a retry delay, a snooze, a
retention): a century. Past about 9e12 s, `now() + interval` leaves PostgreSQL's timestamp
range and the write of the task's outcome would fail for ever."""


class SqlatasksError(Exception):
    """Something went wrong in sqlatasks."""


class TaskDefinitionError(SqlatasksError, TypeError):
    """The decorated function cannot be a task."""

    def __init__(self, *, function: str, problem: str) -> None:
        self.function = function
        self.problem = problem
        super().__init__(f"@task cannot register {function}: {problem}")


class TaskNameTaken(SqlatasksError, ValueError):
    """Two different functions were registered under one task name."""

    def __init__(self, *, name: str) -> None:
        self.name = name
        super().__init__(
            f"a task named {name!r} is already registered by another function; "
            f"give one of them a distinct @task(name=...)"
        )


class ScheduleError(SqlatasksError, ValueError):
    """A periodic schedule cannot be registered as given."""

    def __init__(self, *, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"cannot schedule {name!r}: {problem}")


class InvalidOption(SqlatasksError, ValueError):
    """An option or argument is out of range or of the wrong type: of enqueue() or
    enqueue_many() (the default `where`), or of the operator functions (a task id, a queue)."""

    def __init__(self, *, option: str, problem: str, where: str = "enqueue()") -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class PayloadError(SqlatasksError, ValueError):
    """The payload does not fit the task's model."""

    def __init__(self, *, task_name: str, problem: str) -> None:
        self.task_name = task_name
        self.problem = problem
        super().__init__(f"invalid payload for task {task_name!r}: {problem}")


class ProgressError(SqlatasksError, ValueError):
    """`current_task().report(value)` was given a value that is not JSON, holds a NUL
    character, or is larger than the limit once written as JSON."""

    def __init__(self, *, task_name: str, problem: str) -> None:
        self.task_name = task_name
        self.problem = problem
        super().__init__(f"task {task_name!r} cannot report this progress: {problem}")


class TaskNotRegistered(SqlatasksError, LookupError):
    """The task name is unknown here, or lies outside the modules this process may import."""

    def __init__(self, *, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"task {name!r} cannot run here: {problem}")


class TaskUnknown(TaskNotRegistered):
    """No task of this name is registered here, and none could be imported from the allowed
    packages: another runner (a newer deploy, another part of the fleet) may know it.

    Unlike its parent (a name that runs code outside the allowed imports, or a module that
    fails to import), this is no reason to park the task: it waits for a runner that knows it.
    """


class ConfigurationError(SqlatasksError, ValueError):
    """A setting is invalid or the database cannot be reached."""


class SchemaError(SqlatasksError, RuntimeError):
    """The database's queue tables are missing or older than this sqlatasks: the message names
    the fix (`sqlatasks migrate`, or the application's alembic upgrade)."""


class Snooze(SqlatasksError):
    """Raised by a task to run again `after` seconds from now.

    The attempt does not count towards max_attempts and leaves no error behind: use it for
    "not yet" (a resource is busy, a rate limit applies), not for failures.
    """

    def __init__(self, after: float | timedelta = 0.0) -> None:
        seconds = after.total_seconds() if isinstance(after, timedelta) else float(after)
        if not (0 <= seconds <= LONGEST_WAIT):  # NaN fails too
            raise ValueError(
                "Snooze(after=...) takes zero or a positive number of seconds, at most "
                f"{LONGEST_WAIT:g}"
            )
        self.after = seconds
        super().__init__(f"snooze for {seconds:g} s")


DISCARD_CONNECTION_STATES = frozenset({"25006", "57P01", "57P02", "57P03", "57P04"})
"""SQLSTATEs after which a connection is discarded, never reused: read_only_sql_transaction (a
session opened while the server was read-only, or on a replica, stays read-only after the
server is writable again), admin_shutdown, crash_shutdown, cannot_connect_now (starting up,
in recovery) and database_dropped. Class 08 (connection exceptions) too."""
NOT_TRANSIENT_STATES = frozenset({"3D000"})
"""SQLSTATEs of a connection attempt that retrying cannot fix, besides class 28 (invalid
authorization: a wrong role or password): invalid_catalog_name (no such database)."""


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE the server (or the driver) gave `exc`, looked for along its causes."""
    seen: BaseException | None = exc
    for _ in range(5):  # SQLAlchemy's error → the adapter's → the driver's
        if seen is None:
            return None
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def discards_connection(exc: BaseException) -> bool:
    """Whether a connection that raised `exc` must be thrown away rather than used again: the
    one rule for every pool and held connection of sqlatasks."""
    state = sqlstate(exc)
    return state is not None and (state in DISCARD_CONNECTION_STATES or state.startswith("08"))


def not_transient(exc: BaseException) -> bool:
    """Whether a failed connection attempt names a problem that waiting will not solve (a wrong
    role, password or database name), as opposed to a server that is down or unreachable."""
    state = sqlstate(exc)
    return state is not None and (state in NOT_TRANSIENT_STATES or state.startswith("28"))


class GiveUp(SqlatasksError):
    """Raised by a task to fail for good: the task is parked at once, with this exception as
    its last_error, however many attempts it has left (`retry_failed` runs it again).

    Use it for failures no retry can mend (a card declined, a record deleted meanwhile)."""


MESSAGE_LIMIT = 2000
"""Characters of an exception's message kept (its head and its tail); likewise of each line
of its traceback."""
TRACEBACK_TAIL = 4000
"""Characters of a traceback kept by `describe(..., with_traceback=True)`: its end, where the
exception was raised."""
ERROR_LIMIT = 8000
"""The most characters `describe` returns, whatever the exception: what a task's `last_error`
holds, and the most a log line about one exception carries."""


def one_line(exc: BaseException) -> str:
    """An exception as one log line: "Type: first line of its message" (at most
    MESSAGE_LIMIT characters of it, with the cut said)."""
    return describe(exc).partition("\n")[0]


def describe(exc: BaseException, *, with_traceback: bool = False) -> str:
    """An exception as text that PostgreSQL and a log line accept: "Type: message" (for a
    database error, the driver's own message without SQLAlchemy's echo of the SQL), then, with
    `with_traceback`, the last TRACEBACK_TAIL characters of its traceback. Never raises, even
    for an exception whose __str__ does, and never longer than ERROR_LIMIT characters: a
    message longer than MESSAGE_LIMIT keeps its head and its tail and says how much was cut."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # a task group's wrapping says nothing: name what it wraps
    try:
        message = str(getattr(exc, "orig", None) or exc).strip()
        text = f"{type(exc).__name__}: {cut(message, MESSAGE_LIMIT)}"
        if with_traceback:
            lines = traceback.format_exception(exc)
            text += "\n" + "".join(cut(line, MESSAGE_LIMIT) for line in lines)[-TRACEBACK_TAIL:]
    except Exception:
        text = f"{type(exc).__name__}: <message unavailable>"
    return cut(_storable(text), ERROR_LIMIT)


def cut(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters; else its head and its tail, with the
    number of characters cut between them, `limit` characters in all."""
    if len(text) <= limit:
        return text
    marker = ""
    for _ in range(3):  # the marker's length counts in the cut, and its number in its length
        marker = f" [... {len(text) - limit + len(marker):,} characters cut ...] "
    keep = max(limit - len(marker), 0)
    head = keep // 2
    return (text[:head] + marker + text[len(text) - (keep - head) :])[:limit]


def _storable(text: str) -> str:
    """No NUL bytes, no lone surrogates: either would fail the write of an outcome for ever."""
    return text.replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")
