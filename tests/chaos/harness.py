"""A chaos run: real runners on a database, the keys it enqueued, the faults it injected."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from sqlatasks import Task, enqueue_many
from tests.chaos import invariants
from tests.chaos.tasks import Work
from tests.eventually import eventually
from tests.processes import Runner, Runners, children

CHAOS_TASKS = ("tests.chaos.tasks",)


class Chaos:
    """Runners started by `runners` on the database at `url`, sharing the ledger folder of
    `runners`."""

    def __init__(self, url: str, runners: Runners) -> None:
        self.url = url
        self.folder = runners.folder
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=True, pool_size=20)
        self.faults = invariants.FaultLog(self.folder)
        self.runners = runners
        self.committed: set[int] = set()
        self.must_park: set[int] = set()
        self.rolled_back: set[int] = set()
        self.uncertain: set[int] = set()
        self._keys = itertools.count()

    def runner(self, *args: str) -> Runner:
        return self.runners(*args, imports=CHAOS_TASKS, database_url=self.url)

    async def enqueue(
        self,
        fn: Task[Any],
        count: int,
        *,
        sleep: float = 0.0,
        park: bool = False,
        rollback: bool = False,
    ) -> list[int]:
        """Enqueue `count` tasks in one transaction; `park`: built to end parked."""
        keys = [next(self._keys) for _ in range(count)]
        return await self.enqueue_keys(fn, keys, sleep=sleep, park=park, rollback=rollback)

    async def enqueue_keys(
        self,
        fn: Task[Any],
        keys: list[int],
        *,
        sleep: float | Iterable[float] = 0.0,
        park: bool = False,
        rollback: bool = False,
    ) -> list[int]:
        sleeps = [sleep] * len(keys) if isinstance(sleep, float | int) else list(sleep)
        payloads = [Work(key=k, sleep=s) for k, s in zip(keys, sleeps, strict=True)]
        try:
            async with (
                async_sessionmaker(self.engine)() as session,
                session.begin() as transaction,
            ):
                await enqueue_many(session, fn, payloads)
                if rollback:
                    await transaction.rollback()
        except (SQLAlchemyError, OSError):
            self.uncertain.update(keys)  # the commit may or may not have happened
            raise
        (self.rolled_back if rollback else self.committed).update(keys)
        if park and not rollback:
            self.must_park.update(keys)
        return keys

    def next_keys(self, count: int) -> list[int]:
        return [next(self._keys) for _ in range(count)]

    async def terminate(self, role: str) -> int:
        """pg_terminate_backend on every runner connection named `sqlatasks <role> …`."""
        async with self.engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM pg_stat_activity WHERE application_name LIKE :pattern"
                ),
                {"pattern": f"sqlatasks {role}%"},
            )
            count = int(result.scalar_one())
        if count:
            self.faults.record(f"terminate {role} connection")
        return count

    async def sessions(self, role: str, where: str = "true") -> int:
        """Runner connections named `sqlatasks <role> …` (and matching `where`)."""
        async with self.engine.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    f" WHERE application_name LIKE :p AND ({where})"
                ),
                {"p": f"sqlatasks {role}%"},
            )
            return int(found.scalar_one())

    def kill_worker(self, pid: int) -> None:
        self.faults.record("sigkill worker", [pid])
        os.kill(pid, signal.SIGKILL)

    def kill_runner(self, runner: Runner) -> None:
        pids = [runner.process.pid, *children(runner.process.pid)]
        self.faults.record("sigkill runner", pids)
        runner.kill()

    async def verdict(self) -> invariants.Verdict:
        return invariants.check(
            invariants.read_executions(self.folder),
            self.faults.read(),
            await invariants.read_rows(self.engine),
            committed=self.committed,
            must_park=self.must_park,
            rolled_back=self.rolled_back,
            uncertain=self.uncertain,
        )

    async def settled(self, timeout: float = 120) -> invariants.Verdict:
        """Wait until every committed task completed or parked and no row is leased; judge."""

        async def look() -> tuple[invariants.Verdict, list[invariants.Row]]:
            verdict = await self.verdict()
            return verdict, [r for r in await invariants.read_rows(self.engine) if r.leased]

        def done(seen: tuple[invariants.Verdict, list[invariants.Row]]) -> bool:
            verdict, leased = seen
            return not verdict.lost and not verdict.leftover_rows and not leased

        try:
            verdict, _ = await eventually(
                look, done, what="the run to settle", timeout=timeout, interval=0.2
            )
            return verdict
        except AssertionError:
            verdict, leased = await look()
        problems = verdict.problems()
        if verdict.lost:
            lost = set(verdict.lost[:5])
            runs = [r for r in invariants.read_executions(self.folder) if r.key in lost]
            rows = [r for r in await invariants.read_rows(self.engine) if r.key in lost]
            problems.append(f"lost keys' executions: {runs}; rows: {rows}")
        async with self.engine.connect() as conn:
            held = await conn.execute(
                text(
                    "SELECT id, attempts, locked_by, lease_token, locked_until - now()"
                    " FROM sqlatasks_tasks WHERE locked_until IS NOT NULL"
                )
            )
            problems.append(f"leases held: {[tuple(map(str, r)) for r in held.all()]}")
        raise AssertionError(f"not settled in {timeout} s: {problems}, leased: {leased}")

    async def close(self) -> None:
        self.runners.close()
        await self.engine.dispose()
