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

import contextlib
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

from sqlatasks import attempts, listener, poolers, registry, scheduler, transactions
from sqlatasks.completer import Completer
from sqlatasks.dispatcher import ClaimPolicy, Dispatcher
from sqlatasks.execution import Limits
from sqlatasks.models import CANCEL_CHANNEL, NOTIFY_CHANNEL
from sqlatasks.settings import Settings
from sqlatasks.tasks import Schedule

log = logging.getLogger(__name__)

WorkerExit = Literal["stopped", "drained", "orphaned"]
STOP_NOW = signal.SIGUSR1
"""Sent by the supervisor on a second SIGTERM/SIGINT: interrupt running tasks and exit."""
STATEMENT_TIMEOUT = 60.0
"""Seconds any one claim or outcome statement may take."""
COMPLETER_GRACE = 10.0
"""Seconds the completer keeps retrying buffered writes after the worker stops."""


_used = False


def worker_main(settings: Settings, index: int, heartbeat: str, log_path: str) -> WorkerExit:
    """Run one worker until it is told to stop, in a fresh worker process.

    anyio hands a process back to its pool when the function returns, module globals and
    all (an engine bound to a closed event loop, in user code too). A worker never runs twice
    in one process: a reused one exits at once, and the supervisor's next call gets a fresh
    process after one BrokenWorkerProcess.
    """
    global _used
    if _used:
        os._exit(0)
    _used = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(log_path, "w", buffering=1, encoding="utf-8") as log_stream:
        handler = logging.StreamHandler(log_stream)
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s worker-{index}[{os.getpid()}] %(name)s: %(message)s"
            )
        )
        root = logging.getLogger()
        root.handlers = [handler]
        root.setLevel(settings.log_level)
        try:
            return anyio.run(_run, settings, index, Path(heartbeat))
        finally:
            root.handlers = []


@dataclass(frozen=True, slots=True)
class Parts:
    """What one worker is made of; `serve` runs them, `close` releases their connections."""

    worker_id: str
    engine: AsyncEngine
    task_engine: AsyncEngine
    completer: Completer
    dispatcher: Dispatcher
    schedules: list[Schedule]

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.engine.dispose()
            await self.task_engine.dispose()


async def _run(settings: Settings, index: int, heartbeat: Path) -> WorkerExit:
    registry.import_modules(settings.imports)
    parts = build(settings, index)
    try:
        await serve(parts, settings, heartbeat)
    finally:
        await parts.close()
    reason: WorkerExit = "drained"
    if parts.dispatcher.stop_reason == "orphaned":
        reason = "orphaned"
    elif parts.dispatcher.stop_reason is not None:
        reason = "stopped"
    log.info("exited (%s)", reason)
    return reason


def build(settings: Settings, index: int) -> Parts:
    """The worker's parts, wired to each other; nothing connects until they are served."""
    # The random part keeps ids unique across containers that share a hostname and pids.
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{index}:{uuid.uuid4().hex[:8]}"
    limits = Limits(
        task_timeout=settings.task_timeout,
        retry_delay=settings.retry_delay,
        timeout_cap=registry.longest_timeout(settings.task_timeout),
        allowed_imports=settings.imports,
    )
    policy = ClaimPolicy(
        worker_id=worker_id,
        concurrency=settings.concurrency,
        queues=settings.queue_names,
        queue_caps=settings.queue_caps,
        check_interval=settings.check_interval,
        idle_sleep=settings.idle_sleep,
        shutdown_timeout=settings.shutdown_timeout,
        burst=settings.burst,
    )
    # One scheduler per runner is enough: the database dedupes slots across runners, so more
    # would only add connections and ticks. Worker 0, because every runner has one.
    schedules = registry.all_schedules() if index == 0 else []
    engine, task_engine = _engines(settings, worker_id, with_scheduler=bool(schedules))
    completer = Completer(
        engine, name=f"sqlatasks completer {worker_id}", give_up_after_close=COMPLETER_GRACE
    )
    dispatcher = Dispatcher(
        engine, completer, policy, limits, transactions.TaskConnections(task_engine)
    )
    return Parts(worker_id, engine, task_engine, completer, dispatcher, schedules)


def _engines(
    settings: Settings, worker_id: str, *, with_scheduler: bool
) -> tuple[AsyncEngine, AsyncEngine]:
    """The pool for claims, outcomes and schedules; the pool for session tasks."""
    # Connections: the dispatcher's and the completer's (and the scheduler's), held; one spare
    # while a broken one is replaced (the listener has its own).
    # AUTOCOMMIT: every statement here stands alone (a claim, an ack batch), so an explicit
    # BEGIN and COMMIT would only add two round trips. No pre-ping either: a dead connection
    # fails its statement, which is retried, and the pool replaces it.
    # synchronous_commit off: a crash of the server may forget the last claims and outcomes
    # this worker wrote, and every such loss makes a task run again — never makes one vanish.
    # That is at-least-once, as promised; enqueues keep the application's own setting.
    engine = poolers.adapt(
        create_async_engine(
            settings.database_url,
            pool_size=3 if with_scheduler else 2,
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
    return engine, task_engine


async def serve(parts: Parts, settings: Settings, heartbeat: Path) -> None:
    """Run the parts in one task group until the dispatcher returns (stopped or drained)."""
    dispatcher, worker_id = parts.dispatcher, parts.worker_id
    async with anyio.create_task_group() as services:
        await services.start(_watch_signals, dispatcher)
        services.start_soon(_heartbeat, heartbeat, worker_id, settings.check_interval, dispatcher)
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
        if parts.schedules:
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
    with anyio.open_signal_receiver(signal.SIGTERM, STOP_NOW) as signals:
        task_status.started()
        async for signum in signals:
            if signum == STOP_NOW:
                log.info("stopping now: interrupting running tasks")
                dispatcher.stop("stopped", now=True)
            else:
                log.info("stopping: no new claims, running tasks may finish")
                dispatcher.stop("stopped")


async def _heartbeat(
    path: Path,
    worker_id: str,
    check_interval: float,
    dispatcher: Dispatcher,
) -> None:
    """Prove this worker is sound; stop if the supervisor is gone.

    The file holds this process's pid and worker id (for signals and lease clean-up) and the
    time of the last beat on the system-wide monotonic clock, which no NTP step moves. A
    blocked loop stops beating, and so does a loop running a task that ignores its
    cancellation past its limit: either way the supervisor kills the process before the
    task's lease can pass to another worker.

    The last beat of a worker that stops beating for overdue tasks names them, with the time
    of the beat before it: the supervisor charges those tasks the attempt, and gives its other
    tasks back uncounted.
    """
    parent = os.getppid()
    last_beat = time.monotonic()
    while True:
        if os.getppid() != parent:
            log.warning("the supervisor is gone: stopping")
            dispatcher.stop("orphaned")
            return
        stuck = dispatcher.overdue(grace=attempts.overdue_grace(check_interval))
        if stuck:
            log.error(
                "task %d %s ignores its cancellation past its time limit: stopping the "
                "heartbeat so that the supervisor kills this worker",
                stuck[0].id,
                stuck[0].task_name,
            )
            # The old time, not a fresh one: naming the culprits must not delay the kill.
            with contextlib.suppress(OSError):
                _beat(path, worker_id, last_beat, overdue=[task.id for task in stuck])
            return
        last_beat = time.monotonic()
        with contextlib.suppress(OSError):  # a missed beat is the supervisor's call to judge
            _beat(path, worker_id, last_beat)
        await anyio.sleep(attempts.heartbeat_period(check_interval))


def _beat(path: Path, worker_id: str, at: float, overdue: list[int] | None = None) -> None:
    """Write the heartbeat file whole (write, then rename): a reader never sees half of it.
    Lines: pid, worker id, time of the beat (monotonic clock), and for a worker that stops
    beating because tasks overran, their ids (comma-separated)."""
    fresh = path.with_suffix(".new")
    lines = [str(os.getpid()), worker_id, repr(at)]
    if overdue:
        lines.append(",".join(map(str, overdue)))
    fresh.write_text("\n".join(lines) + "\n")
    os.replace(fresh, path)
