"""Real runner processes for the tests: `Runners` starts them (the `start_runner` fixture of
tests/conftest.py hands one to a test), `Runner` is one of them, with its log.

Every runner a test starts shares the test's ledger folder (tests/ledger.py), where its tasks
write their evidence and its log file lies.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tests import ledger
from tests.conftest import ROOT, count_tasks
from tests.eventually import eventually

_numbers = itertools.count()
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
STARTED = r"worker-\d+\[(\d+)\] sqlatasks\.worker: started"


class Runner:
    """`python -m sqlatasks.runner` in its own session (so signals reach only what we aim at)."""

    def __init__(
        self, database_url: str, folder: Path, args: Sequence[str], imports: Iterable[str]
    ) -> None:
        self.log_path = folder / f"runner-{next(_numbers)}.log"
        command = [sys.executable, "-m", "sqlatasks.runner"]
        for module in imports:
            command += ["--import", module]
        command += list(args)
        env = {
            **os.environ,
            "SQLATASKS_DATABASE_URL": database_url,
            ledger.ENV: str(folder),
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

    def _log_while_running(self) -> str:
        text = self.log()
        if self.process.poll() is not None:
            raise AssertionError(f"runner exited ({self.process.returncode}):\n{text}")
        return text

    async def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 60) -> str:
        """Wait until `pattern` matches `count` times in the log (fails if the runner exits)."""
        return await eventually(
            self._log_while_running,
            lambda text: len(re.findall(pattern, text)) >= count,
            what=f"{count} log lines matching {pattern!r} from {self.log_path.name}",
            timeout=timeout,
        )

    async def started(self, workers: int, timeout: float = 60) -> list[int]:
        """Wait until `workers` workers have started (restarts count); their pids."""
        text = await self.wait_for_log(STARTED, workers, timeout)
        return [int(pid) for pid in re.findall(STARTED, text)]

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float = 60) -> int:
        code = await eventually(
            self.process.poll,
            lambda code: code is not None,
            what=f"the runner logging to {self.log_path.name} to exit",
            timeout=timeout,
        )
        assert code is not None
        return code

    def kill(self) -> None:
        """Kill the runner and all its workers (the whole session)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log_file.close()


class Runners:
    """Starts runner processes on one database, all sharing one ledger folder; `close()` kills
    every one of them and their workers.

    `runners(*flags)` starts `python -m sqlatasks.runner --import … *flags`; `imports` and
    `database_url` override this factory's defaults for one runner.
    """

    def __init__(
        self,
        database_url: str,
        folder: Path,
        imports: Sequence[str] = ("tests.runner_tasks",),
    ) -> None:
        self.database_url = database_url
        self.folder = folder
        """The ledger folder: tasks' evidence and the runners' logs."""
        self.imports = imports
        self.started: list[Runner] = []

    def __call__(
        self, *args: str, imports: Sequence[str] | None = None, database_url: str | None = None
    ) -> Runner:
        runner = Runner(
            database_url or self.database_url,
            self.folder,
            args,
            self.imports if imports is None else imports,
        )
        self.started.append(runner)
        return runner

    def logs(self) -> str:
        """Every log of every runner started, one after the other."""
        return "".join(runner.log() for runner in self.started)

    def close(self) -> None:
        for runner in self.started:
            runner.kill()


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
    wanted = f"exactly {exactly}" if exactly is not None else f"at least {at_least}"
    return await eventually(
        lambda: count_tasks(engine, where),
        lambda count: count == exactly or (at_least is not None and count >= at_least),
        what=f"{wanted} queue rows where {where}",
        timeout=timeout,
    )


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


async def wait_dead(pid: int, timeout: float = 60) -> float:
    """Wait until `pid` is gone (or a zombie); the time it was first seen gone (an upper bound)."""
    await eventually(
        lambda: not alive(pid) or zombie(pid), what=f"process {pid} to die", timeout=timeout
    )
    return time.time()


def children(pid: int) -> list[int]:
    """The direct children of a process (a runner's workers), from /proc."""
    found = []
    with contextlib.suppress(OSError):
        for thread in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (thread / "children").read_text().split()]
    return found
