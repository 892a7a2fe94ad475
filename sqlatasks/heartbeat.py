"""A worker's heartbeat: the file the supervisor reads to tell a sound worker from a hung one.

The rules of its timing (period, grace past a time limit, timeout) are in `sqlatasks.attempts`;
the reader is `supervisor.WorkerSeat`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import anyio

from sqlatasks import attempts
from sqlatasks.dispatcher import Dispatcher

log = logging.getLogger("sqlatasks.worker")  # its lines belong to the worker


async def beat_until_stopped(
    path: Path,
    worker_id: str,
    check_interval: float,
    dispatcher: Dispatcher,
) -> None:
    """Prove this worker is sound, every `attempts.heartbeat_period`; stop the dispatcher if
    the supervisor is gone.

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
