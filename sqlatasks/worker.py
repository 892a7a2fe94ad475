"""One worker process: one event loop running {signals, heartbeat, listener, scheduler,
dispatcher, completer}; the scheduler only in worker 0, and only when schedules exist.

`worker_main` is what the supervisor runs with `anyio.to_process.run_sync`. It returns only
when the worker is done (stopped, drained in burst mode, or orphaned); everything it creates
lives inside its own event loop, so a reused process starts clean.

Signals: SIGTERM from the supervisor stops claiming and lets running tasks finish within the
shutdown timeout; SIGUSR1 interrupts them at once. SIGINT is ignored: Ctrl-C reaches
the whole process group, and the supervisor passes it on as SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import anyio
from anyio.abc import TaskStatus
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqlatasks import (
    attempts,
    connection,
    heartbeat,
    hooks,
    leases,
    listener,
    logs,
    poolers,
    registry,
    scheduler,
    throughput,
    tracing,
    transactions,
)
from sqlatasks.completer import Completer
from sqlatasks.dispatcher import ClaimPolicy, Dispatcher
from sqlatasks.execution import Limits
from sqlatasks.models import CANCEL_CHANNEL, NOTIFY_CHANNEL
from sqlatasks.registry import Schedule
from sqlatasks.settings import Settings

log = logging.getLogger(__name__)

WorkerExit = Literal["stopped", "drained", "orphaned"]
STOP_NOW: signal.Signals | None = getattr(signal, "SIGUSR1", None)
"""Sent by the supervisor on a second SIGTERM/SIGINT: interrupt running tasks and exit.
None where the platform has no SIGUSR1 (Windows): a second signal then kills the workers
after the stop margin instead."""
STATEMENT_TIMEOUT = 60.0
"""Seconds any one claim or outcome statement may take."""
COMPLETER_GRACE = 10.0
"""Seconds the completer keeps retrying buffered writes after the worker stops."""


_used = False


def worker_main(
    settings: Settings, index: int, heartbeat: str, relay: tuple[int, str]
) -> WorkerExit:
    """Run one worker until it is told to stop, in a fresh worker process.

    `relay` is the supervisor's log relay (port, token): this process's log records go there
    (sqlatasks.logs). anyio hands a process back to its pool when the function returns,
    module globals and all (an engine bound to a closed event loop, in user code too). A
    worker never runs twice in one process: a reused one exits at once, and the supervisor's
    next call gets a fresh process after one BrokenWorkerProcess.
    """
    global _used
    if _used:
        os._exit(0)
    _used = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    handler = logs.RelayHandler(*relay, origin=f"worker-{index}[{os.getpid()}]")
    handler.setLevel(settings.log_level)
    logs.install_record_factory()
    logs.attach(handler, settings.log_level)
    try:
        # anyio runs on asyncio either way; uvloop only replaces the loop underneath.
        options = {"use_uvloop": settings.event_loop == "uvloop"}
        return anyio.run(_run, settings, index, Path(heartbeat), handler, backend_options=options)
    finally:
        logs.detach()
        handler.close()


def _hooks(settings: Settings, handler: logs.RelayHandler) -> None:
    """Tracing when the application set a tracer provider (outermost: the --middleware run
    inside its span), the runner's --middleware, and the metric events for the supervisor."""
    if tracing.configured():
        hooks.add_middleware(tracing.middleware)
        log.info("tracing: each attempt runs in an OpenTelemetry span (docs/tracing.md)")
    for spec in settings.middleware:
        hooks.add_middleware(hooks.load(spec))
    if settings.metrics_port is not None:

        def send(event: hooks.Event) -> None:
            fields = {"task": event.task_name, "queue": event.queue, "outcome": event.outcome}
            handler.send_event({"event": "end", **fields, "duration": event.duration})

        hooks.on("end", send)


@dataclass(frozen=True, slots=True)
class Parts:
    """What one worker is made of; `serve` runs them, `close` releases their connections."""

    worker_id: str
    engine: AsyncEngine
    task_engine: AsyncEngine
    completer: Completer
    dispatcher: Dispatcher
    schedules: list[Schedule]
    scheduler: bool
    """Run the scheduler (schedules, pruning of kept tasks): worker 0's part."""

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.engine.dispose()
            await self.task_engine.dispose()


async def _run(
    settings: Settings, index: int, heartbeat_file: Path, handler: logs.RelayHandler
) -> WorkerExit:
    registry.import_modules(settings.imports)
    # After the imports: an application module may have configured logging as it loaded.
    logs.attach(handler, settings.log_level)
    _hooks(settings, handler)
    parts = build(settings, index)
    cpu = time.process_time()
    try:
        await serve(parts, settings, heartbeat_file)
    finally:
        await parts.close()
    reason: WorkerExit = "drained"
    if parts.dispatcher.stop_reason == "orphaned":
        reason = "orphaned"
    elif parts.dispatcher.stop_reason is not None:
        reason = "stopped"
    # The CPU it spent serving (imports excluded): per task, what the runner itself costs.
    log.info("exited (%s) after %.3f s of CPU", reason, time.process_time() - cpu)
    return reason


def build(settings: Settings, index: int) -> Parts:
    """The worker's parts, wired to each other; nothing connects until they are served."""
    # The random part keeps ids unique across containers that share a hostname and pids.
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{index}:{uuid.uuid4().hex[:8]}"
    limits = Limits(
        task_timeout=settings.task_timeout,
        retry_delay=settings.retry_delay,
        allowed_imports=settings.imports,
        keep=settings.keep,
    )
    policy = ClaimPolicy(
        worker_id=worker_id,
        concurrency=settings.concurrency,
        queues=settings.queue_names,
        queue_caps=settings.queue_caps,
        check_interval=settings.check_interval,
        lease=settings.lease,
        idle_sleep=settings.idle_sleep,
        shutdown_timeout=settings.shutdown_timeout,
        burst=settings.burst,
    )
    # One scheduler per runner is enough: the database dedupes slots across runners, so more
    # would only add connections and ticks. Worker 0, because every runner has one. It also
    # prunes kept tasks, so it runs there even without schedules.
    schedules = registry.all_schedules() if index == 0 else []
    engine, task_engine = _engines(settings, worker_id, with_scheduler=index == 0)
    interval = settings.throughput_interval
    completer = Completer(
        engine,
        name=f"sqlatasks completer {worker_id}",
        give_up_after_close=COMPLETER_GRACE,
        tally=throughput.Tally(worker_id, interval=interval) if interval else None,
    )
    dispatcher = Dispatcher(
        engine, completer, policy, limits, transactions.TaskConnections(task_engine)
    )
    return Parts(worker_id, engine, task_engine, completer, dispatcher, schedules, index == 0)


def _engines(
    settings: Settings, worker_id: str, *, with_scheduler: bool
) -> tuple[AsyncEngine, AsyncEngine]:
    """The pool for claims, outcomes and schedules; the pool for session tasks."""
    # Connections: the dispatcher's, the completer's and the lease renewal's (and the
    # scheduler's), held; one spare
    # while a broken one is replaced (the listener has its own).
    # AUTOCOMMIT: every statement here stands alone (a claim, an ack batch), so an explicit
    # BEGIN and COMMIT would only add two round trips. No pre-ping either: a dead connection
    # fails its statement, which is retried, and the pool replaces it.
    # synchronous_commit off: a crash of the server may forget the last claims and outcomes
    # this worker wrote, and every such loss makes a task run again — never makes one vanish.
    # That is at-least-once, as promised; enqueues keep the application's own setting.
    # Both pools discard a connection after a read-only or shutdown error (failover): see
    # connection.discard_broken_connections.
    engine = poolers.adapt(
        create_async_engine(
            settings.database_url,
            pool_size=4 if with_scheduler else 3,
            max_overflow=1,
            isolation_level="AUTOCOMMIT",
            connect_args={
                "server_settings": {"synchronous_commit": "off"},
                # A claim or ack stuck on a lock or a silent network fails and is retried,
                # rather than hang the loop that issued it.
                "command_timeout": STATEMENT_TIMEOUT,
            },
        ),
        optional_settings={"synchronous_commit"},  # PgBouncer refuses it at startup
    )
    # Session tasks (docs/exactly-once.md) each hold a connection in a real transaction while
    # they run: a pool of their own, no connection opened before the first such task. Commits
    # keep the server's synchronous_commit: these are the application's writes. Pre-ping: a
    # connection that died in the pool would otherwise cost the task an attempt.
    task_engine = poolers.adapt(
        create_async_engine(
            settings.database_url,
            pool_size=settings.concurrency,
            max_overflow=0,
            pool_pre_ping=True,
            connect_args={"server_settings": {"application_name": f"sqlatasks tasks {worker_id}"}},
        )
    )
    return connection.discard_broken_connections(engine), connection.discard_broken_connections(
        task_engine
    )


async def serve(parts: Parts, settings: Settings, heartbeat_file: Path) -> None:
    """Run the parts in one task group until the dispatcher returns (stopped or drained)."""
    dispatcher, worker_id = parts.dispatcher, parts.worker_id
    async with anyio.create_task_group() as services:
        await services.start(_watch_signals, dispatcher)
        services.start_soon(
            heartbeat.beat_until_stopped,
            heartbeat_file,
            worker_id,
            settings.check_interval,
            dispatcher,
        )
        # In the services group: renewals go on while running tasks drain at shutdown.
        services.start_soon(
            partial(
                leases.keep,
                parts.engine,
                f"sqlatasks lease {worker_id}",
                lease=settings.lease,
                check_interval=settings.check_interval,
                held=partial(dispatcher.leased, attempts.overdue_grace(settings.check_interval)),
                reported=dispatcher.reported,
            )
        )
        if settings.notify:
            channels = {
                NOTIFY_CHANNEL: lambda _payload: dispatcher.wake(),
                CANCEL_CHANNEL: dispatcher.cancel_running,
            }
            services.start_soon(
                partial(
                    listener.listen,
                    settings.listen_url or settings.database_url,
                    channels,
                    on_connect=dispatcher.wake,
                    name=f"sqlatasks listener {worker_id}",
                    idle_sleep=settings.idle_sleep,
                )
            )
        if parts.scheduler:
            services.start_soon(
                partial(
                    scheduler.run,
                    parts.engine,
                    parts.schedules,
                    check_interval=settings.check_interval,
                    name=f"sqlatasks scheduler {worker_id}",
                )
            )
        log.info("started: %s, concurrency %d", worker_id, settings.concurrency)
        async with anyio.create_task_group() as core:
            core.start_soon(parts.completer.run)
            try:
                await dispatcher.run()
            finally:
                parts.completer.close()
        services.cancel_scope.cancel()


async def _watch_signals(
    dispatcher: Dispatcher, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    # Two signals, not one sent twice: the kernel merges a pending signal with a second
    # instance of itself, so "SIGTERM twice, quickly" can arrive as one.
    watched = [signal.SIGTERM] if STOP_NOW is None else [signal.SIGTERM, STOP_NOW]
    with anyio.open_signal_receiver(*watched) as signals:
        task_status.started()
        async for signum in signals:
            if signum == STOP_NOW:
                log.info("stopping now: interrupting running tasks")
                dispatcher.stop("stopped", now=True)
            else:
                log.info("stopping: no new claims, running tasks may finish")
                dispatcher.stop("stopped")
