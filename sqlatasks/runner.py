"""`python -m sqlatasks.runner`: flags → Settings → supervisor.

Kept thin on purpose: every worker process re-runs this module as `__mp_main__`, so it only
defines things and does nothing unless it is the main module.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import anyio

from sqlatasks import errors, logs, models, registry, supervisor
from sqlatasks.settings import SCHEMA_ENV, Settings, schema_problem

PROG = "python -m sqlatasks.runner"
REPEATABLE = {"imports": "import", "queues": "queue", "middleware": "middleware"}
UNITS = {
    "task_timeout": "s",
    "retry_delay": "s",
    "check_interval": "s",
    "lease": "s",
    "idle_sleep": "s",
    "shutdown_timeout": "s",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """One flag per Settings field; values are validated by Settings, not here."""
    parser = _Parser(
        prog=prog,
        description="Run sqlatasks workers: a supervisor keeping N worker processes, each "
        "running up to M tasks at once. Every flag --x-y is also SQLATASKS_X_Y.",
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + REPEATABLE.get(name, name).replace("_", "-")
        default = "required" if field.is_required() else f"default {field.default!r}"
        if name in REPEATABLE:
            default = f"env SQLATASKS_{name.upper()}, comma-separated"
        unit = f" [{UNITS[name]}]" if name in UNITS else ""
        help_text = f"{field.description}{unit} ({default})"
        if field.annotation is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif name in REPEATABLE:
            parser.add_argument(flag, dest=name, action="append", metavar="NAME", help=help_text)
        else:
            parser.add_argument(
                flag, dest=name, metavar=name.split("_")[-1].upper(), help=help_text
            )
    add_schema_option(parser)
    return parser


def add_schema_option(parser: argparse.ArgumentParser, **default: Any) -> None:
    """`--schema NAME`, the runner's and the command line's way to set SQLATASKS_SCHEMA."""
    parser.add_argument(
        "--schema",
        metavar="NAME",
        help="PostgreSQL schema of the queue's tables (env SQLATASKS_SCHEMA, read at import; "
        "default: none, the search_path); the application must use the same",
        **default,
    )


def use_schema(schema: str | None, *, command_line: bool) -> None:
    """Make `--schema` this process's schema. Every statement is built from SQLATASKS_SCHEMA
    when sqlatasks is imported (sqlatasks.models), before any flag is read: a different schema
    re-executes the same command line with the variable set (same pid; the worker processes
    inherit it). Raises ConfigurationError for a bad name, or for a call from code
    (`command_line` False), which must set SQLATASKS_SCHEMA before importing sqlatasks."""
    if schema is None or schema == models.SCHEMA:
        return
    problem = schema_problem(schema)
    if problem is not None:
        raise errors.ConfigurationError(f"invalid --schema: {problem}")
    if not command_line:
        raise errors.ConfigurationError(
            f"--schema {schema} differs from SQLATASKS_SCHEMA ({models.SCHEMA}) that sqlatasks "
            "was imported with: set SQLATASKS_SCHEMA before importing sqlatasks"
        )
    os.environ[SCHEMA_ENV] = schema
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def main(
    argv: Sequence[str] | None = None, *, prog: str = PROG, command_line: bool | None = None
) -> int:
    """The runner's command line; `sqlatasks run` is this with `prog="sqlatasks run"`.
    `command_line`: `argv` is this process's own (default: when `argv` is None), so that a
    `--schema` may restart it (see use_schema)."""
    args = build_parser(prog).parse_args(argv)
    schema = args.__dict__.pop("schema")
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    try:
        use_schema(schema, command_line=argv is None if command_line is None else command_line)
        settings = Settings.load(**overrides)
    except errors.ConfigurationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.formatter(settings.log_format, f"supervisor[{os.getpid()}]"))
    handler.setLevel(settings.log_level)
    logs.attach(handler, settings.log_level)
    try:
        registry.import_modules(settings.imports)
    except errors.ConfigurationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    logs.attach(handler, settings.log_level)  # again: a module may have configured logging
    if not registry.all_tasks():
        # It could only claim tasks to give them back: a runner that knows no task is a
        # deployment mistake, not a service.
        modules = ", ".join(settings.imports) or "nothing (no --import)"
        print(
            f"{prog}: no @task is registered after importing {modules}: give --import the "
            "modules that define your tasks",
            file=sys.stderr,
        )
        return 2
    problem: BaseException | None = None
    try:
        anyio.run(supervisor.supervise, settings)
    except* errors.ConfigurationError as group:
        problem = group
        while isinstance(problem, BaseExceptionGroup):  # task groups nest their errors
            problem = problem.exceptions[0]
    if problem is not None:
        print(f"{prog}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
