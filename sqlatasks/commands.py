"""`sqlatasks` (or `python -m sqlatasks`): the operator's and deployer's command line.

    status | failed | retry | cancel | purge     the queue and its failed tasks (operations.py)
    show ID [--payload]                         one task: its state, times, error and result
    pause | resume | limit | queues             queue settings every runner obeys
    migrate | sql                               the schema: apply it, or print its DDL
    run                                         the runner, as `python -m sqlatasks.runner`
    dashboard [--port N] [--allow-actions]      the web dashboard (sqlatasks.dashboard)

`--schema NAME` (or SQLATASKS_SCHEMA): the queue's tables in that PostgreSQL schema.
Tables for people, `--json` for scripts (timestamps in ISO 8601, numbers as numbers, nothing
as null); the database is `--database-url` or SQLATASKS_DATABASE_URL, as for the runner. The
global options go before or after the command. Each command is one transaction, committed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Literal, NoReturn

import anyio
import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from sqlatasks import (
    arguments,
    errors,
    migrations,
    observe,
    operations,
    poolers,
    runner,
    schema_check,
    settings,
    status,
    tables,
)
from sqlatasks.sql import server

PROG = arguments.PROG
OPERATOR_COMMANDS = {
    "status",
    "failed",
    "retry",
    "cancel",
    "purge",
    "pause",
    "resume",
    "limit",
    "queues",
    "show",
}


class TaskUnknown(Exception):
    """`show` of a task the database knows nothing of."""


class SchemaBehind(Exception):
    """The database's schema is older than this sqlatasks: the operator must migrate first."""


def _dashboard(url: str, args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from sqlatasks.dashboard import create_app
    except ImportError as exc:
        print(f"dashboard: {exc}: pip install 'sqlatasks[dashboard]'", file=sys.stderr)
        return 2
    app = create_app(url, allow_actions=args.allow_actions)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def console() -> NoReturn:
    """The `sqlatasks` console script."""
    sys.exit(main(prog="sqlatasks"))


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    command_line = argv is None  # this process's own arguments: a --schema may restart it
    argv = list(sys.argv[1:] if argv is None else argv)
    delegated = _runner_arguments(argv)
    if delegated is not None:
        # As `python -m` does: a console script's sys.path starts at its own bin directory, so
        # `--import myapp.tasks` from the project's directory would not be found.
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        return runner.main(delegated, prog=f"{prog} run", command_line=command_line)
    parser = arguments.build_parser(prog)
    args = parser.parse_args(argv)
    try:
        runner.use_schema(getattr(args, "schema", None), command_line=command_line)
    except errors.ConfigurationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if args.command == "run":  # reached only with an option before it that the runner lacks
        parser.error("the runner's options go after `run`, and --json is not one of them")
    if args.command == "sql":
        tables.show(_sql(args), as_json=getattr(args, "json", False))
        return 0
    if args.command in {"retry", "purge"} and not (args.ids or args.all):
        print(f"{prog} {args.command}: give task ids, or --all", file=sys.stderr)
        return 2
    raw_url = getattr(args, "database_url", None) or os.environ.get("SQLATASKS_DATABASE_URL")
    if not raw_url:
        print(f"{prog}: give --database-url or set SQLATASKS_DATABASE_URL", file=sys.stderr)
        return 2
    try:
        url = settings.connect_url(raw_url)
    except ValueError as exc:
        print(f"{prog}: invalid --database-url: {exc}", file=sys.stderr)
        return 2
    if args.command == "dashboard":
        return _dashboard(url, args)
    if args.command == "health":
        problems = anyio.run(_health, url, args.metrics_port)
        print("\n".join(problems) or "ok", file=sys.stderr if problems else sys.stdout)
        return 1 if problems else 0
    try:
        result = anyio.run(_run, url, args)
    except (SchemaBehind, TaskUnknown) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except errors.InvalidOption as exc:
        print(f"{prog} {args.command}: {exc.problem}", file=sys.stderr)
        return 2
    except (SQLAlchemyError, OSError) as exc:
        print(f"{prog}: database error: {errors.one_line(exc)}", file=sys.stderr)
        return 1
    tables.show(result, as_json=getattr(args, "json", False))
    shortfall = _shortfall(args, result)
    if shortfall:
        print(f"{prog} {args.command}: {shortfall}", file=sys.stderr)
        return 1
    return 0


def _shortfall(args: argparse.Namespace, result: Any) -> str | None:
    """Why `retry`/`purge` of given ids did less than asked (exit 1), or None. What was done
    stays done: the count is printed first."""
    if args.command not in {"retry", "purge"} or args.all:
        return None
    asked, done = len(set(args.ids)), next(iter(result.values()))
    if done >= asked:
        return None
    why = "not parked (unknown, queued, running or finished)"
    if args.command == "retry":
        why += ", or a live task holds its unique key"
    return f"{asked - done} of the {asked} task ids given were {why}"


def _runner_arguments(argv: list[str]) -> list[str] | None:
    """The runner's arguments if the command is `run` (global options before it passed on);
    None for any other command. `run` takes the runner's own flags, which this parser does not
    know, so it is dispatched before parsing."""
    passed: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg == "run":
            return [*passed, *rest]
        if arg in {"--database-url", "--schema"}:
            passed += [arg, next(rest, "")]
        elif arg.startswith(("--database-url=", "--schema=")):
            passed.append(arg)
        else:
            return None  # --json, --help, another command: not the runner's
    return None


def _sql(args: argparse.Namespace) -> dict[str, Any] | str:
    script = migrations.ddl(from_version=args.from_version)
    if getattr(args, "json", False):
        return {"from": args.from_version, "to": migrations.LATEST, "sql": script}
    return script


async def _health(url: str, port: int | None) -> list[str]:
    """The runner's probes, for hosts without HTTP probes: /readyz's checks, and /healthz."""
    engine = create_async_engine(url, pool_size=1)
    try:
        problem = await observe.ready_problem(engine)
    finally:
        await engine.dispose()
    problems = [problem] if problem else []
    if port is not None:
        problems += await anyio.to_thread.run_sync(_healthz, int(port))
    return problems


def _healthz(port: int) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10):
            return []
    except urllib.error.HTTPError as exc:
        return [f"/healthz: {exc.code}: {exc.read().decode(errors='replace').strip()}"]
    except OSError as exc:
        return [f"/healthz unreachable: {errors.one_line(exc)}"]


async def _run(url: str, args: argparse.Namespace) -> Any:
    engine = poolers.adapt(create_async_engine(url, pool_size=1))
    try:
        if args.command == "migrate":
            async with engine.begin() as conn:
                before, after = await conn.run_sync(migrations.run)
            return {"from": before, "to": after}
        async with AsyncSession(engine) as session, session.begin():
            connection = await session.connection()
            problem = schema_check.version_problem(await server.schema_version(connection))
            if problem is not None:
                raise SchemaBehind(problem)
            return await _command(session, args)
    finally:
        await engine.dispose()


async def _command(session: AsyncSession, args: argparse.Namespace) -> Any:
    ids: list[int] | Literal["all"] = "all" if getattr(args, "all", False) else []
    ids = ids or list(getattr(args, "ids", []))
    match args.command:
        case "status":
            return _with_kept(
                await operations.queue_stats(session), await status.kept_counts(session)
            )
        case "show":
            found = await status.get_task(session, args.id, payload=args.payload)
            if found is None:
                raise TaskUnknown(f"nothing is known of task {args.id} (finished and not kept?)")
            shown = tables.Record(dataclasses.asdict(found))
            if not args.payload:
                del shown["payload"]
            progress = shown.pop("progress") or {}  # flat: one line each in the table
            shown["progress"] = progress.get("value")
            shown["progress_at"] = progress.get("reported_at")
            shown["progress_attempt"] = progress.get("attempt")
            return shown
        case "failed":
            return await operations.failed_tasks(
                session, queue=args.queue, task_name=args.task_name, limit=args.limit
            )
        case "retry":
            return {"retried": await operations.retry_failed(session, ids)}
        case "purge":
            return {"deleted": await operations.delete_failed(session, ids)}
        case "cancel":
            outcome = await operations.cancel(session, args.id)
            if outcome == "missing":
                raise TaskUnknown(f"no task has id {args.id} (finished, or never enqueued)")
            return {"cancelled": outcome}
        case "pause" | "resume":
            change = operations.pause_queue if args.command == "pause" else operations.resume_queue
            await change(session, args.queue)
            return {"queue": args.queue, "paused": args.command == "pause"}
        case "limit":
            await operations.set_queue_limits(
                session, args.queue, max_running=args.max_running, per_second=args.per_second
            )
            return {
                "queue": args.queue,
                "max_running": args.max_running,
                "per_second": args.per_second,
            }
        case "queues":
            return await operations.queue_settings(session)
    raise AssertionError(args.command)


def _with_kept(
    queues: Sequence[operations.QueueStats], kept: Sequence[status.KeptCount]
) -> list[dict[str, Any]]:
    """Each queue's live counts and its kept finished tasks' counts, in one row."""
    by_queue = {k.queue: k for k in kept}
    names = sorted({q.queue for q in queues} | set(by_queue))
    live = {q.queue: dataclasses.asdict(q) for q in queues}
    empty = dict.fromkeys(["due", "scheduled", "running", "failed", "unknown"], 0)
    merged = []
    for name in names:
        row = live.get(name, {"queue": name, **empty, "oldest_due_seconds": None})
        found = by_queue.get(name)
        row["completed"] = found.completed if found else 0
        row["cancelled"] = found.cancelled if found else 0
        merged.append(row)
    return merged
