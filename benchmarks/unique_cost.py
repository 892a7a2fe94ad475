"""`unique_cost`: what the unique-key triggers (schema v2) cost, keyless inserts above all.

Measured in one run, the variants taking turns slice by slice:

- `session.add(enqueue())` + commit without a key, with the unique-key triggers disabled (the
  baseline: the table as if v2 had added only columns) and as shipped (their `WHEN` is tested
  and fails); then with a fresh key each time (the trigger runs: lock, index lookup), and with
  one key for all (every insert after the first is a duplicate, inserted and deleted again);
- `enqueue_many` of a batch without keys (COPY) with the triggers disabled and as shipped, and
  with a fresh key per payload (INSERT from unnest in chunks, the trigger per row).

Each work function sets the triggers' state first (one ALTER TABLE per slice, in every
variant alike).
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from benchmarks import database, measure
from examples.app import EmailInput, send_email
from sqlatasks import enqueue, enqueue_many
from sqlatasks.models import TABLE_NAME

SINGLE, QUICK_SINGLE = 3000, 300
BULK, QUICK_BULK = 50_000, 5000
ROUNDS, QUICK_ROUNDS = 5, 3
SLICES, QUICK_SLICES = 10, 3
TRIGGERS = ("sqlatasks_tasks_unique_check", "sqlatasks_tasks_unique_skip")

OFF = "enqueue(), no key, unique triggers disabled"
NO_KEY = "enqueue(), no key (as shipped)"
FRESH_KEY = "enqueue(unique_key=<fresh>)"
SAME_KEY = "enqueue(unique_key=<same>): duplicates skipped"
BULK_OFF = "enqueue_many, no key, unique triggers disabled"
BULK_NO_KEY = "enqueue_many, no key (as shipped)"
BULK_KEYED = "enqueue_many(unique_key=<fresh per payload>)"


def _email(i: int) -> EmailInput:
    return EmailInput(to=f"user{i}@example.com", subject="hi")


async def run(url: str, quick: bool) -> list[measure.Row]:
    single, bulk = (QUICK_SINGLE, QUICK_BULK) if quick else (SINGLE, BULK)
    engine = create_async_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    serial = iter(range(10**12))  # fresh keys, never reused within the run

    def single_work(enabled: bool, key: str | None) -> measure.Work:
        async def work(n: int) -> None:
            await _triggers(engine, enabled=enabled)
            for i in range(n):
                unique_key = f"k{next(serial)}" if key == "fresh" else key
                async with sessions() as session, session.begin():
                    session.add(enqueue(send_email, _email(i), unique_key=unique_key))

        return work

    def bulk_work(enabled: bool, keyed: bool) -> measure.Work:
        async def work(n: int) -> None:
            await _triggers(engine, enabled=enabled)
            payloads: Iterator[EmailInput] = (_email(i) for i in range(n))
            async with sessions() as session, session.begin():
                if keyed:
                    await enqueue_many(
                        session, send_email, payloads, unique_key=lambda _: f"k{next(serial)}"
                    )
                else:
                    await enqueue_many(session, send_email, payloads)

        return work

    try:
        rows = await measure.measure(
            [
                measure.Variant(OFF, single_work(False, None), single, 200),
                measure.Variant(NO_KEY, single_work(True, None), single, 200, (OFF,)),
                measure.Variant(FRESH_KEY, single_work(True, "fresh"), single, 200, (NO_KEY,)),
                measure.Variant(SAME_KEY, single_work(True, "same"), single, 200, (NO_KEY,)),
            ],
            rounds=QUICK_ROUNDS if quick else ROUNDS,
            slices=QUICK_SLICES if quick else SLICES,
            reset=lambda: database.truncate(engine),
        )
        rows += await measure.measure(
            [
                measure.Variant(BULK_OFF, bulk_work(False, False), bulk, 1000),
                measure.Variant(BULK_NO_KEY, bulk_work(True, False), bulk, 1000, (BULK_OFF,)),
                measure.Variant(BULK_KEYED, bulk_work(True, True), bulk, 1000, (BULK_NO_KEY,)),
            ],
            rounds=QUICK_ROUNDS if quick else ROUNDS,
            slices=QUICK_SLICES if quick else SLICES,
            reset=lambda: database.truncate(engine),
        )
    finally:
        await _triggers(engine, enabled=True)
        await database.truncate(engine)
        await engine.dispose()
    return rows


async def _triggers(engine: AsyncEngine, *, enabled: bool) -> None:
    action = "ENABLE" if enabled else "DISABLE"
    async with engine.begin() as conn:
        for trigger in TRIGGERS:
            await conn.execute(text(f"ALTER TABLE {TABLE_NAME} {action} TRIGGER {trigger}"))
