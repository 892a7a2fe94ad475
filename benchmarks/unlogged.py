"""`unlogged`: the queue table UNLOGGED against the normal (logged) table, in the same run.

An UNLOGGED table writes no WAL, so it writes faster; but PostgreSQL empties it after a crash,
which breaks the promise that an enqueued task is never lost. This scenario measures how much
faster, to decide whether that trade is worth offering. The table is switched with `ALTER
TABLE ... SET UNLOGGED / SET LOGGED` (empty, so instant) and the two kinds take turns in
every round. Measured on each:

- single enqueues, one per transaction, with durable commits (`synchronous_commit = on`,
  where skipping the WAL also skips the commit's flush): raw asyncpg `INSERT`,
  `session.add(enqueue())`, and a business `Order` plus `enqueue()` (the order row is logged
  whatever the queue table is, so its commit flushes anyway);
- the same raw `INSERT` with `synchronous_commit = off` (the benchmark database's default);
- `enqueue_many` of 100,000 payloads;
- draining 50,000 tasks: raw claim+delete loops (2 x 50) and the runner (2 x 50, `--burst`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from benchmarks import database, measure, process
from benchmarks.noop import Nothing, noop
from examples.app import EmailInput, Order, send_email
from sqlatasks import enqueue, enqueue_many
from sqlatasks.models import TABLE_NAME

SINGLE, QUICK_SINGLE = 1000, 100
BULK, QUICK_BULK = 100_000, 10_000
DRAIN, QUICK_DRAIN = 50_000, 5_000
ROUNDS, QUICK_ROUNDS = 3, 1
KINDS = ("logged", "unlogged")

_RAW_INSERT = (
    f"INSERT INTO {TABLE_NAME} (task_name, queue, priority, payload) VALUES ($1, $2, $3, $4)"
)


async def run(url: str, quick: bool) -> list[measure.Row]:
    single = QUICK_SINGLE if quick else SINGLE
    bulk = QUICK_BULK if quick else BULK
    drain = QUICK_DRAIN if quick else DRAIN
    engine = create_async_engine(url)
    durable_engine = create_async_engine(
        url, connect_args={"server_settings": {"synchronous_commit": "on"}}
    )
    durable_sessions = async_sessionmaker(durable_engine, expire_on_commit=False)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    durable_raw = await database.raw_connection(url)
    await durable_raw.execute("SET synchronous_commit = on")
    raw = await database.raw_connection(url)

    async def raw_inserts(conn: object, n: int) -> None:
        payload = json.dumps({"to": "a@example.com", "subject": "hi"})
        for _ in range(n):
            async with conn.transaction():  # type: ignore[attr-defined]
                await conn.execute(_RAW_INSERT, send_email.name, "default", 0, payload)  # type: ignore[attr-defined]

    async def enqueues(n: int) -> None:
        for i in range(n):
            async with durable_sessions() as session, session.begin():
                session.add(enqueue(send_email, EmailInput(to=f"u{i}@example.com", subject="hi")))

    async def orders(n: int) -> None:
        for i in range(n):
            async with durable_sessions() as session, session.begin():
                session.add(Order(email=f"u{i}@example.com", total_cents=1200))
                session.add(enqueue(send_email, EmailInput(to=f"u{i}@example.com", subject="hi")))

    async def many(n: int) -> None:
        async with sessions() as session, session.begin():
            await enqueue_many(session, noop, (Nothing(i=i) for i in range(n)))

    async def raw_drain(n: int) -> float:
        await process.fill(engine, n)
        return await process.raw_drain(url, 2, 50)

    async def runner_drain(n: int) -> float:
        await process.fill(engine, n)
        seconds, _startup, _cpu = await process.runner_drain(url, 2, 50)
        left = await process.queued(engine)
        if left:
            raise SystemExit(f"benchmarks: the runner left {left} tasks unprocessed")
        return seconds

    def timed(work: Callable[[int], Awaitable[None]]) -> Callable[[int], Awaitable[float]]:
        async def run_it(n: int) -> float:
            start = time.perf_counter()
            await work(n)
            return time.perf_counter() - start

        return run_it

    work: dict[str, tuple[int, Callable[[int], Awaitable[float]]]] = {
        "raw asyncpg INSERT, durable commit": (
            single,
            timed(lambda n: raw_inserts(durable_raw, n)),
        ),
        "raw asyncpg INSERT, synchronous_commit off": (
            single,
            timed(lambda n: raw_inserts(raw, n)),
        ),
        "session.add(enqueue()), durable commit": (single, timed(enqueues)),
        "Order + enqueue(), durable commit": (single, timed(orders)),
        f"enqueue_many of {bulk:,}": (bulk, timed(many)),
        "raw claim+delete 2x50": (drain, raw_drain),
        "runner 2x50 --burst": (drain, runner_drain),
    }
    times: dict[tuple[str, str], list[float]] = {(w, k): [] for w in work for k in KINDS}
    try:
        for round_number in range(QUICK_ROUNDS if quick else ROUNDS):
            for kind in KINDS if round_number % 2 == 0 else tuple(reversed(KINDS)):
                await _switch(engine, kind)
                for name, (operations, run_it) in work.items():
                    await database.truncate(engine)
                    times[name, kind].append(await run_it(operations))
                print(f"  round {round_number + 1}, {kind}: done", flush=True)
    finally:
        await _switch(engine, "logged")
        await database.truncate(engine)
        await raw.close()
        await durable_raw.close()
        await durable_engine.dispose()
        await engine.dispose()
    rows: list[measure.Row] = []
    for name, (operations, _) in work.items():
        logged = f"{name}, logged table"
        # runner_drain stops the run if the runner leaves any task behind
        checked = {"unprocessed tasks": 0.0} if name.startswith("runner") else {}
        rows.append(measure.Row(logged, operations, tuple(times[name, "logged"]), notes=checked))
        rows.append(
            measure.Row(
                f"{name}, UNLOGGED table",
                operations,
                tuple(times[name, "unlogged"]),
                baselines=(logged,),
                notes=checked,
            )
        )
    return rows


async def _switch(engine: AsyncEngine, kind: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"ALTER TABLE {TABLE_NAME} SET {kind.upper()}"))
