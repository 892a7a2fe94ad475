"""Real runner processes for the tests, and the evidence they leave (logs and ledgers)."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ROOT, count_tasks

_numbers = itertools.count()
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


class Runner:
    """`python -m sqlatasks.runner` in its own session (so signals reach only what we aim at)."""

    def __init__(self, db_url: str, ledger: Path, *args: str, imports: Iterable[str] = ()) -> None:
        self.log_path = ledger / f"runner-{next(_numbers)}.log"
        modules = list(imports) or ["tests.runner_tasks"]
        command = [sys.executable, "-m", "sqlatasks.runner"]
        for module in modules:
            command += ["--import", module]
        command += list(args)
        env = {
            **os.environ,
            "SQLATASKS_DATABASE_URL": db_url,
            "SQLATASKS_TEST_LEDGER": str(ledger),
            "SQLATASKS_CHECK_INTERVAL": os.environ.get("SQLATASKS_CHECK_INTERVAL", "2"),
        }
        self._log_file = self.log_path.open("w")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def log_times(self, pattern: str) -> list[float]:
        """Wall-clock times of the log lines matching `pattern`."""
        found = []
        for line in self.log().splitlines():
            match = LOG_TIME.match(line)
            if match and re.search(pattern, line):
                stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                found.append(stamp.timestamp())
        return found

    async def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 60) -> str:
        with anyio.fail_after(timeout):
            while True:
                text = self.log()
                if len(re.findall(pattern, text)) >= count:
                    return text
                if self.process.poll() is not None:
                    raise AssertionError(f"runner exited ({self.process.returncode}):\n{text}")
                await anyio.sleep(0.05)

    async def started(self, workers: int, timeout: float = 60) -> list[int]:
        """Wait until `workers` workers have started; their pids."""
        text = await self.wait_for_log(r"sqlatasks\.worker: started", workers, timeout)
        return [int(p) for p in re.findall(r"worker-\d+\[(\d+)\] sqlatasks\.worker: started", text)]

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float = 60) -> int:
        with anyio.fail_after(timeout):
            while self.process.poll() is None:
                await anyio.sleep(0.05)
        return self.process.returncode

    def kill(self) -> None:
        """Kill the runner and all its workers (the whole session)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log_file.close()


@dataclass(frozen=True)
class Entry:
    event: str
    key: int
    pid: int
    at: float


def ledger_entries(folder: Path) -> list[Entry]:
    entries = []
    for path in folder.glob("*.ledger"):
        for line in path.read_text().splitlines():
            event, key, pid, at = line.split()
            entries.append(Entry(event, int(key), int(pid), float(at)))
    return sorted(entries, key=lambda e: e.at)


async def wait_for_entries(
    folder: Path, event: str, count: int, timeout: float = 60
) -> list[Entry]:
    with anyio.fail_after(timeout):
        while True:
            found = [e for e in ledger_entries(folder) if e.event == event]
            if len(found) >= count:
                return found
            await anyio.sleep(0.05)


def peak_concurrency(entries: list[Entry]) -> int:
    """Most executions running at one instant, from start/end pairs in the ledger."""
    running = peak = 0
    for entry in sorted(entries, key=lambda e: (e.at, e.event == "start")):
        if entry.event == "start":
            running += 1
            peak = max(peak, running)
        elif entry.event == "end":
            running -= 1
    return peak


def now() -> float:
    return time.time()


async def wait_for_tasks(
    engine: AsyncEngine,
    *,
    exactly: int | None = None,
    at_least: int | None = None,
    where: str = "true",
    timeout: float = 10,
) -> int:
    """Wait until the queue rows matching `where` number `exactly` (or `at_least`) so many."""
    with anyio.fail_after(timeout):
        while True:
            count = await count_tasks(engine, where)
            if count == exactly or (at_least is not None and count >= at_least):
                return count
            await anyio.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
