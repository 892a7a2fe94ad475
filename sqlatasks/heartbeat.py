"""A worker's heartbeat: the file the supervisor reads to tell a sound worker from a hung one.

The rules of its timing (period, grace past a time limit, timeout) are in `sqlatasks.attempts`;
the reader is `supervisor.WorkerSeat`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
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
    tasks back uncounted. Every beat also lists the running tasks' deadlines, so that after a
    loop blocked by one task the supervisor can charge the tasks past their time limit alone.
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
            _beat(path, worker_id, last_beat, deadlines=dispatcher.deadlines())
        await anyio.sleep(attempts.heartbeat_period(check_interval))


def _beat(
    path: Path,
    worker_id: str,
    at: float,
    overdue: list[int] | None = None,
    deadlines: dict[int, float] | None = None,
) -> None:
    """Write the heartbeat file whole (write, then rename): a reader never sees half of it.
    Lines: pid, worker id, time of the beat (monotonic clock), then `overdue=ID,...` for a
    worker that stops beating because tasks overran, and `deadlines=ID@TIME,...` (monotonic
    clock) of its running tasks."""
    fresh = path.with_suffix(".new")
    lines = [str(os.getpid()), worker_id, repr(at)]
    if overdue:
        lines.append("overdue=" + ",".join(map(str, overdue)))
    if deadlines:
        lines.append("deadlines=" + ",".join(f"{i}@{t!r}" for i, t in deadlines.items()))
    fresh.write_text("\n".join(lines) + "\n")
    os.replace(fresh, path)


@dataclass(frozen=True, slots=True)
class Beat:
    """A heartbeat file as the supervisor reads it."""

    pid: int
    worker_id: str
    at: float
    """The time of the beat (monotonic clock)."""
    overdue: frozenset[int] | None
    """Tasks the worker stopped beating for; None if it named none."""
    deadlines: dict[int, float]
    """Running tasks' ends of their time limits (monotonic clock)."""

    def innocent(self, killed_at: float | None) -> frozenset[int]:
        """For a worker killed as hung at `killed_at` (its loop blocked): the tasks its last
        beat shows well within their time limit then, which cannot be what blocked it. The
        blocker is past its limit, or started after the last beat."""
        if killed_at is None:
            return frozenset()
        return frozenset(i for i, end in self.deadlines.items() if end > killed_at)


def read(path: Path) -> Beat | None:
    """The heartbeat in `path`, or None if there is none yet (or it cannot be read)."""
    try:
        fields = path.read_text().split()
        named = dict(f.split("=", 1) for f in fields[3:] if "=" in f)
        deadlines = (entry.split("@") for entry in named.get("deadlines", "").split(",") if entry)
        return Beat(
            pid=int(fields[0]),
            worker_id=fields[1],
            at=float(fields[2]),
            overdue=(
                frozenset(int(i) for i in named["overdue"].split(","))
                if "overdue" in named
                else None
            ),
            deadlines={int(i): float(end) for i, end in deadlines},
        )
    except (OSError, IndexError, ValueError):
        return None
