"""The runner's configuration: one frozen, validated object, read once at the edge.

Every field is a flag `--x-y`, an environment variable `SQLATASKS_X_Y` and a setting `x_y`; a
flag beats the environment, which beats the default. The two repeatable flags are singular
(`--import`, `--queue`); their environment variables and settings are plural (`SQLATASKS_IMPORTS`,
`imports`), comma-separated in the environment.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from sqlatasks import attempts, errors, poolers

SCHEMA_ENV = "SQLATASKS_SCHEMA"
"""The schema of sqlatasks' objects. Not a Settings field: every statement is built from it at
import (sqlatasks.models), in the application, the runner and the command line alike."""
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SCHEMA_NAME_MAX = 46
"""Characters in a schema's name: the cancel channel `sqlatasks_cancel_<schema>` must fit
PostgreSQL's 63-byte identifiers (NAMEDATALEN - 1, PostgreSQL docs, "Identifiers")."""


def schema_problem(name: str) -> str | None:
    """Why `name` cannot be sqlatasks' schema, or None. Kept to plain identifiers: the name is
    written into SQL text and channel names, quoted and exact (`Jobs` is not `jobs`)."""
    if not _SCHEMA_NAME.fullmatch(name) or len(name) > SCHEMA_NAME_MAX:
        return (
            f"a schema name is a letter or _ then letters, digits or _, at most "
            f"{SCHEMA_NAME_MAX} characters, not {name!r}"
        )
    if name.lower().startswith("pg_"):
        return f"schema names starting with pg_ are PostgreSQL's own, not {name!r}"
    return None


def schema_from_environment() -> str | None:
    """SQLATASKS_SCHEMA, checked; None when unset or empty. Raises ConfigurationError."""
    name = os.environ.get(SCHEMA_ENV) or None
    problem = None if name is None else schema_problem(name)
    if problem is not None:
        raise errors.ConfigurationError(f"invalid {SCHEMA_ENV}: {problem}")
    return name


STARTUP_GRACE = 30.0
THROUGHPUT_INTERVAL_MIN = 0.1
"""Seconds at least between a worker's rollup writes (`--throughput-interval`), 0 aside: a
smaller one spends a core's CPU on writes that a chart by the minute cannot show."""
"""Seconds a new worker may take to import its modules before its heartbeat is judged."""


def database_url(value: str) -> str:
    """The asyncpg URL (`postgresql+asyncpg://`) of any PostgreSQL SQLAlchemy URL.

    The runner and the command line open their own connections through asyncpg, whatever
    driver the application's URL names (`postgresql://`, `postgresql+psycopg://`,
    `postgresql+psycopg2://`, ...), so one URL serves both (docs/drivers.md).
    """
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ValueError("not a database URL") from exc
    if url.get_backend_name() not in {"postgresql", "postgres"}:
        raise ValueError(
            f"sqlatasks needs PostgreSQL through asyncpg; give a postgresql:// URL (any "
            f"driver: the runner connects through asyncpg), not {url.drivername!r}"
        )
    url = _asyncpg_ssl(url).set(drivername="postgresql+asyncpg")
    return url.render_as_string(hide_password=False)


def connect_url(value: str) -> str:
    """`database_url`, for a URL the runner or a command connects through with SQLAlchemy:
    also refuses libpq's connection parameters that `asyncpg.connect()` does not take (which
    would fail every connection with a TypeError), naming them. ValueError."""
    url = database_url(value)
    unknown = sorted(key for key in poolers.LIBPQ_ONLY if key in make_url(url).query)
    if unknown:
        raise ValueError(
            f"the URL's {', '.join(unknown)} is libpq's, and asyncpg takes no such argument "
            "(SQLAlchemy passes the URL's query to asyncpg.connect()): remove it from the URL "
            "the runner and the commands use; sslmode is translated (docs/drivers.md)"
        )
    return url


LIBPQ_SSL_FILES = ("sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword")
"""libpq's certificate options: asyncpg reads them from its DSN or the environment only."""


def _asyncpg_ssl(url: URL) -> URL:
    """libpq's `sslmode` as asyncpg's `ssl` argument, which takes the same modes (disable,
    allow, prefer, require, verify-ca, verify-full): SQLAlchemy passes the URL's query to
    `asyncpg.connect()` as keyword arguments, and that has no `sslmode`."""
    files = sorted(key for key in LIBPQ_SSL_FILES if key in url.query)
    if files:
        names = ", ".join(f"PG{key.upper()}" for key in files)
        raise ValueError(
            f"the URL's {', '.join(files)} cannot reach asyncpg through SQLAlchemy: set the "
            f"environment variable(s) {names} instead (asyncpg reads them), and keep sslmode "
            f"in the URL"
        )
    if "sslmode" not in url.query:
        return url
    if "ssl" in url.query:
        raise ValueError("give the URL sslmode= or ssl=, not both")
    mode = url.query["sslmode"]
    return url.difference_update_query(["sslmode"]).update_query_dict({"ssl": mode})


class Settings(BaseSettings):
    """Everything a runner needs to know, validated once."""

    model_config = SettingsConfigDict(env_prefix="SQLATASKS_", frozen=True, extra="forbid")

    database_url: str = Field(
        description="SQLAlchemy URL of the queue's database (postgresql+asyncpg://…; any "
        "postgresql:// URL is accepted and connected through asyncpg)",
    )
    workers: int = Field(2, ge=1, le=512, description="worker processes per runner")
    concurrency: int = Field(10, ge=1, le=10_000, description="tasks run at once per worker")
    task_timeout: float = Field(
        300.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds an attempt may run, unless its @task sets timeout",
    )
    retry_delay: float = Field(
        10.0,
        ge=0,
        allow_inf_nan=False,
        description="seconds before a failed task is due again, unless its @task sets one",
    )
    check_interval: float = Field(
        5.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds between the supervisor's checks of worker life and heartbeat",
    )
    lease: float = Field(
        60.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds a claim holds a task, renewed while it runs: the longest a dead "
        "runner's task waits for another runner; at least 2 x (the time to kill a stopped "
        "worker + 5), 52 with the default check interval",
    )
    idle_sleep: float = Field(
        2.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds an idle worker waits before polling, when no NOTIFY wakes it",
    )
    keep: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="seconds a finished task is kept for get_task, unless its @task sets keep "
        "(0: deleted at once)",
    )
    throughput_interval: float = Field(
        10.0,
        ge=0,
        allow_inf_nan=False,
        description="seconds between a worker's writes of its outcome counts per minute to the "
        "throughput rollup, the dashboard's chart (0: not counted; else at least "
        f"{THROUGHPUT_INTERVAL_MIN:g})",
    )
    imports: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="modules whose tasks this runner may run (repeatable)"
    )
    queues: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="queues to serve (repeatable), NAME or NAME=LIMIT for at most LIMIT "
        "tasks of that queue at once per worker; all queues when none is given",
    )
    burst: bool = Field(False, description="exit once no task is due and none is running")
    shutdown_timeout: float = Field(
        30.0,
        ge=0,
        allow_inf_nan=False,
        description="seconds running tasks get to finish after SIGTERM/SIGINT",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    notify: bool = Field(True, description="wake idle workers by LISTEN/NOTIFY")
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio",
        description="the workers' event loop: asyncio, or uvloop (the uvloop extra; "
        "docs/performance.md)",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or json: one JSON object per line, for log shippers"
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="serve /metrics, /healthz and /readyz on this port (127.0.0.1 unless "
        "--metrics-host); off when not given",
    )
    metrics_host: str = Field("127.0.0.1", description="address the metrics port listens on")
    middleware: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="module:callable run around every execution (repeatable; docs/hooks)"
    )
    listen_url: str | None = Field(
        None,
        description="URL for LISTEN only, when --database-url goes through a transaction "
        "pooler (PgBouncer) where LISTEN cannot work: the server directly, or a "
        "session-pooled PgBouncer; default: the database URL",
    )

    @field_validator("event_loop")
    @classmethod
    def _event_loop(cls, value: str) -> str:
        if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ValueError("uvloop is not installed: pip install 'sqlatasks[uvloop]'")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return connect_url(value)

    @field_validator("throughput_interval")
    @classmethod
    def _throughput_interval(cls, value: float) -> float:
        if 0 < value < THROUGHPUT_INTERVAL_MIN:
            raise ValueError(f"0 (not counted) or at least {THROUGHPUT_INTERVAL_MIN:g} seconds")
        return value

    @field_validator("lease")
    @classmethod
    def _lease(cls, value: float, info: ValidationInfo) -> float:
        check_interval = info.data.get("check_interval")
        if check_interval is not None:  # else check_interval's own error is reported
            problem = attempts.lease_problem(value, check_interval)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("listen_url")
    @classmethod
    def _listen_url(cls, value: str | None) -> str | None:
        return None if value is None else database_url(value)

    @field_validator("imports", "queues", "middleware", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("queues")
    @classmethod
    def _queue_specs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for spec in value:
            name, sep, limit = spec.partition("=")
            if not name or (sep and not (limit.isdigit() and int(limit) >= 1)):
                raise ValueError(f"a queue is NAME or NAME=LIMIT with LIMIT >= 1, not {spec!r}")
        return value

    @property
    def queue_names(self) -> tuple[str, ...]:
        return tuple(spec.partition("=")[0] for spec in self.queues)

    @property
    def queue_caps(self) -> dict[str, int]:
        """Per-worker limits of the queues given as NAME=LIMIT."""
        return {
            name: int(limit)
            for name, sep, limit in (spec.partition("=") for spec in self.queues)
            if sep
        }

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from `overrides` (flags), then SQLATASKS_* variables, then defaults.

        An invalid value is ConfigurationError with one line naming the setting.
        """
        given = {key: value for key, value in overrides.items() if value is not None}
        try:
            return cls(**given)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "settings"
            flag = {"imports": "import", "queues": "queue"}.get(field, field)
            names = f"--{flag.replace('_', '-')} (SQLATASKS_{field.upper()})"
            if first["type"] == "missing":
                raise errors.ConfigurationError(f"{names} is required") from None
            shown = (
                "" if field in {"database_url", "listen_url"} else f", got {first['input']!r}"
            )  # secrets
            # pydantic starts a validator's own sentence with "Value error, ": not for users
            message = first["msg"].removeprefix("Value error, ")
            raise errors.ConfigurationError(f"invalid {names}: {message}{shown}") from None
