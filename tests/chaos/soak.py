"""The soak run: 2 runners x 2 workers x 8 slots under a steady mixed load, with seeded random
faults every few seconds and one PostgreSQL restart, then a drain; prints what happened.

    nox -s soak -- --minutes 5        (python -m tests.chaos.soak --minutes 5)

It owns its PostgreSQL cluster (tests/chaos/cluster.py). tests/chaos/test_soak.py runs a short
version of the same code in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from sqlatasks import Task
from tests.chaos import invariants, tasks
from tests.chaos.cluster import Cluster, own_cluster
from tests.chaos.harness import Chaos
from tests.processes import Runner, Runners, alive, children, zombie

RUNNER_ARGS = (
    "--workers", "2", "--concurrency", "8", "--idle-sleep", "1",
    "--task-timeout", "5", "--retry-delay", "0.5",
)  # fmt: skip
STOP_FOR = 8.0
"""Seconds a SIGSTOPped worker stays stopped: past the supervisor's heartbeat timeout."""


@dataclass
class Figures:
    verdict: invariants.Verdict
    faults: dict[str, int]
    rss_start: list[int]
    rss_end: list[int]
    table_start: dict[str, int]
    table_end: dict[str, int]
    seconds: float
    rate: float
    table_purged: dict[str, int]

    def rss_growth(self) -> float:
        return max(end / start - 1 for start, end in zip(self.rss_start, self.rss_end, strict=True))


def rss_kib(runner: Runner) -> int:
    """Resident memory of a runner: its supervisor plus its workers, from /proc."""
    total = 0
    for pid in [runner.process.pid, *children(runner.process.pid)]:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


async def table_stats(chaos: Chaos) -> dict[str, int]:
    async with chaos.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT pg_relation_size('sqlatasks_tasks'),"
                    " pg_indexes_size('sqlatasks_tasks'),"
                    " n_live_tup, n_dead_tup FROM pg_stat_user_tables"
                    " WHERE relname = 'sqlatasks_tasks'"
                )
            )
        ).one()
    return {"table": row[0], "indexes": row[1], "live": row[2], "dead": row[3]}


class Soak:
    def __init__(self, cluster: Cluster, runners: Runners, *, seed: int, rate: float) -> None:
        self.cluster = cluster
        self.chaos = Chaos(cluster.url, runners)
        self.rng = random.Random(seed)
        self.rate = rate
        self.runners: list[Runner] = []
        self.faults_done: dict[str, int] = {}

    async def start_runner(self) -> Runner:
        runner = self.chaos.runner(*RUNNER_ARGS)
        await runner.started(2)
        return runner

    async def load(self, seconds: float) -> None:
        """About `rate` tasks a second: ok, slow, failing once, always failing, timing out,
        raising its own cancellation."""
        kinds: list[tuple[Task[Any], float, bool, Callable[[], float]]] = [
            (tasks.work, 0.80, False, lambda: self.rng.uniform(0, 0.05)),
            (tasks.work, 0.06, False, lambda: self.rng.uniform(1, 2)),  # slow
            (tasks.fails_once, 0.09, False, lambda: 0.0),
            (tasks.always_fails, 0.03, True, lambda: 0.0),  # parks at its 3rd attempt
            (tasks.times_out, 0.02, True, lambda: 0.0),  # parks at its 2nd timeout
            # a poison that stopped every worker that ran it (issue 11): parks at its 3rd
            (tasks.raises_a_cancellation, 0.01, True, lambda: 0.0),
        ]
        tick = 0.1
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            began = time.monotonic()
            picks = self.rng.choices(kinds, [k[1] for k in kinds], k=round(self.rate * tick))
            rollback = self.rng.random() < 0.02
            for kind in {id(k): k for k in picks}.values():
                fn, _, park, sleep = kind
                keys = self.chaos.next_keys(sum(1 for p in picks if p is kind))
                sleeps = [sleep() for _ in keys]
                # A failure means the server is restarting: those keys are "uncertain".
                with contextlib.suppress(SQLAlchemyError, OSError):
                    await self.chaos.enqueue_keys(
                        fn, keys, sleep=sleeps, park=park, rollback=rollback
                    )
            await anyio.sleep(max(0.0, tick - (time.monotonic() - began)))

    async def faults(self, seconds: float) -> None:
        """A seeded random fault every 3-6 s, and one PostgreSQL restart halfway."""
        choices: list[Callable[[], Awaitable[None]]] = [
            self.kill_worker,
            self.stop_worker,
            self.kill_runner,
            *[self.terminate(role) for role in ("claim", "completer", "listener")],
        ]
        began = time.monotonic()
        restarted = False
        while time.monotonic() - began < seconds:
            await anyio.sleep(self.rng.uniform(3, 6))
            if not restarted and time.monotonic() - began > seconds / 2:
                restarted = True
                await self.restart(self.rng.choice(["fast", "immediate"]))
            else:
                await self.rng.choice(choices)()

    def _count(self, kind: str) -> None:
        self.faults_done[kind] = self.faults_done.get(kind, 0) + 1

    def _a_worker(self) -> tuple[Runner, int] | None:
        runner = self.rng.choice(self.runners)
        pids = children(runner.process.pid)
        return (runner, self.rng.choice(pids)) if pids else None

    async def kill_worker(self) -> None:
        if found := self._a_worker():
            self.chaos.kill_worker(found[1])
            self._count("sigkill worker")

    async def stop_worker(self) -> None:
        if not (found := self._a_worker()):
            return
        pid = found[1]
        stopped = time.time()
        signal_pid(pid, signal.SIGSTOP)
        await anyio.sleep(STOP_FOR)
        signal_pid(pid, signal.SIGCONT)
        self.chaos.faults.record("sigstop", [pid], at=stopped, until=time.time())
        if not alive(pid) or zombie(pid):  # the supervisor killed it while it was stopped
            self.chaos.faults.record("worker killed as hung", [pid], at=stopped)
        self._count("sigstop worker")

    async def kill_runner(self) -> None:
        index = self.rng.randrange(len(self.runners))
        self.chaos.kill_runner(self.runners[index])
        self.runners[index] = await self.start_runner()
        self._count("sigkill runner")

    def terminate(self, role: str) -> Callable[[], Awaitable[None]]:
        async def cut() -> None:
            if await self.chaos.terminate(role):
                self._count(f"terminate {role} connection")

        return cut

    async def restart(self, mode: str) -> None:
        began = time.time()
        await anyio.to_thread.run_sync(self.cluster.restart, mode)
        self.chaos.faults.record(f"postgres restart -m {mode}", at=began, until=time.time())
        await self.chaos.engine.dispose()
        self._count(f"postgres restart -m {mode}")


def signal_pid(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


async def soak(
    cluster: Cluster, runners: Runners, *, seconds: float, rate: float, seed: int
) -> Figures:
    """`runners` starts the runners (on the cluster) and keeps their ledger."""
    run = Soak(cluster, runners, seed=seed, rate=rate)
    try:
        run.runners = [await run.start_runner() for _ in range(2)]
        warm_up = min(15.0, seconds / 4)
        await run.load(warm_up)  # imports done and pools filled before the first figures
        rss_start = [rss_kib(r) for r in run.runners]
        table_start = await table_stats(run.chaos)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run.faults, seconds - warm_up)
            await run.load(seconds - warm_up)
        verdict = await run.chaos.settled(timeout=600)  # the drain
        with anyio.move_on_after(90):  # let autovacuum reclaim the churn, as it would
            while (await table_stats(run.chaos))["dead"] > 1000:
                await anyio.sleep(1)
        await anyio.sleep(2)
        table_end = await table_stats(run.chaos)
        rss_end = [rss_kib(r) for r in run.runners]
        # Parked rows stay by design, scattered over the pages; purge them as an operator
        # would (`python -m sqlatasks purge`), then vacuum as autovacuum would.
        async with run.chaos.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("DELETE FROM sqlatasks_tasks WHERE failed_at IS NOT NULL"))
            await conn.execute(text("VACUUM sqlatasks_tasks"))
        await anyio.sleep(1)
        table_purged = await table_stats(run.chaos)
        return Figures(
            verdict,
            run.faults_done,
            rss_start,
            rss_end,
            table_start,
            table_end,
            seconds,
            rate,
            table_purged,
        )
    finally:
        await run.chaos.close()


def report(figures: Figures) -> list[str]:
    v = figures.verdict
    lines = [
        f"soak: {figures.seconds / 60:g} min at {figures.rate:g} tasks/s,"
        " 2 runners x 2 workers x 8",
        *v.summary(),
        "faults injected: "
        + ", ".join(f"{n} x {kind}" for kind, n in sorted(figures.faults.items())),
    ]
    for i, (start, end) in enumerate(zip(figures.rss_start, figures.rss_end, strict=True)):
        lines.append(
            f"runner {i} RSS (supervisor + workers): {start / 1024:.1f} MiB after warm-up,"
            f" {end / 1024:.1f} MiB at the end ({(end / start - 1) * 100:+.1f} %)"
        )
    for name, stats in (
        ("start (after warm-up)", figures.table_start),
        ("end (drained; parked rows kept)", figures.table_end),
        ("end, parked rows purged and vacuumed", figures.table_purged),
    ):
        lines.append(
            f"queue table at the {name}: table {stats['table'] / 1024:.0f} KiB +"
            f" indexes {stats['indexes'] / 1024:.0f} KiB, {stats['live']} live,"
            f" {stats['dead']} dead tuples"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=150.0, help="tasks enqueued per second")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()

    async def run() -> Figures:
        with own_cluster() as cluster, tempfile.TemporaryDirectory() as folder:
            runners = Runners(cluster.url, Path(folder))
            return await soak(
                cluster, runners, seconds=args.minutes * 60, rate=args.rate, seed=args.seed
            )

    figures = anyio.run(run)
    print("\n".join(report(figures)))
    problems = figures.verdict.problems()
    print("invariants: " + ("all hold" if not problems else "BROKEN\n" + "\n".join(problems)))
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
