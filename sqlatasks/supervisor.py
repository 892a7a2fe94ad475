"""The supervisor: keeps N worker processes alive, relays their logs, passes on shutdown.

Every check interval it looks at each worker's heartbeat. A worker that exits or crashes is
started again (with backoff when it keeps crashing right after start); a worker whose heartbeat
is older than `attempts.heartbeat_timeout` is hung or blocked, and is killed (SIGKILL, by
cancelling its `run_sync` call) and replaced well before its leases can expire.

SIGTERM or SIGINT: tell every worker to stop (SIGTERM), wait for them up to the shutdown
timeout, and return. A second signal tells them to stop at once (SIGUSR1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_process
from anyio.abc import TaskGroup
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from sqlatasks import (
    attempts,
    connection,
    errors,
    execution,
    heartbeat,
    logs,
    observe,
    poolers,
    rescue,
    startup,
)
from sqlatasks.backoff import Backoff
from sqlatasks.heartbeat import Beat
from sqlatasks.settings import STARTUP_GRACE, Settings
from sqlatasks.worker import STOP_NOW, worker_main

log = logging.getLogger(__name__)

STOP_MARGIN = 10.0
"""Seconds past the shutdown timeout before workers still running are killed."""
CRASH_LOOP_WINDOW = 10.0
"""A worker that dies sooner than this after starting is restarted with growing backoff."""


@dataclass
class WorkerSeat:
    """Worker number `index` of this runner: the process in it comes and goes."""

    index: int
    heartbeat: Path
    started_at: float = 0.0
    scope: anyio.CancelScope | None = None
    retiring: bool = False
    died_young: bool = False
    """The last worker here died within CRASH_LOOP_WINDOW of its start."""
    restarts: Backoff = field(default_factory=lambda: Backoff(first=1.0, most=30.0))
    """Waits before restarting a worker that keeps dying soon after it starts."""
    last_crash: str | None = None
    killed_at: float | None = None
    """When the supervisor killed the worker here as hung (monotonic clock); None otherwise."""

    def crashed(self, reason: str) -> None:
        """Say why the worker failed, once: one failing to start fails alike at each restart."""
        level = logging.DEBUG if reason == self.last_crash else logging.ERROR
        log.log(level, "worker-%d crashed: %s", self.index, reason)
        self.last_crash = reason

    def beat(self) -> Beat | None:
        """The worker's last heartbeat; None before its first."""
        return heartbeat.read(self.heartbeat)

    def pid(self) -> int | None:
        beat = self.beat()
        return beat.pid if beat else None

    def worker_id(self) -> str | None:
        beat = self.beat()
        return beat.worker_id if beat else None

    def heartbeat_age(self) -> float | None:
        """Seconds since the last beat; the monotonic clock is system-wide on Linux."""
        beat = self.beat()
        return time.monotonic() - beat.at if beat else None


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        relay: tuple[int, str],
        metrics: observe.Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._relay = relay
        self._metrics = metrics
        self._limiter = anyio.CapacityLimiter(settings.workers)
        self._seats = [
            WorkerSeat(i, workdir / f"worker-{i}.heartbeat") for i in range(settings.workers)
        ]
        self._stopping = False
        self._startup: anyio.CancelScope | None = None
        self._limits = execution.Limits(
            task_timeout=settings.task_timeout,
            retry_delay=settings.retry_delay,
            allowed_imports=settings.imports,
        )
        # One connection, for start-up checks and releasing dead workers' tasks.
        # A connection left read-only by a failover is discarded, not reused for the rescues.
        self._engine = connection.discard_broken_connections(
            poolers.adapt(
                create_async_engine(
                    settings.database_url,
                    pool_size=1,
                    pool_pre_ping=True,
                    connect_args={
                        "server_settings": {"application_name": "sqlatasks supervisor"},
                        "timeout": startup.CONNECT_TIMEOUT,
                    },
                )
            )
        )

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_signals, tg)
            with anyio.CancelScope() as self._startup:
                give_up = startup.BURST_DATABASE_WAIT if self._settings.burst else None
                await startup.wait_for_database(self._engine, give_up_after=give_up)
                log.info(
                    "starting %d workers, concurrency %d each",
                    self._settings.workers,
                    self._settings.concurrency,
                )
                tg.start_soon(self._check_loop)
                async with anyio.create_task_group() as workers:
                    for seat in self._seats:
                        workers.start_soon(self._keep_alive, seat)
            tg.cancel_scope.cancel()
        await self._engine.dispose()
        log.info("stopped")

    async def _keep_alive(self, seat: WorkerSeat) -> None:
        while not self._stopping:
            seat.killed_at = None
            seat.heartbeat.unlink(missing_ok=True)
            seat.started_at = anyio.current_time()
            result = None
            reusable = False  # did the worker function end, leaving its process in the pool?
            with anyio.CancelScope() as seat.scope:
                try:
                    result = await anyio.to_process.run_sync(
                        worker_main,
                        self._settings,
                        seat.index,
                        str(seat.heartbeat),
                        self._relay,
                        cancellable=True,
                        limiter=self._limiter,
                    )
                    reusable = True
                except anyio.BrokenWorkerProcess:
                    if seat.pid() is None and seat.retiring:
                        # The pool handed back the process of the last worker, which retires
                        # itself (see worker_main): the next call starts a fresh one.
                        seat.retiring = False
                        continue
                    log.warning("worker-%d died (exit without a result)", seat.index)
                except anyio.get_cancelled_exc_class():
                    raise
                except BaseException as exc:  # even SystemExit from a task must not end us
                    seat.crashed(errors.one_line(exc))
                    reusable = True
            seat.retiring = reusable
            seat.scope = None
            if result is None:
                await self._rescue(seat)
            # A slot ends only when the runner stops, or when a burst has drained the queue.
            # Anything else ("drained" outside --burst, a crash) is a worker to replace:
            # nothing a task raises may shrink the service.
            if self._stopping or (result == "drained" and self._settings.burst):
                return
            if result is not None:
                log.warning("worker-%d returned (%s) unexpectedly", seat.index, result)
            backoff = 0.0  # the first early death is restarted at once; the next ones back off
            if anyio.current_time() - seat.started_at >= CRASH_LOOP_WINDOW:
                seat.restarts.reset()
                seat.died_young = False
            elif not seat.died_young:
                seat.died_young = True
            else:
                backoff = seat.restarts.next()
            log.info("restarting worker-%d%s", seat.index, f" in {backoff:g} s" if backoff else "")
            if self._metrics is not None:
                self._metrics.restarts.inc()
            await anyio.sleep(backoff)

    async def _rescue(self, seat: WorkerSeat) -> None:
        """The worker is dead for sure: settle its leased tasks now (`rescue.rescue`)."""
        worker_id = seat.worker_id()
        if worker_id is None:
            return  # it never started, so it holds no lease
        beat = seat.beat()
        overdue = beat.overdue if beat else None
        innocent = beat.innocent(seat.killed_at) if beat else frozenset()
        try:
            count = await rescue.rescue(
                self._engine, worker_id, overdue, self._limits, innocent=innocent
            )
        except (SQLAlchemyError, OSError) as exc:
            log.warning(
                "could not release worker-%d's tasks (%s); their leases will expire",
                seat.index,
                errors.one_line(exc),
            )
            return
        if count:
            log.warning(
                "worker-%d died holding %d tasks: %s",
                seat.index,
                count,
                "each due again after its retry delay"
                if overdue is None and not innocent
                else "charged the ones that overran, gave back the others uncounted",
            )

    async def _check_loop(self) -> None:
        while True:
            await anyio.sleep(self._settings.check_interval)
            now = anyio.current_time()
            for seat in self._seats:
                if seat.scope is None:
                    continue
                age = seat.heartbeat_age()
                running_for = now - seat.started_at
                if age is None:
                    if running_for > STARTUP_GRACE:
                        self._kill_hung(seat, f"no heartbeat {running_for:.0f} s after start")
                elif age > attempts.heartbeat_timeout(self._settings.check_interval):
                    self._kill_hung(seat, f"no heartbeat for {age:.1f} s")

    def _kill_hung(self, seat: WorkerSeat, why: str) -> None:
        log.error("worker-%d is hung (%s): killing it", seat.index, why)
        if seat.scope is not None:
            seat.killed_at = time.monotonic()
            seat.scope.cancel()

    async def _watch_signals(self, tg: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            count = 0
            async for signum in signals:
                count += 1
                name = signal.Signals(signum).name
                if count == 1:
                    log.info(
                        "%s: stopping workers (running tasks get %g s)",
                        name,
                        self._settings.shutdown_timeout,
                    )
                    self._stopping = True
                    if self._startup is not None and not any(x.scope for x in self._seats):
                        self._startup.cancel()  # still waiting for the database
                    tg.start_soon(self._kill_after, self._settings.shutdown_timeout + STOP_MARGIN)
                else:
                    log.info("%s again: stopping workers now", name)
                    tg.start_soon(self._kill_after, STOP_MARGIN)
                for seat in self._seats:
                    self._signal_worker(seat, signal.SIGTERM if count == 1 else STOP_NOW)

    def _signal_worker(self, seat: WorkerSeat, signum: signal.Signals | None) -> None:
        if seat.scope is None or signum is None:
            return
        pid = seat.pid()
        if pid is None:
            # Not started yet, so it holds no lease: nothing to wait for.
            seat.scope.cancel()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    async def _kill_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        for seat in self._seats:
            if seat.scope is not None:
                log.error("worker-%d did not stop in time: killing it", seat.index)
                seat.scope.cancel()


async def supervise(settings: Settings) -> None:
    """Run the service until a signal stops it (or, with burst, until the queue is drained)."""
    metrics = observe.Metrics() if settings.metrics_port is not None else None
    relay = logs.Relay(logs.output(), metrics.on_event if metrics else lambda _event: None)
    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(observe.serve_relay, relay)
            with tempfile.TemporaryDirectory(prefix="sqlatasks-") as workdir:
                sup = Supervisor(settings, Path(workdir), (port, relay.token), metrics)
                stop_http = observe.start_http(settings, sup._seats, sup._engine, metrics)
                try:
                    await sup.run()
                finally:
                    stop_http()
            # The workers are gone: their connections close after their last lines.
            with anyio.move_on_after(2, shield=True):
                await relay.drained()
            tg.cancel_scope.cancel()
    finally:
        relay.stop()
