"""The throughput rollup (schema v9, docs/dashboard.md#throughput): the tally counts each
outcome in its minute and queue; a flush adds them to the worker's own rows in one statement;
the completer flushes every interval and once more at close; the scheduler prunes old
minutes; the overview's chart shows the last hour's totals, and nothing older."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import anyio
import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqlatasks import scheduler, throughput
from sqlatasks.completer import Completer
from sqlatasks.dashboard import create_app
from sqlatasks.outcomes import Committed, Completed, Failed, Outcome, Released, Snoozed
from sqlatasks.rows import ClaimedTask
from tests.eventually import eventually

T0 = 1_800_000_000.0  # a whole minute (30_000_000 minutes since the epoch)


def claimed(queue: str = "mail") -> ClaimedTask:
    return ClaimedTask(1, "app:t", queue, "{}", 1, 3, uuid.uuid4())


def test_the_tally_counts_each_end_in_its_minute_and_queue() -> None:
    now = [T0 + 59.9]
    tally = throughput.Tally("w", interval=10, clock=lambda: now[0])
    outcomes: list[Outcome] = [
        Completed(claimed()),
        Committed(claimed()),  # a session task's commit is a completion
        Failed(claimed(), "E", retry_in=None),  # parked
        Failed(claimed(), "E", retry_in=5.0),  # retried
        Released(claimed()),  # not an end: not counted
        Snoozed(claimed(), after=1),
        Completed(claimed("images")),
    ]
    for outcome in outcomes:
        tally.count(outcome)
    now[0] = T0 + 60
    tally.count(Completed(claimed()))
    minute = datetime.fromtimestamp(T0, UTC)
    taken = sorted(tally.take())
    assert taken == [
        (minute, "images", 1, 0, 0),
        (minute, "mail", 2, 1, 1),
        (minute + timedelta(minutes=1), "mail", 1, 0, 0),
    ]
    assert tally.take() == []
    tally.restore(taken)
    tally.count(Completed(claimed()))
    assert sorted(tally.take())[-1] == (minute + timedelta(minutes=1), "mail", 2, 0, 0)


async def rollup(engine: AsyncEngine) -> list[tuple[str, str, int, int, int]]:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT worker, queue, completed, failed, retried FROM sqlatasks_throughput "
                "ORDER BY worker, queue"
            )
        )
        return [(r.worker, r.queue, r.completed, r.failed, r.retried) for r in found]


async def test_a_flush_adds_to_the_workers_own_rows(engine: AsyncEngine) -> None:
    tallies = [throughput.Tally(w, interval=10, clock=lambda: T0) for w in ("w1", "w1", "w2")]
    ends: list[Outcome] = [Completed(claimed()), Failed(claimed(), "E", None), Completed(claimed())]
    for tally, outcome in zip(tallies, ends, strict=True):
        tally.count(outcome)
    async with engine.connect() as conn:
        assert [await throughput.flush(tally, conn) for tally in tallies] == [1, 1, 1]
        assert await throughput.flush(tallies[0], conn) == 0  # nothing new: no statement
        await conn.commit()
    assert await rollup(engine) == [("w1", "mail", 1, 1, 0), ("w2", "mail", 1, 0, 0)]


async def test_the_completer_flushes_every_interval_and_at_close(
    engine: AsyncEngine, db_url: str
) -> None:
    worker = create_async_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        ticking = Completer(
            worker,
            name="test",
            give_up_after_close=5,
            tally=throughput.Tally("ticking", interval=0.05),
        )
        closing = Completer(
            worker,
            name="test",
            give_up_after_close=5,
            tally=throughput.Tally("closing", interval=3600),
        )
        async with anyio.create_task_group() as group:
            group.start_soon(ticking.run)
            group.start_soon(closing.run)
            # no row holds these leases: the acks write nothing, the counts are still taken
            ticking.submit(Completed(claimed()))
            ticking.submit(Committed(claimed()))  # not written by the completer, but counted
            closing.submit(Failed(claimed(), "E", retry_in=1.0))
            await eventually(lambda: rollup(engine), what="the interval's flush")
            assert await rollup(engine) == [("ticking", "mail", 2, 0, 0)]  # still running
            ticking.close()
            closing.close()
    finally:
        await worker.dispose()
    assert await rollup(engine) == [("closing", "mail", 0, 0, 1), ("ticking", "mail", 2, 0, 0)]


async def test_the_scheduler_prunes_minutes_past_two_hours(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("""
            INSERT INTO sqlatasks_throughput (minute, queue, worker, completed)
            SELECT date_trunc('minute', now()) - make_interval(mins => 121 + n % 600),
                   'q', 'w' || n, 1
            FROM generate_series(1, :old) AS n
            UNION ALL
            SELECT date_trunc('minute', now()) - make_interval(mins => 119), 'q', 'recent', 1
            """),
            {"old": scheduler.PRUNE_BATCH + 500},  # more than one batch
        )
    async with engine.begin() as conn:
        assert await scheduler.prune(conn) == scheduler.PRUNE_BATCH + 500
    assert await rollup(engine) == [("recent", "q", 1, 0, 0)]


async def test_the_overview_charts_the_last_hour(engine: AsyncEngine) -> None:
    rows = [  # minutes ago, queue, worker, completed, failed, retried
        (0, "mail", "w1", 5, 1, 2),
        (0, "mail", "w2", 3, 0, 0),
        (59, "images", "w1", 10, 2, 0),
        (60, "images", "w1", 1000, 1000, 1000),  # an hour ago: outside the chart
        (90, "mail", "w1", 1000, 1000, 1000),
    ]
    columns = ("ago", "queue", "worker", "completed", "failed", "retried")
    async with engine.begin() as conn:
        await conn.execute(
            text("""
            INSERT INTO sqlatasks_throughput VALUES (
                date_trunc('minute', now()) - make_interval(mins => :ago),
                :queue, :worker, :completed, :failed, :retried)"""),
            [dict(zip(columns, row, strict=True)) for row in rows],
        )
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
        page = (await client.get("/")).text
    figure = page[page.index('<figure id="throughput"') : page.index("</figure>")]
    assert '<svg role="img" aria-labelledby="throughput-title throughput-desc"' in figure
    assert "Last 60 minutes: 18 completed, 3 failed (parked), 2 retried" in figure  # the desc
    shown = dict(re.findall(r'id="throughput-(\w+)"[^>]*><span class="n">(\d+)<', figure))
    assert shown == {"completed": "18", "failed": "3", "retried": "2"}
    assert len(re.findall(r'<rect class="done"', figure)) == 2  # two minutes had attempts
    for queue, hour in [("mail", [8, 1]), ("images", [10, 2])]:
        cells = re.search(rf">{queue}</a>(.*?)</tr>", page, re.S)
        assert cells
        assert [int(n) for n in re.findall(r'class="n">(\d+)', cells.group(1))][-2:] == hour
