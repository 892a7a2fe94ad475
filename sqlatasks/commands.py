"""`sqlatasks` (or `python -m sqlatasks`): the operator's and deployer's command line.

    status | failed | retry | cancel | purge     the queue and its failed tasks (operations.py)
    migrate | sql                               the schema: apply it, or print its DDL
    run                                         the runner, as `python -m sqlatasks.runner`

Tables for people, `--json` for scripts (timestamps in ISO 8601, numbers as numbers, nothing
as null); the database is `--database-url` or SQLATASKS_DATABASE_URL, as for the runner. The
global options go before or after the command. Each command is one transaction, committed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, NoReturn

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from sqlatasks import errors, migrations, operations, poolers, runner, settings

PROG = "python -m sqlatasks"
OPERATOR_COMMANDS = {"status", "failed", "retry", "cancel", "purge"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


class SchemaBehind(Exception):
    """The database's schema is older than this sqlatasks: the operator must migrate first."""


def _global_options() -> _Parser:
    # SUPPRESS: an option given before the command is not reset by the command's own parser.
    options = _Parser(add_help=False)
    options.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help="SQLAlchemy URL (default: SQLATASKS_DATABASE_URL)",
    )
    options.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON, not a table"
    )
    return options


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    common = _global_options()
    parser = _Parser(
        prog=prog, parents=[common], description="Operate the sqlatasks queue and its schema."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, what: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=what, description=what)

    add("status", "due, scheduled, running and failed tasks per queue")
    failed = add("failed", "list parked (failed) tasks, newest failure first")
    failed.add_argument("--queue")
    failed.add_argument("--task", dest="task_name", help="a task name, module:function")
    failed.add_argument("--limit", type=int, default=50)
    for name, what in [
        ("retry", "make failed tasks due again, their attempts reset"),
        ("purge", "delete failed tasks"),
    ]:
        command = add(name, what)
        command.add_argument("ids", nargs="*", type=int, metavar="ID")
        command.add_argument("--all", action="store_true", help="every failed task")
    cancel = add(
        "cancel",
        "cancel a task: a queued, scheduled or failed one is deleted; a running one is "
        "interrupted by its worker (told by NOTIFY) and deleted",
    )
    cancel.add_argument("id", type=int, metavar="ID")
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
    commands.add_parser(
        "run", add_help=False, help="the runner: `run --help` for its flags (= sqlatasks.runner)"
    )
    return parser


def console() -> NoReturn:
    """The `sqlatasks` console script."""
    sys.exit(main(prog="sqlatasks"))


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    delegated = _runner_arguments(argv)
    if delegated is not None:
        return runner.main(delegated, prog=f"{prog} run")
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command == "run":  # reached only with an option before it that the runner lacks
        parser.error("the runner's options go after `run`, and --json is not one of them")
    if args.command == "sql":
        _print(_sql(args), as_json=getattr(args, "json", False))
        return 0
    if args.command in {"retry", "purge"} and not (args.ids or args.all):
        print(f"{prog} {args.command}: give task ids, or --all", file=sys.stderr)
        return 2
    raw_url = getattr(args, "database_url", None) or os.environ.get("SQLATASKS_DATABASE_URL")
    if not raw_url:
        print(f"{prog}: give --database-url or set SQLATASKS_DATABASE_URL", file=sys.stderr)
        return 2
    try:
        url = settings.database_url(raw_url)
    except ValueError as exc:
        print(f"{prog}: invalid --database-url: {exc}", file=sys.stderr)
        return 2
    try:
        result = anyio.run(_run, url, args)
    except SchemaBehind as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        print(f"{prog}: database error: {errors.one_line(exc)}", file=sys.stderr)
        return 1
    _print(result, as_json=getattr(args, "json", False))
    return 0


def _runner_arguments(argv: list[str]) -> list[str] | None:
    """The runner's arguments if the command is `run` (global options before it passed on);
    None for any other command. `run` takes the runner's own flags, which this parser does not
    know, so it is dispatched before parsing."""
    passed: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg == "run":
            return [*passed, *rest]
        if arg == "--database-url":
            passed += [arg, next(rest, "")]
        elif arg.startswith("--database-url="):
            passed.append(arg)
        else:
            return None  # --json, --help, another command: not the runner's
    return None


def _sql(args: argparse.Namespace) -> dict[str, Any] | str:
    script = migrations.ddl(from_version=args.from_version)
    if getattr(args, "json", False):
        return {"from": args.from_version, "to": migrations.LATEST, "sql": script}
    return script


async def _run(url: str, args: argparse.Namespace) -> Any:
    engine = poolers.adapt(create_async_engine(url, pool_size=1))
    try:
        if args.command == "migrate":
            async with engine.begin() as conn:
                before, after = await conn.run_sync(migrations.run)
            return {"from": before, "to": after}
        async with AsyncSession(engine) as session, session.begin():
            connection = await session.connection()
            found = await connection.run_sync(migrations.current_version)
            if found < migrations.LATEST:
                raise SchemaBehind(
                    f"the database's sqlatasks schema is version {found}, this sqlatasks needs "
                    f"{migrations.LATEST}: run `sqlatasks migrate` (or your alembic upgrade)"
                )
            return await _command(session, args)
    finally:
        await engine.dispose()


async def _command(session: AsyncSession, args: argparse.Namespace) -> Any:
    ids: list[int] | Literal["all"] = "all" if getattr(args, "all", False) else []
    ids = ids or list(getattr(args, "ids", []))
    match args.command:
        case "status":
            return await operations.queue_stats(session)
        case "failed":
            return await operations.failed_tasks(
                session, queue=args.queue, task_name=args.task_name, limit=args.limit
            )
        case "retry":
            return {"retried": await operations.retry_failed(session, ids)}
        case "purge":
            return {"deleted": await operations.delete_failed(session, ids)}
        case "cancel":
            return {"cancelled": await operations.cancel(session, args.id)}
    raise AssertionError(args.command)


def _print(result: Any, *, as_json: bool) -> None:
    rows = [dataclasses.asdict(r) for r in result] if isinstance(result, list) else [result]
    if as_json:
        print(json.dumps(rows if isinstance(result, list) else result, default=_json, indent=2))
        return
    if isinstance(result, str):
        print(result, end="")
        return
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _json(value: Any) -> Any:
    """What json.dumps cannot encode itself: timestamps, as ISO 8601."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value).partition("\n")[0][:80]  # errors: their first line
