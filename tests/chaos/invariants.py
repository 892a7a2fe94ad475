"""The evidence of a chaos run and the invariants it must satisfy.

Executions and faults both come from the ledger (tests/ledger.py): the tasks
(tests/chaos/tasks.py) write their starts and ends, the test or soak its faults as it injects
them; the end state comes from the queue table. `check`
returns a `Verdict`; `Verdict.problems()` lists every broken invariant:

- every committed task completed (or, for a task built to fail, was parked at max_attempts);
- no task from a rolled-back transaction ever ran;
- no two executions of one task overlapped in time (a stopped process runs nothing);
- every extra execution (one after an execution that neither failed nor was fenced) matches
  an injected fault;
- attempts never pass max_attempts.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests import ledger

FAILED = {"raised", "cancelled", "exit"}
"""End outcomes after which running the task again is a retry, not a duplicate."""


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float
    until: float
    pids: frozenset[int] = frozenset()
    """Processes it hit; empty for a fault on the server or its connections."""


class FaultLog:
    """The faults of a run, as `fault` entries of its ledger (written by whoever injects one)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def record(
        self,
        kind: str,
        pids: Iterable[int] = (),
        at: float | None = None,
        until: float | None = None,
    ) -> None:
        start = time.time() if at is None else at
        ledger.write(
            "fault", into=self.folder, at=start, kind=kind, pids=sorted(pids), until=until or start
        )

    def read(self) -> list[Fault]:
        return [
            Fault(e.fields["kind"], e.at, e.fields["until"], frozenset(e.fields["pids"]))
            for e in ledger.entries(self.folder, "fault")
        ]


@dataclass
class Execution:
    id: int
    key: int
    task: str
    attempt: int
    max_attempts: int | None
    token: str
    pid: int
    start: float
    end: float | None = None
    outcome: str = ""

    def segments(self, faults: list[Fault]) -> list[tuple[float, float]]:
        """When it was running: start to end (or its process's death), minus stopped spans."""
        end = self.end if self.end is not None else self._death(faults)
        spans = [(self.start, end)]
        for fault in faults:
            if self.pid not in fault.pids:
                continue
            if fault.kind == "sigstop":
                spans = [piece for span in spans for piece in _cut(span, fault.at, fault.until)]
            elif fault.kind == "sigstop past lease":
                # Its lease passed on while it was stopped: what it runs after SIGCONT runs
                # under no lease (its writes are fenced by the token), so it is not a run
                # "under a valid lease" and may overlap the new holder's.
                spans = [piece for span in spans for piece in _cut(span, fault.at, math.inf)]
        return spans

    def _death(self, faults: list[Fault]) -> float:
        # A start logged up to DELIVERY after its process's recorded kill: the process ran on
        # until the signal landed (CI saw three starts 0.03 to 0.2 ms after a SIGKILL's record).
        deaths = [
            max(f.at, self.start)
            for f in faults
            if f.kind in DEATHS and self.pid in f.pids and f.at >= self.start - DELIVERY
        ]
        return min(deaths, default=math.inf)  # unexplained: it may still be running


DEATHS = {"sigkill worker", "sigkill runner", "worker killed as hung", "task called os._exit"}
DELIVERY = 1.0
"""Seconds a killed process may still log after the kill was recorded (the signal is sent
after the record, and lands asynchronously); it runs nothing after that."""


def _cut(span: tuple[float, float], start: float, end: float) -> list[tuple[float, float]]:
    a, b = span
    pieces = [(a, min(b, start)), (max(a, end), b)]
    return [(x, y) for x, y in pieces if x < y]


def read_executions(folder: Path) -> list[Execution]:
    """Every execution, known by (row id, lease token): one claim's token covers its batch."""
    runs: dict[tuple[int, str], Execution] = {}
    # One read of the folder for both kinds: read twice while runners write, an execution
    # that started after the first read could show its end without its start.
    written = ledger.entries(folder, "start", "end")
    for entry in (e for e in written if e.event == "start"):
        raw: dict[str, Any] = entry.fields
        assert entry.key is not None
        runs[raw["id"], raw["token"]] = Execution(
            raw["id"],
            entry.key,
            raw["task"],
            raw["attempt"],
            raw["max_attempts"],
            raw["token"],
            entry.pid,
            entry.at,
        )
    for entry in (e for e in written if e.event == "end"):
        run = runs[entry.fields["id"], entry.fields["token"]]
        run.end, run.outcome = entry.at, entry.fields["outcome"]
    return sorted(runs.values(), key=lambda r: r.start)


@dataclass(frozen=True)
class Row:
    key: int
    task: str
    attempts: int
    parked: bool
    leased: bool


async def read_rows(engine: AsyncEngine) -> list[Row]:
    statement = text(
        "SELECT (payload->>'key')::int, task_name, attempts, failed_at IS NOT NULL,"
        " locked_until IS NOT NULL FROM sqlatasks_tasks"
    )
    async with engine.connect() as conn:
        return [Row(*found) for found in (await conn.execute(statement)).all()]


@dataclass(frozen=True)
class Duplicate:
    key: int
    attempt: int
    cause: str


@dataclass
class Verdict:
    enqueued: int
    completed: int
    parked: int
    executions: int
    retries: int
    lost: list[int] = field(default_factory=list)
    rolled_back_ran: list[int] = field(default_factory=list)
    overlaps: list[tuple[int, str, str]] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    past_max_attempts: list[tuple[int, int]] = field(default_factory=list)
    leftover_rows: list[Row] = field(default_factory=list)

    def unexplained(self) -> list[Duplicate]:
        return [d for d in self.duplicates if d.cause == "unexplained"]

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"lost (committed, never completed): {self.lost[:20]}")
        if self.rolled_back_ran:
            found.append(f"ran although rolled back: {self.rolled_back_ran[:20]}")
        if self.overlaps:
            found.append(f"overlapping executions: {self.overlaps[:20]}")
        if self.unexplained():
            found.append(f"duplicates without a fault: {self.unexplained()[:20]}")
        if self.past_max_attempts:
            found.append(f"attempts past max_attempts: {self.past_max_attempts[:20]}")
        if self.leftover_rows:
            found.append(f"rows left that should not be: {self.leftover_rows[:20]}")
        return found

    def assert_ok(self) -> None:
        problems = self.problems()
        assert not problems, "\n".join(problems)

    def summary(self) -> list[str]:
        causes: dict[str, int] = defaultdict(int)
        for duplicate in self.duplicates:
            causes[duplicate.cause] += 1
        lines = [
            f"tasks enqueued (committed): {self.enqueued}",
            f"completed: {self.completed}, parked as designed: {self.parked}, "
            f"lost: {len(self.lost)}",
            f"executions: {self.executions} (retries after a failure: {self.retries})",
            f"duplicate executions: {len(self.duplicates)}"
            + "".join(f"\n  {n} x {cause}" for cause, n in sorted(causes.items())),
            f"overlapping executions: {len(self.overlaps)}",
            f"rolled-back tasks that ran: {len(self.rolled_back_ran)}",
            f"attempts past max_attempts: {len(self.past_max_attempts)}",
        ]
        return lines


def check(
    executions: list[Execution],
    faults: list[Fault],
    rows: list[Row],
    *,
    committed: Iterable[int],
    must_park: Iterable[int] = (),
    rolled_back: Iterable[int] = (),
    uncertain: Iterable[int] = (),
) -> Verdict:
    """Judge a finished run. `must_park`: committed keys of tasks built to fail until parked;
    `uncertain`: keys whose commit raised (it may or may not have happened)."""
    committed, must_park = set(committed), set(must_park)
    rolled_back, uncertain = set(rolled_back), set(uncertain)
    by_key: dict[int, list[Execution]] = defaultdict(list)
    for run in executions:
        by_key[run.key].append(run)
    parked_rows = {row.key for row in rows if row.parked}
    completed = {key for key, runs in by_key.items() if any(r.outcome == "ok" for r in runs)}
    verdict = Verdict(
        enqueued=len(committed),
        completed=len(completed & committed),
        parked=len(parked_rows & must_park),
        executions=len(executions),
        retries=0,
    )
    verdict.lost = sorted((committed - must_park - completed) | (must_park - parked_rows))
    verdict.rolled_back_ran = sorted(rolled_back & set(by_key))
    verdict.leftover_rows = [
        row
        for row in rows
        if not (row.parked and row.key in must_park) and row.key not in uncertain
    ]
    for key, runs in by_key.items():
        for run in runs:
            if run.max_attempts is not None and run.attempt > run.max_attempts:
                verdict.past_max_attempts.append((key, run.attempt))
        for earlier, later in itertools.pairwise(runs):
            if earlier.outcome in FAILED:
                verdict.retries += 1
            else:
                cause = _cause(earlier, later, faults)
                verdict.duplicates.append(Duplicate(key, later.attempt, cause))
        for i, first in enumerate(runs):
            for second in runs[i + 1 :]:
                if _overlap(first.segments(faults), second.segments(faults)):
                    verdict.overlaps.append((key, first.token, second.token))
    return verdict


def _cause(earlier: Execution, later: Execution, faults: list[Fault]) -> str:
    """The injected fault that explains running `later` after `earlier` did not fail."""
    for fault in faults:
        slack = DELIVERY if fault.kind in DEATHS else 0.0  # a start logged as the kill landed
        in_window = earlier.start <= fault.until + slack and fault.at <= later.start
        if in_window and (not fault.pids or earlier.pid in fault.pids):
            done = earlier.end is not None and earlier.end <= fault.at
            state = "after its end, before its ack" if done else "mid-task"
            return f"{fault.kind} ({state})"
    return "unexplained"


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    return any(x1 < y2 and x2 < y1 for x1, y1 in a for x2, y2 in b)
