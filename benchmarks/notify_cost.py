"""`notify_cost`: what the wake-up NOTIFY costs single enqueues under 16 concurrent committers.

16 raw asyncpg connections each commit one-row INSERT transactions into the queue table as
fast as they can, with durable commits (`synchronous_commit = on`) and without, in turn:

- the trigger disabled: the baseline;
- the schema's trigger, one NOTIFY per insert statement, delivered at commit, which
  PostgreSQL serialises on a global lock held through the commit's WAL flush;
- a prototype made here for the measurement only (not in the schema): the trigger notifies
  only while a row in a tiny unlogged table says a worker is waiting, measured with that
  table empty, that is with every worker busy, which is when the cost matters.

Raw asyncpg, so that the server-side cost is not hidden behind client work.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks import database, measure
from sqlatasks.models import TABLE_NAME

COMMITTERS = 16
PER_COMMITTER, QUICK_PER_COMMITTER = 300, 50
ROUNDS, QUICK_ROUNDS = 3, 1
_INSERT = f"INSERT INTO {TABLE_NAME} (task_name, payload) VALUES ('m:f', '{{}}')"
TRIGGER = "sqlatasks_tasks_notify"
PROTOTYPE = "bench_notify_if_waiting"
TRIGGERS = {"none": None, "always": TRIGGER, "if waiting": PROTOTYPE}
_PROTOTYPE_DDL = (
    "CREATE UNLOGGED TABLE IF NOT EXISTS bench_waiting (worker text PRIMARY KEY)",
    f"""
CREATE OR REPLACE FUNCTION {PROTOTYPE}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM bench_waiting) THEN
        PERFORM pg_notify('sqlatasks', '');
    END IF;
    RETURN NULL;
END;
$$""",
    f"DROP TRIGGER IF EXISTS {PROTOTYPE} ON {TABLE_NAME}",
    f"""CREATE TRIGGER {PROTOTYPE} AFTER INSERT ON {TABLE_NAME}
    FOR EACH STATEMENT EXECUTE FUNCTION {PROTOTYPE}()""",
)
_PROTOTYPE_DROP = (
    f"DROP TRIGGER IF EXISTS {PROTOTYPE} ON {TABLE_NAME}",
    f"DROP FUNCTION IF EXISTS {PROTOTYPE}()",
    "DROP TABLE IF EXISTS bench_waiting",
)


async def run(url: str, quick: bool) -> list[measure.Row]:
    per = QUICK_PER_COMMITTER if quick else PER_COMMITTER
    engine = create_async_engine(url)
    connections = [await database.raw_connection(url) for _ in range(COMMITTERS)]
    times: dict[tuple[str, str], list[float]] = {
        (commit, trigger): [] for commit in ("on", "off") for trigger in TRIGGERS
    }
    try:
        await _ddl(engine, _PROTOTYPE_DDL)
        for round_number in range(QUICK_ROUNDS if quick else ROUNDS):
            for commit, trigger in times if round_number % 2 == 0 else reversed(list(times)):
                await _only(engine, TRIGGERS[trigger])
                await database.truncate(engine)
                for conn in connections:
                    await conn.execute(f"SET synchronous_commit = {commit}")
                start = time.perf_counter()
                await asyncio.gather(*(_commit(conn, per) for conn in connections))
                times[commit, trigger].append(time.perf_counter() - start)
    finally:
        await _ddl(engine, _PROTOTYPE_DROP)
        await _only(engine, TRIGGER)
        await database.truncate(engine)
        for conn in connections:
            await conn.close()
        await engine.dispose()
    rows: list[measure.Row] = []
    for commit in ("on", "off"):
        label = f"{COMMITTERS} committers, synchronous_commit {commit}"
        without = f"{label}, trigger disabled (no NOTIFY)"
        rows.append(measure.Row(without, per * COMMITTERS, tuple(times[commit, "none"])))
        rows.append(
            measure.Row(
                f"{label}, NOTIFY per insert (the schema's trigger)",
                per * COMMITTERS,
                tuple(times[commit, "always"]),
                baselines=(without,),
            )
        )
        rows.append(
            measure.Row(
                f"{label}, prototype: NOTIFY only if a worker waits (none waiting)",
                per * COMMITTERS,
                tuple(times[commit, "if waiting"]),
                baselines=(without,),
            )
        )
    return rows


async def _commit(conn: object, count: int) -> None:
    for _ in range(count):
        async with conn.transaction():  # type: ignore[attr-defined]
            await conn.execute(_INSERT)  # type: ignore[attr-defined]


async def _only(engine: AsyncEngine, enabled: str | None) -> None:
    """Enable the trigger named `enabled` (None: neither) and disable the other."""
    async with engine.begin() as conn:
        for trigger in (TRIGGER, PROTOTYPE):
            action = "ENABLE" if trigger == enabled else "DISABLE"
            exists = await conn.execute(
                text("SELECT 1 FROM pg_trigger WHERE tgname = :name"), {"name": trigger}
            )
            if exists.first():
                await conn.execute(text(f"ALTER TABLE {TABLE_NAME} {action} TRIGGER {trigger}"))


async def _ddl(engine: AsyncEngine, statements: tuple[str, ...]) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))
