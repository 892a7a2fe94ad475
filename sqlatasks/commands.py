"""`python -m sqlatasks status | failed | retry | cancel | purge`: the operator's command line.

Tables for people, `--json` for scripts; the database is `--database-url` or
SQLATASKS_DATABASE_URL, as for the runner. Each command is one transaction, committed.
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

from sqlatasks import errors, operations, settings

PROG = "python -m sqlatasks"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Look at the sqlatasks queue and its failed tasks.")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: SQLATASKS_DATABASE_URL)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser(
        "status",
        help="due, scheduled, running and failed tasks per queue, and those no runner knew",
    )
    failed = commands.add_parser("failed", help="list parked (failed) tasks, newest first")
    failed.add_argument("--queue")
    failed.add_argument("--task", dest="task_name", help="a task name, module:function")
    failed.add_argument("--limit", type=int, default=50)
    for name, what in [("retry", "make failed tasks due again"), ("purge", "delete failed tasks")]:
        command = commands.add_parser(name, help=what)
        command.add_argument("ids", nargs="*", type=int, metavar="ID")
        command.add_argument("--all", action="store_true", help="every failed task")
    cancel = commands.add_parser("cancel", help="delete a task that is not running")
    cancel.add_argument("id", type=int, metavar="ID")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in {"retry", "purge"} and not (args.ids or args.all):
        print(f"{PROG} {args.command}: give task ids, or --all", file=sys.stderr)
        return 2
    raw_url = args.database_url or os.environ.get("SQLATASKS_DATABASE_URL")
    if not raw_url:
        print(f"{PROG}: give --database-url or set SQLATASKS_DATABASE_URL", file=sys.stderr)
        return 2
    try:
        url = settings.database_url(raw_url)
    except ValueError as exc:
        print(f"{PROG}: invalid --database-url: {exc}", file=sys.stderr)
        return 2
    try:
        result = anyio.run(_run, url, args)
    except (SQLAlchemyError, OSError) as exc:
        print(f"{PROG}: database error: {errors.one_line(exc)}", file=sys.stderr)
        return 1
    _print(result, as_json=args.json)
    return 0


async def _run(url: str, args: argparse.Namespace) -> Any:
    engine = create_async_engine(url, pool_size=1)
    try:
        async with AsyncSession(engine) as session, session.begin():
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
        print(json.dumps(rows if isinstance(result, list) else result, default=str, indent=2))
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


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value).partition("\n")[0][:80]  # errors: their first line
