"""The arguments of `sqlatasks` / `python -m sqlatasks` (sqlatasks.commands runs them).

Global options (`--database-url`, `--schema`, `--json`) are accepted before or after the command.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, NoReturn

from sqlatasks import definition, migrations, runner

PROG = "python -m sqlatasks"


class Parser(argparse.ArgumentParser):
    """An argument error is one line and exit status 2, pointing to --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _global_options() -> Parser:
    # SUPPRESS: an option given before the command is not reset by the command's own parser.
    options = Parser(add_help=False)
    options.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help="SQLAlchemy URL (default: SQLATASKS_DATABASE_URL)",
    )
    options.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON, not a table"
    )
    runner.add_schema_option(options, default=argparse.SUPPRESS)
    return options


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    common = _global_options()
    parser = Parser(
        prog=prog, parents=[common], description="Operate the sqlatasks queue and its schema."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def add(name: str, what: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=what, description=what)

    _operator_commands(add)
    _schema_commands(add)
    _add_services(add, commands)
    return parser


AddCommand = Callable[[str, str], argparse.ArgumentParser]


def task_id(text: str) -> int:
    """A task id argument: an int within PostgreSQL's bigint, else an argument error (exit 2)
    before any connection is made."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a task id is an integer, not {text!r}") from None
    problem = definition.task_id_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def _operator_commands(add: AddCommand) -> None:
    """The queue, its tasks and its settings (sqlatasks.operations, sqlatasks.status)."""
    add(
        "status",
        "due, scheduled, running, failed and kept finished tasks per queue, and those no "
        "runner knew",
    )
    show = add("show", "one task: state, attempts, times, last error and result (if kept)")
    show.add_argument("id", type=task_id, metavar="ID")
    show.add_argument("--payload", action="store_true", help="print its payload too")
    failed = add("failed", "list parked (failed) tasks, newest failure first")
    failed.add_argument("--queue")
    failed.add_argument("--task", dest="task_name", help="a task name, module:function")
    failed.add_argument("--limit", type=int, default=50)
    for name, what in [
        ("retry", "make failed tasks due again, their attempts reset"),
        ("purge", "delete failed tasks"),
    ]:
        command = add(name, what)
        command.add_argument("ids", nargs="*", type=task_id, metavar="ID")
        command.add_argument("--all", action="store_true", help="every failed task")
    cancel = add(
        "cancel",
        "cancel a task: a queued, scheduled or failed one is deleted; a running one is "
        "interrupted by its worker (told by NOTIFY) and deleted",
    )
    cancel.add_argument("id", type=task_id, metavar="ID")
    for name, what in [
        ("pause", "start no task of a queue, in any runner, until resumed"),
        ("resume", "start a paused queue's tasks again"),
    ]:
        add(name, what).add_argument("queue", metavar="QUEUE")
    limit = add("limit", "a queue's limits across every runner; a limit left out is lifted")
    limit.add_argument("queue", metavar="QUEUE")
    limit.add_argument("--max-running", type=int, metavar="N", help="tasks running at once")
    limit.add_argument("--per-second", type=float, metavar="R", help="starts per second")
    add("queues", "the queues that are paused or limited")


def _schema_commands(add: AddCommand) -> None:
    """The schema, and whether this host's runner and database are fit to serve."""
    add("migrate", f"create or upgrade the queue's tables to schema version {migrations.LATEST}")
    sql = add("sql", "print the SQL that creates (or upgrades) the queue's tables; no database")
    sql.add_argument(
        "--from-version",
        type=int,
        choices=range(migrations.LATEST + 1),
        default=0,
        metavar="N",
        help="the version the database is at (default 0: no sqlatasks tables yet)",
    )
    health = add(
        "health",
        "exit 0 if the database is ready (reachable, schema current) and, with --metrics-port, "
        "the local runner's /healthz answers 200; else print why and exit 1",
    )
    health.add_argument(
        "--metrics-port",
        type=int,
        default=os.environ.get("SQLATASKS_METRICS_PORT"),
        help="the runner's --metrics-port on this host (default: SQLATASKS_METRICS_PORT)",
    )


def _add_services(add: AddCommand, commands: Any) -> None:
    """The commands that serve: the dashboard, and the runner (its flags are its own)."""
    dashboard = add(
        "dashboard",
        "serve the web dashboard (needs the `dashboard` extra); read-only unless "
        "--allow-actions; no login of its own: bind it to localhost or put auth in front",
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080, help="default: 8080")
    dashboard.add_argument(
        "--allow-actions", action="store_true", help="enable retry, purge and cancel (POST)"
    )
    commands.add_parser(
        "run", add_help=False, help="the runner: `run --help` for its flags (= sqlatasks.runner)"
    )
