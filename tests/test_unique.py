"""Unique keys: at most one queued or running task per key, and a duplicate never raises."""

from __future__ import annotations

import importlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from examples.app import Order
from sqlatasks import QueuedTask, enqueue, enqueue_many, operations
from sqlatasks.rows import Failure
from sqlatasks.sql import claim, outcomes
from tests import ledger, runner_tasks
from tests.conftest import count_tasks
from tests.eventually import eventually
from tests.processes import Runners, wait_for_tasks
from tests.tasks_for_tests import Greeting, greet

KEY = "invoice:42"
enqueue_module = importlib.import_module(
    "sqlatasks.enqueue"
)  # the package attribute is the function


async def rows(conn_or_session: Any, where: str = "true") -> list[Any]:
    found = await conn_or_session.execute(
        text(
            "SELECT id, unique_key, duplicate_of, failed_at, last_error, payload->>'name' AS name"
            f" FROM sqlatasks_tasks WHERE {where} ORDER BY id"
        )
    )
    return list(found)


async def add(session: AsyncSession, name: str, **options: Any) -> QueuedTask:
    row = enqueue(greet, Greeting(name=name), **options)
    session.add(row)
    await session.flush()
    return row


async def test_skip_drops_the_duplicate_and_tells_the_caller(session: AsyncSession) -> None:
    first = await add(session, "first", unique_key=KEY)
    second = await add(session, "second", unique_key=KEY)
    assert first.duplicate_of is None
    assert second.duplicate_of == first.id
    assert [(r.id, r.name) for r in await rows(session)] == [(first.id, "first")]
    assert await operations.failed_tasks(session) == []


async def test_report_keeps_the_duplicate_parked(session: AsyncSession) -> None:
    first = await add(session, "first", unique_key=KEY)
    second = await add(session, "second", unique_key=KEY, on_duplicate="report")
    assert second.duplicate_of == first.id
    # the ORM read the trigger's changes back at flush
    assert second.failed_at is not None
    assert second.last_error == f"duplicate of task {first.id}"
    live = await rows(session, "failed_at IS NULL")
    assert [r.id for r in live] == [first.id]
    failed = await operations.failed_tasks(session)
    assert [(f.id, f.last_error) for f in failed] == [(second.id, f"duplicate of task {first.id}")]


async def test_other_keys_and_keyless_tasks_are_not_affected(session: AsyncSession) -> None:
    keyed = [await add(session, "a", unique_key=k) for k in ("a", "b")]
    plain = [await add(session, "same") for _ in range(2)]
    assert [r.duplicate_of for r in keyed + plain] == [None] * 4
    assert len(await rows(session)) == 4


def test_bad_options_are_refused_before_the_database() -> None:
    with pytest.raises(ValueError, match="on_duplicate"):
        enqueue(greet, Greeting(name="x"), unique_key=KEY, on_duplicate="raise")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique_key"):
        enqueue(greet, Greeting(name="x"), unique_key="")


async def test_a_duplicate_leaves_the_transaction_usable(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        await add(session, "first", unique_key=KEY)
    for mode in ("skip", "report"):
        async with sessions() as session, session.begin():
            duplicate = await add(session, mode, unique_key=KEY, on_duplicate=mode)
            session.add(Order(email=f"{mode}@example.com", total_cents=100))
            await add(session, f"{mode} unkeyed")
        assert duplicate.duplicate_of is not None
    async with engine.connect() as conn:
        names = [r.name for r in await rows(conn)]
        orders = (await conn.execute(text("SELECT count(*) FROM demo_orders"))).scalar_one()
    assert names == ["first", "skip unkeyed", "report", "report unkeyed"]
    assert orders == 2


async def waiting_for_key_lock(engine: AsyncEngine, count: int) -> None:
    """Wait until `count` sessions wait for the unique-key (advisory) lock."""
    query = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")

    async def waiting() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    await eventually(
        waiting, lambda found: found >= count, what=f"{count} waiters on a key lock", timeout=30
    )


async def test_a_rolled_back_holder_lets_the_waiting_enqueue_add(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    second: list[QueuedTask] = []

    async def enqueue_second() -> None:
        async with sessions() as session, session.begin():
            second.append(await add(session, "second", unique_key=KEY))

    async with sessions() as first_session:
        await first_session.begin()
        await add(first_session, "first", unique_key=KEY)
        async with anyio.create_task_group() as group:
            group.start_soon(enqueue_second)
            await waiting_for_key_lock(engine, 1)  # blocked by the first, not yet decided
            await first_session.rollback()
    assert second[0].duplicate_of is None
    async with engine.connect() as conn:
        assert [r.name for r in await rows(conn)] == ["second"]


async def test_eight_concurrent_transactions_add_exactly_one(db_url: str) -> None:
    # Eight engines: eight connections, nothing shared but the database.
    engines = [create_async_engine(db_url) for _ in range(8)]
    in_transaction = anyio.Event()
    ready = 0
    results: list[QueuedTask] = []

    async def one(engine: AsyncEngine, n: int) -> None:
        nonlocal ready
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as session, session.begin():
            await session.execute(text("SELECT 1"))  # the transaction has begun
            ready += 1
            if ready == len(engines):
                in_transaction.set()
            await in_transaction.wait()
            results.append(await add(session, f"t{n}", unique_key=KEY))

    try:
        async with anyio.create_task_group() as group:
            for n, engine in enumerate(engines):
                group.start_soon(one, engine, n)
        async with engines[0].connect() as conn:
            stored = await rows(conn)
    finally:
        for engine in engines:
            await engine.dispose()
    assert len(stored) == 1
    winners = [r for r in results if r.duplicate_of is None]
    assert [w.id for w in winners] == [stored[0].id]
    assert (
        sorted(r.duplicate_of for r in results if r.duplicate_of is not None) == [stored[0].id] * 7
    )


async def test_keyed_batches_in_opposite_orders_do_not_deadlock(db_url: str) -> None:
    # The trigger locks keys row by row; without the batch taking them first in one order,
    # these two statements lock from opposite ends, meet, and PostgreSQL aborts one.
    keys = [f"k{n:04d}" for n in range(800)]
    engines = [create_async_engine(db_url) for _ in range(2)]
    added: list[int] = []

    async def batch(engine: AsyncEngine, order: list[str]) -> None:
        sessions = async_sessionmaker(engine)
        async with sessions() as session, session.begin():
            payloads = [Greeting(name=key) for key in order]
            added.append(await enqueue_many(session, greet, payloads, unique_key=lambda g: g.name))

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(batch, engines[0], keys)
            group.start_soon(batch, engines[1], keys[::-1])
        async with engines[0].connect() as conn:
            stored = await rows(conn)
    finally:
        for engine in engines:
            await engine.dispose()
    assert sorted(added) == [0, len(keys)]  # one batch added them all, the other none
    assert sorted(r.unique_key for r in stored) == keys


async def test_enqueue_many_honours_keys(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(enqueue_module, "UNIQUE_BATCH", 3)  # cross chunk boundaries too
    existing = await add(session, "existing", unique_key="k0")
    names = ["a", "b", "c", "d", "e", "f", "g"]
    keys = {"a": "k0", "b": "k1", "c": None, "d": "k1", "e": "k2", "f": None, "g": "k2"}
    count = await enqueue_many(
        session, greet, [Greeting(name=n) for n in names], unique_key=lambda p: keys[p.name]
    )
    # a: held by an existing task; d: by b, earlier in the batch (other chunk); g: by e
    assert count == 4
    found = await rows(session)
    assert [(r.name, r.unique_key) for r in found] == [
        ("existing", "k0"),
        ("b", "k1"),
        ("c", None),
        ("e", "k2"),
        ("f", None),
    ]
    assert existing.duplicate_of is None


async def test_enqueue_many_report_parks_duplicates(session: AsyncSession) -> None:
    count = await enqueue_many(
        session,
        greet,
        [{"name": "a"}, {"name": "b"}, {"name": "a"}],  # mappings: the key sees the model
        unique_key=lambda p: f"name:{p.name}",
        on_duplicate="report",
        delay=3600,
    )
    assert count == 2
    found = await rows(session)
    assert [(r.name, r.duplicate_of is not None) for r in found] == [
        ("a", False),
        ("b", False),
        ("a", True),
    ]
    assert found[2].duplicate_of == found[0].id
    assert found[2].last_error == f"duplicate of task {found[0].id}"
    due_later = (
        await session.execute(
            text("SELECT count(*) FROM sqlatasks_tasks WHERE scheduled_at > now() + '59 min'")
        )
    ).scalar_one()
    assert due_later == 3


async def test_enqueue_many_keyed_with_run_at(session: AsyncSession) -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    await enqueue_many(session, greet, [Greeting(name="x")], unique_key=lambda p: p.name, run_at=at)
    stored = (await session.execute(text("SELECT scheduled_at FROM sqlatasks_tasks"))).scalar_one()
    assert stored == at


async def test_rolled_back_keyed_enqueue_many_leaves_nothing(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine)
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with sessions() as session, session.begin():
            await enqueue_many(session, greet, [Greeting(name="a")], unique_key=lambda p: KEY)
            raise RuntimeError("changed my mind")
    assert await count_tasks(engine) == 0
    async with sessions() as session, session.begin():
        count = await enqueue_many(session, greet, [Greeting(name="b")], unique_key=lambda p: KEY)
    assert count == 1


async def park(session: AsyncSession, task_id: int) -> None:
    """Claim and fail `task_id` for good, by the runner's own statements."""
    conn = await session.connection()
    token = uuid.uuid4()
    claimed = await claim.task_claim(
        conn, queues=[], limit=100, lease_seconds=60, worker_id="test", token=token
    )
    assert task_id in [c.id for c in claimed]
    others = [(c.id, token) for c in claimed if c.id != task_id]
    if others:
        await outcomes.task_release(conn, others)
    failure = Failure(id=task_id, lease_token=token, error="boom", retry_in=None)
    assert await outcomes.task_fail(conn, [failure]) == 1


async def test_a_parked_task_frees_its_key(session: AsyncSession) -> None:
    first = await add(session, "first", unique_key=KEY)
    await park(session, first.id)
    second = await add(session, "second", unique_key=KEY)
    assert second.duplicate_of is None


async def test_retry_of_a_parked_task_whose_key_is_taken_leaves_it_parked(
    session: AsyncSession,
) -> None:
    first = await add(session, "first", unique_key=KEY)
    await park(session, first.id)
    second = await add(session, "second", unique_key=KEY)
    third = await add(session, "third", unique_key=KEY, on_duplicate="report")
    assert third.duplicate_of == second.id
    # Both parked tasks' key is held by `second`: neither is retried, nothing raises.
    assert await operations.retry_failed(session, "all") == 0
    assert {f.id for f in await operations.failed_tasks(session)} == {first.id, third.id}
    # Key free again: of two parked tasks sharing it, only the oldest is retried.
    assert await operations.cancel(session, second.id) == "deleted"
    assert await operations.retry_failed(session, "all") == 1
    live = await rows(session, "failed_at IS NULL")
    assert [(r.id, r.duplicate_of) for r in live] == [(first.id, None)]
    assert [f.id for f in await operations.failed_tasks(session)] == [third.id]
    # A retried duplicate holds the key like any task once it is live.
    await operations.cancel(session, first.id)
    assert await operations.retry_failed(session, [third.id]) == 1
    assert (await add(session, "fourth", unique_key=KEY)).duplicate_of == third.id


async def test_keyless_retry_still_retries_everything(session: AsyncSession) -> None:
    tasks = [await add(session, f"t{n}") for n in range(3)]
    for row in tasks:
        await park(session, row.id)
    assert await operations.retry_failed(session, "all") == 3


async def test_the_claim_plan_ignores_the_unique_index(engine: AsyncEngine) -> None:
    # A database of its own: ANALYZE writes the table's statistics even inside a transaction
    # that rolls back, and would change the plans other tests see in the shared database.
    async with AsyncSession(engine) as session, session.begin():
        for n in range(50):
            await add(session, f"t{n}", unique_key=f"k{n}")
        await session.execute(text("ANALYZE sqlatasks_tasks"))
        plan = await claim.task_claim_plan(await session.connection(), queues=[])
    assert "sqlatasks_tasks_claim_idx" in plan, plan
    assert "unique_key_idx" not in plan, plan


@pytest.mark.slow
async def test_key_is_held_while_the_task_runs_under_two_runners(
    engine: AsyncEngine, start_runner: Runners, tmp_path: Path
) -> None:
    for runner in [start_runner("--workers", "1", "--concurrency", "2") for _ in range(2)]:
        await runner.started(1)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def put(n: int) -> QueuedTask:
        async with sessions() as session, session.begin():
            row = enqueue(runner_tasks.until_released, runner_tasks.Job(key=n), unique_key=KEY)
            session.add(row)
        return row

    first = await put(1)
    assert first.duplicate_of is None
    await ledger.wait_for_entries(tmp_path, "start", 1)
    running = await count_tasks(engine, "locked_until > now() AND failed_at IS NULL")
    assert running == 1
    for n in (2, 3):  # while it runs, the key is taken: not added, for either runner
        assert (await put(n)).duplicate_of == first.id
    ledger.open_gate(tmp_path, "release-1")
    await ledger.wait_for_entries(tmp_path, "end", 1)
    await wait_for_tasks(engine, exactly=0, timeout=30)
    again = await put(4)  # done and deleted: the key is free
    assert again.duplicate_of is None
    await ledger.wait_for_entries(tmp_path, "start", 2)
    ledger.open_gate(tmp_path, "release-4")
    await ledger.wait_for_entries(tmp_path, "end", 2)
    await wait_for_tasks(engine, exactly=0, timeout=30)
    started = [e.key for e in ledger.entries(tmp_path, "start")]
    assert started == [1, 4]


async def late_snapshot_enqueue(engine: AsyncEngine, level: str) -> int | None:
    """Begin at `level`, let another transaction commit a holder of KEY, then enqueue KEY."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    late = async_sessionmaker(engine.execution_options(isolation_level=level))
    async with late() as session:
        await session.begin()
        await session.execute(text("SELECT 1"))  # REPEATABLE READ: the snapshot is taken here
        async with sessions() as other, other.begin():
            holder = await add(other, "committed meanwhile", unique_key=KEY)
        try:
            return (await add(session, "late", unique_key=KEY)).duplicate_of
        finally:
            await session.rollback()
            async with late() as fresh, fresh.begin():  # a fresh snapshot sees the holder
                assert (await add(fresh, "later", unique_key=KEY)).duplicate_of == holder.id


async def test_read_committed_sees_a_holder_committed_after_the_transaction_began(
    engine: AsyncEngine,
) -> None:
    assert await late_snapshot_enqueue(engine, "READ COMMITTED") is not None


async def test_repeatable_read_cannot_see_it_and_the_index_refuses(engine: AsyncEngine) -> None:
    """The caveat in docs/unique.md: this is the one case that raises."""
    with pytest.raises(IntegrityError, match="sqlatasks_tasks_unique_key_idx"):
        await late_snapshot_enqueue(engine, "REPEATABLE READ")
