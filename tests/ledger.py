"""The ledger: evidence of what ran, kept outside the queue, written by every test task module.

A task running in a worker process writes `write(event, key, **fields)`: one JSON line, in one
short O_APPEND write (atomic, and safe across processes), to a file of its own process in the
folder that SQLATASKS_TEST_LEDGER names (the runner fixture sets it to the test's folder). The
test reads `entries(folder)`, sorted by time. The same folder holds the gates a task waits on
(`gate`) and the markers by which a task remembers a first run across processes
(`first_time`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from tests.eventually import eventually

ENV = "SQLATASKS_TEST_LEDGER"
SUFFIX = ".ledger.jsonl"


@dataclass(frozen=True)
class Entry:
    event: str
    key: int | None
    pid: int
    at: float
    """Wall-clock time (time.time()) of the write."""
    fields: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Whatever else the writer recorded (attempt, lease token, outcome, …)."""


def folder() -> Path:
    """The ledger folder of the running test (in a worker: from the runner's environment)."""
    return Path(os.environ[ENV])


def write(
    event: str,
    key: int | None = None,
    *,
    into: Path | None = None,
    at: float | None = None,
    **fields: Any,
) -> None:
    """Append one entry; `into` defaults to `folder()`, `at` to now."""
    line = {"event": event, "key": key, "pid": os.getpid(), "at": at or time.time(), **fields}
    path = (into or folder()) / f"{os.getpid()}{SUFFIX}"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def entries(where: Path, *events: str) -> list[Entry]:
    """Every entry in the folder (or only those of `events`), oldest first."""
    found = []
    for path in where.glob(f"*{SUFFIX}"):
        text = path.read_text()
        # A line still being appended (read mid-write) ends without its newline: not yet.
        for line in text[: text.rfind("\n") + 1].splitlines():
            raw = json.loads(line)
            event, key, pid, at = raw.pop("event"), raw.pop("key"), raw.pop("pid"), raw.pop("at")
            if not events or event in events:
                found.append(Entry(event, key, pid, at, raw))
    return sorted(found, key=lambda e: e.at)


async def wait_for_entries(
    where: Path, event: str, count: int, timeout: float = 60.0
) -> list[Entry]:
    """Wait until at least `count` entries of `event` are written; all of them."""
    return await eventually(
        lambda: entries(where, event),
        lambda found: len(found) >= count,
        what=f"{count} {event!r} entries in the ledger",
        timeout=timeout,
    )


def keys(found: Iterable[Entry]) -> list[int | None]:
    return [e.key for e in found]


def peak_concurrency(found: list[Entry]) -> int:
    """Most executions running at one instant, from start/end pairs."""
    running = peak = 0
    for entry in sorted(found, key=lambda e: (e.at, e.event == "start")):
        if entry.event == "start":
            running += 1
            peak = max(peak, running)
        elif entry.event == "end":
            running -= 1
    return peak


def first_time(name: str) -> bool:
    """True on the first call for `name` in this test, whichever process calls."""
    try:
        (folder() / f"first-{name}").touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def open_gate(where: Path, name: str) -> None:
    """Let every task waiting on `gate(name)` go on."""
    (where / f"gate-{name}").touch()


async def gate(name: str, timeout: float = 60.0) -> None:
    """Wait (in a task) until the test calls `open_gate(name)`."""
    marker = anyio.Path(folder() / f"gate-{name}")
    await eventually(marker.exists, what=f"the test to open gate {name!r}", timeout=timeout)
