"""The supervisor: keeps N worker processes alive, relays their logs, passes on shutdown.

Every check interval it looks at each worker's heartbeat. A worker that exits or crashes is
started again (with backoff when it keeps crashing right after start); a worker whose heartbeat
is older than `Settings.heartbeat_timeout` is hung or blocked, and is killed (SIGKILL, by
cancelling its `run_sync` call) and replaced well before its leases can expire.

SIGTERM or SIGINT: tell every worker to stop (SIGTERM), wait for them up to the shutdown
timeout, and return. A second signal tells them to stop at once (SIGUSR1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_process
from anyio.abc import TaskGroup
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqlatasks import errors, queries
from sqlatasks.settings import STARTUP_GRACE, Settings
from sqlatasks.worker import STOP_NOW, worker_main

log = logging.getLogger(__name__)

STOP_MARGIN = 10.0
"""Seconds past the shutdown timeout before workers still running are killed."""
CRASH_LOOP_WINDOW = 10.0
"""A worker that dies sooner than this after starting is restarted with growing backoff."""
DATABASE_RETRY_MAX = 30.0


@dataclass
class Slot:
    """One worker position: the process in it comes and goes."""

    index: int
    heartbeat: Path
    started_at: float = 0.0
    scope: anyio.CancelScope | None = None
    retiring: bool = False
    crashes: int = 0

    def _fields(self) -> list[str]:
        """pid, worker id, last beat (monotonic clock): written whole by the worker."""
        try:
            return self.heartbeat.read_text().split()
        except OSError:
            return []

    def pid(self) -> int | None:
        fields = self._fields()
        return int(fields[0]) if fields else None

    def worker_id(self) -> str | None:
        fields = self._fields()
        return fields[1] if fields else None

    def heartbeat_age(self) -> float | None:
        """Seconds since the last beat; the monotonic clock is system-wide on Linux."""
        fields = self._fields()
        return time.monotonic() - float(fields[2]) if fields else None


class Supervisor:
    def __init__(self, settings: Settings, workdir: Path, log_path: str) -> None:
        self._settings = settings
        self._log_path = log_path
        self._limiter = anyio.CapacityLimiter(settings.workers)
        self._slots = [Slot(i, workdir / f"worker-{i}.heartbeat") for i in range(settings.workers)]
        self._stopping = False
        self._startup: anyio.CancelScope | None = None
        # One connection, for start-up checks and releasing dead workers' tasks.
        self._engine = create_async_engine(
            settings.database_url,
            pool_size=1,
            pool_pre_ping=True,
            connect_args={"server_settings": {"application_name": "sqlatasks supervisor"}},
        )

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_signals, tg)
            with anyio.CancelScope() as self._startup:
                await wait_for_database(self._engine)
                log.info(
                    "starting %d workers x %d slots",
                    self._settings.workers,
                    self._settings.concurrency,
                )
                tg.start_soon(self._check_loop)
                async with anyio.create_task_group() as workers:
                    for slot in self._slots:
                        workers.start_soon(self._keep_alive, slot)
            tg.cancel_scope.cancel()
        await self._engine.dispose()
        log.info("stopped")

    async def _keep_alive(self, slot: Slot) -> None:
        while not self._stopping:
            slot.heartbeat.unlink(missing_ok=True)
            slot.started_at = anyio.current_time()
            result = None
            reusable = False  # did the worker function end, leaving its process in the pool?
            with anyio.CancelScope() as slot.scope:
                try:
                    result = await anyio.to_process.run_sync(
                        worker_main,
                        self._settings,
                        slot.index,
                        str(slot.heartbeat),
                        self._log_path,
                        cancellable=True,
                        limiter=self._limiter,
                    )
                    reusable = True
                except anyio.BrokenWorkerProcess:
                    if slot.pid() is None and slot.retiring:
                        # The pool handed back the process of the last worker, which retires
                        # itself (see worker_main): the next call starts a fresh one.
                        slot.retiring = False
                        continue
                    log.warning("worker-%d died (exit without a result)", slot.index)
                except anyio.get_cancelled_exc_class():
                    raise
                except BaseException as exc:  # even SystemExit from a task must not end us
                    log.error("worker-%d crashed: %s", slot.index, errors.one_line(exc))
                    reusable = True
            slot.retiring = reusable
            slot.scope = None
            if result is None:
                await self._rescue(slot)
            if result == "drained" or self._stopping:
                return
            if result is not None:
                log.warning("worker-%d returned (%s) unexpectedly", slot.index, result)
            lived = anyio.current_time() - slot.started_at
            slot.crashes = slot.crashes + 1 if lived < CRASH_LOOP_WINDOW else 0
            backoff = min(2.0 ** (slot.crashes - 1), 30.0) if slot.crashes > 1 else 0.0
            log.info("restarting worker-%d%s", slot.index, f" in {backoff:g} s" if backoff else "")
            await anyio.sleep(backoff)

    async def _rescue(self, slot: Slot) -> None:
        """The worker is dead for sure (exited or killed): fail its leased tasks at once,
        rather than leave them until their leases expire."""
        worker_id = slot.worker_id()
        if worker_id is None:
            return  # it never started, so it holds no lease
        try:
            async with self._engine.begin() as conn:
                count = await queries.task_rescue(
                    conn,
                    worker_id=worker_id,
                    delay=self._settings.retry_delay,
                    error=f"WorkerLost: worker {worker_id} died while running it",
                )
        except (SQLAlchemyError, OSError) as exc:
            log.warning(
                "could not release worker-%d's tasks (%s); their leases will expire",
                slot.index,
                errors.one_line(exc),
            )
            return
        if count:
            log.warning(
                "worker-%d died holding %d tasks: due again after the retry delay",
                slot.index,
                count,
            )

    async def _check_loop(self) -> None:
        while True:
            await anyio.sleep(self._settings.check_interval)
            now = anyio.current_time()
            for slot in self._slots:
                if slot.scope is None:
                    continue
                age = slot.heartbeat_age()
                running_for = now - slot.started_at
                if age is None:
                    if running_for > STARTUP_GRACE:
                        self._kill_hung(slot, f"no heartbeat {running_for:.0f} s after start")
                elif age > self._settings.heartbeat_timeout:
                    self._kill_hung(slot, f"no heartbeat for {age:.1f} s")

    def _kill_hung(self, slot: Slot, why: str) -> None:
        log.error("worker-%d is hung (%s): killing it", slot.index, why)
        if slot.scope is not None:
            slot.scope.cancel()

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
                    if self._startup is not None and not any(x.scope for x in self._slots):
                        self._startup.cancel()  # still waiting for the database
                    tg.start_soon(self._kill_after, self._settings.shutdown_timeout + STOP_MARGIN)
                else:
                    log.info("%s again: stopping workers now", name)
                    tg.start_soon(self._kill_after, STOP_MARGIN)
                for slot in self._slots:
                    self._signal_worker(slot, signal.SIGTERM if count == 1 else STOP_NOW)

    def _signal_worker(self, slot: Slot, signum: signal.Signals) -> None:
        if slot.scope is None:
            return
        pid = slot.pid()
        if pid is None:
            # Not started yet, so it holds no lease: nothing to wait for.
            slot.scope.cancel()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    async def _kill_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        for slot in self._slots:
            if slot.scope is not None:
                log.error("worker-%d did not stop in time: killing it", slot.index)
                slot.scope.cancel()


async def wait_for_database(engine: AsyncEngine) -> None:
    """Return once the database answers and has the queue table; log one line per failure."""
    delay = 1.0
    while True:
        try:
            async with engine.connect() as conn:
                if await queries.database_check(conn):
                    return
            raise errors.ConfigurationError(
                "the queue table sqlatasks_tasks does not exist: run `alembic upgrade head`"
            )
        except (SQLAlchemyError, OSError) as exc:
            log.error("database unreachable (%s); retrying in %g s", errors.one_line(exc), delay)
        await anyio.sleep(delay)
        delay = min(delay * 2, DATABASE_RETRY_MAX)


def relay_logs(read_fd: int) -> None:
    """Copy worker log lines to this process's stderr until every writer has closed."""
    with open(read_fd, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            # Keep draining even if our stderr is gone (a restarted log shipper): workers
            # whose log pipe fills up block, stop beating, and get killed as hung.
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(line)
                sys.stderr.flush()


async def supervise(settings: Settings) -> None:
    """Run the service until a signal stops it (or, with burst, until the queue is drained)."""
    read_fd, write_fd = os.pipe()
    # Workers open our end of the pipe by path: anyio starts them without inherited fds, and
    # points their own stderr at a pipe that nobody reads.
    log_path = f"/proc/{os.getpid()}/fd/{write_fd}"
    relayed = anyio.Event()

    async def relay() -> None:
        await anyio.to_thread.run_sync(relay_logs, read_fd, abandon_on_cancel=True)
        relayed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(relay)
        try:
            with tempfile.TemporaryDirectory(prefix="sqlatasks-") as workdir:
                await Supervisor(settings, Path(workdir), log_path).run()
        finally:
            os.close(write_fd)
            # The workers are gone, so the relay sees end-of-file after their last lines.
            with anyio.move_on_after(2, shield=True):
                await relayed.wait()
            tg.cancel_scope.cancel()
