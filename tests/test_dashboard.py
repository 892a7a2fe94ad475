"""The web dashboard over HTTP (docs/dashboard.md): every page with a task in every state,
filters and keyset pages, actions refused unless enabled and without the CSRF token, mounted
under a prefix; and no page statement scans the queue table or the throughput rollup
(EXPLAIN, after ANALYZE)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.applications import Starlette
from starlette.routing import Mount

from sqlatasks import operations
from sqlatasks.dashboard import create_app
from sqlatasks.sql import dashboard as sql
from tests.dashboard_tasks import seed


@asynccontextmanager
async def client(app: Any, base: str = "http://dash") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base) as c:
        yield c


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def test_every_page_shows_every_state(engine: AsyncEngine) -> None:
    ids = await seed(engine)
    async with client(create_app(engine)) as c:
        overview = (await c.get("/")).text
        for queue in ("mail", "images", "billing"):
            assert f">{queue}</a>" in overview
        mail = re.search(r">mail</a>(.*?)</tr>", overview, re.S)
        assert mail
        # due, scheduled, running, kept; completed and failed in the last hour (no runner ran)
        assert [int(n) for n in re.findall(r'class="n">(\d+)', mail.group(1))] == [3, 1, 0, 1, 0, 0]
        running = (await c.get("/tasks", params={"state": "running"})).text
        assert "worker-7" in running
        assert f">{ids['running']}</a>" in running
        assert f">{ids['queued']}</a>" not in running
        parked = (await c.get("/parked")).text
        assert "PaymentDeclined: card 4242 declined" in parked
        assert "Traceback line two" not in parked  # the first line only
        task = (await c.get(f"/task/{ids['parked']}")).text
        assert "Traceback line two" in task  # the whole error
        assert "4242" not in task.split('id="error"')[0]  # no payload until asked
        assert "show payload" in task
        kept = (await c.get("/task/1000000")).text
        assert "completed" in kept
        assert "&quot;sent&quot;: true" in kept
        periodic = (await c.get("/periodic")).text
        assert "app:nightly" in periodic
        assert "03:00:00" in periodic  # the next slot
        assert (await c.get("/task/999999999")).status_code == 404
        assert "retry" not in task  # read-only: no action buttons


async def test_filters_and_the_redaction_hook(engine: AsyncEngine) -> None:
    ids = await seed(engine)

    def hide_card(task_name: str, payload: Any) -> Any:
        return {**payload, "card": "****"} if task_name == "app:charge" else payload

    async with client(create_app(engine, redact=hide_card)) as c:
        by_queue = (await c.get("/tasks", params={"queue": "images"})).text
        assert "app:resize" in by_queue
        assert "app:send_mail" not in by_queue
        scheduled = (await c.get("/tasks", params={"state": "scheduled"})).text
        assert "app:digest" in scheduled
        assert "app:send_mail" not in scheduled
        by_name = (await c.get("/tasks", params={"task": "app:send_mail"})).text
        assert by_name.count("app:send_mail</td>") == 3
        assert (await c.get("/parked", params={"queue": "mail"})).text.count("PaymentDeclined") == 0
        shown = (await c.get(f"/task/{ids['parked']}", params={"payload": "1"})).text
        assert "****" in shown
        assert "4242" not in shown.split('id="payload"')[1]


async def test_live_pages_follow_the_keyset_through_every_task(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("""
            INSERT INTO sqlatasks_tasks (task_name, payload, queue, priority, scheduled_at)
            SELECT 'app:t', '{}', CASE WHEN n % 3 = 0 THEN 'rare' ELSE 'common' END, n % 2,
                   now() - make_interval(secs => n)
            FROM generate_series(1, 40) AS n""")
        )
        expected = list(
            (
                await conn.execute(
                    text(
                        "SELECT id FROM sqlatasks_tasks WHERE queue = 'rare'"
                        " ORDER BY priority DESC, scheduled_at, id"
                    )
                )
            ).scalars()
        )
        seen: list[int] = []
        cursor: sql.Cursor | None = sql.FIRST
        pages = 0
        while cursor is not None and pages < 100:
            # a window of 7 rows: pages come short (or empty) where the filter matches few
            found, cursor = await sql.live_page(
                conn,
                cursor,
                filters={"queue": "rare", "task_name": None, "state": None},
                page=4,
                scan=7,
            )
            seen += [r.id for r in found]
            pages += 1
    assert seen == expected


async def test_actions_are_refused_unless_enabled(engine: AsyncEngine) -> None:
    ids = await seed(engine)
    async with client(create_app(engine)) as c:
        await c.get("/parked")  # sets the CSRF cookie
        token = c.cookies["sqlatasks_csrf"]
        for action in ("retry", "purge", "cancel", "selection", "pause", "resume"):
            form = {"ids": ids["parked"], "id": ids["parked"], "csrf": token, "do": "retry"}
            answer = await c.post(f"/actions/{action}", data=form)
            assert answer.status_code == 403, action
        still = (await c.get(f"/task/{ids['parked']}")).text
        assert '<span class="failed">failed</span>' in still


async def test_actions_need_this_browsers_csrf_token(engine: AsyncEngine) -> None:
    ids = await seed(engine)
    async with client(create_app(engine, allow_actions=True)) as c:
        page = (await c.get(f"/task/{ids['parked']}")).text
        token = csrf_of(page)
        assert (await c.post("/actions/retry", data={"ids": ids["parked"]})).status_code == 403
        wrong = {"ids": ids["parked"], "csrf": "forged"}
        assert (await c.post("/actions/retry", data=wrong)).status_code == 403
        async with client(create_app(engine, allow_actions=True)) as other:  # no cookie
            stolen = {"ids": ids["parked"], "csrf": token}
            assert (await other.post("/actions/retry", data=stolen)).status_code == 403
        done = await c.post("/actions/retry", data={"ids": ids["parked"], "csrf": token})
        assert done.status_code == 303
        after = (await c.get(done.headers["location"])).text
        assert "retried 1" in after
        assert '<span class="queued">queued</span>' in after
        cancelled = await c.post("/actions/cancel", data={"id": ids["running"], "csrf": token})
        assert "cancelling" in (await c.get(cancelled.headers["location"])).text


async def test_pause_and_resume_a_queue_through_flow_control(engine: AsyncEngine) -> None:
    await seed(engine)
    async with engine.begin() as conn:
        await conn.execute(
            text("""INSERT INTO sqlatasks_queues (name, max_running, per_second)
                    VALUES ('mail', 2, 0.5)""")
        )
    async with client(create_app(engine, allow_actions=True)) as c:
        token = csrf_of((await c.get("/")).text)
        paused = await c.post("/actions/pause", data={"queue": "mail", "csrf": token})
        assert paused.status_code == 303
        overview = (await c.get(paused.headers["location"])).text
        assert "mail: paused" in overview
        mail = re.search(r">mail</a>(.*?)</tr>", overview, re.S)
        assert mail
        assert '<span class="parked">paused</span>' in mail.group(1)
        assert "≤ 2 running, ≤ 0.5/s" in mail.group(1)
        assert 'value="resume"' in mail.group(1)
        # a queue without tasks: paused by name, and listed from then on
        await c.post("/actions/pause", data={"queue": "later", "csrf": token})
        assert re.search(r">later</a>.*?paused</span>", (await c.get("/")).text, re.S)
        async with AsyncSession(engine) as session:
            settings = {s.queue: s.paused for s in await operations.queue_settings(session)}
        assert settings == {"mail": True, "later": True}
        await c.post("/actions/resume", data={"queue": "mail", "csrf": token})
        mail = re.search(r">mail</a>(.*?)</tr>", (await c.get("/")).text, re.S)
        assert mail
        assert "paused" not in mail.group(1)
        assert 'value="pause"' in mail.group(1)
        refused = await c.post("/actions/pause", data={"queue": "", "csrf": token})
        assert refused.status_code == 400


async def test_retry_and_purge_all_matching_a_filter_or_a_selection(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("""
            INSERT INTO sqlatasks_tasks (task_name, payload, queue, failed_at, last_error)
            SELECT 'app:t', '{}', q, now(), 'E: x' FROM unnest(ARRAY['a','a','b','b','c']) q""")
        )
    parked = "SELECT queue, count(*) FROM sqlatasks_tasks WHERE failed_at IS NOT NULL GROUP BY 1"
    async with client(create_app(engine, allow_actions=True)) as c:
        token = csrf_of((await c.get("/parked")).text)
        await c.post("/actions/retry", data={"all": "1", "queue": "a", "csrf": token})
        async with engine.connect() as conn:
            assert dict((await conn.execute(text(parked))).all()) == {"b": 2, "c": 1}
            b_ids = (
                (await conn.execute(text("SELECT id FROM sqlatasks_tasks WHERE queue = 'b'")))
                .scalars()
                .all()
            )
        selection = {"ids": [str(i) for i in b_ids], "csrf": token, "do": "purge"}
        answer = await c.post("/actions/selection", data=selection)
        assert answer.status_code == 303
        async with engine.connect() as conn:
            assert dict((await conn.execute(text(parked))).all()) == {"c": 1}


async def test_parked_pages_follow_the_newest_failure_through_ties(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:  # seven parked in one statement: one failed_at, a tie
        await conn.execute(
            text("""
            INSERT INTO sqlatasks_tasks (task_name, payload, queue, failed_at, last_error)
            SELECT 'app:t', '{}', 'q', now() - interval '1 hour', 'E: x'
            FROM generate_series(1, 7)""")
        )
        await conn.execute(  # a later id that failed earlier, and a live task
            text("""
            INSERT INTO sqlatasks_tasks (task_name, payload, queue, failed_at, last_error)
            VALUES ('app:t', '{}', 'q', now() - interval '1 day', 'E: old'),
                   ('app:t', '{}', 'q', NULL, NULL)""")
        )
        expected = list(
            (
                await conn.execute(
                    text("""SELECT id FROM sqlatasks_tasks WHERE failed_at IS NOT NULL
                            ORDER BY failed_at DESC, id DESC""")
                )
            ).scalars()
        )
    seen: list[int] = []
    async with client(create_app(engine, page_size=3)) as c:
        url: str | None = "/parked"
        while url is not None:
            page = (await c.get(url)).text
            seen += [int(i) for i in re.findall(r'name="ids" value="(\d+)"', page)]
            following = re.search(r'href="(/parked\?[^"]*after=[^"]+)">next page', page)
            url = following.group(1).replace("&amp;", "&") if following else None
    assert seen == expected
    assert len(seen) == 8


async def test_mounted_under_a_prefix(engine: AsyncEngine) -> None:
    ids = await seed(engine)
    host = Starlette(routes=[Mount("/ops/queue", create_app(engine, allow_actions=True))])
    async with client(host) as c:
        overview = await c.get("/ops/queue/")
        assert overview.status_code == 200
        assert 'href="/ops/queue/static/dashboard.css"' in overview.text
        assert 'href="/ops/queue/parked?queue=billing"' in overview.text
        assert (await c.get("/ops/queue/static/dashboard.js")).status_code == 200
        task = (await c.get(f"/ops/queue/task/{ids['parked']}")).text
        assert 'action="/ops/queue/actions/retry"' in task
        answer = await c.post(
            "/ops/queue/actions/retry", data={"ids": ids["parked"], "csrf": csrf_of(task)}
        )
        assert answer.headers["location"].startswith(f"/ops/queue/task/{ids['parked']}")


async def test_workers_page_shows_runner_connections(engine: AsyncEngine, db_url: str) -> None:
    dsn = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    claim = await asyncpg.connect(dsn, server_settings={"application_name": "sqlatasks claim w-1"})
    try:
        async with client(create_app(engine)) as c:
            page = (await c.get("/workers")).text
        assert "sqlatasks claim w-1" in page
        assert "No runner is connected" not in page
    finally:
        await claim.close()


ROWS = 200_000


async def test_no_page_statement_scans_the_queue_table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(f"""
            INSERT INTO sqlatasks_tasks (task_name, payload, queue, priority, scheduled_at,
                                         failed_at, last_error)
            SELECT 'app:t' || (n % 10), '{{}}', 'q' || (n % 5), (n % 3)::smallint,
                   now() + make_interval(secs => n % 1000 - 500),
                   CASE WHEN n % 1000 = 0 THEN now() END,
                   CASE WHEN n % 1000 = 0 THEN 'E: x' END
            FROM generate_series(1, {ROWS}) AS n""")
        )
        await conn.execute(
            text("""
            INSERT INTO sqlatasks_finished (id, task_name, queue, state, payload, attempts,
                                            created_at, finished_at, keep_until)
            SELECT n, 'app:t', 'q1', 'completed', '{}', 1, now(), now(),
                   now() + make_interval(secs => n)
            FROM generate_series(1, 50000) AS n""")
        )
        # a day of the rollup (a scheduler that has not pruned for a day): 5 queues, 4 workers
        await conn.execute(
            text("""
            INSERT INTO sqlatasks_throughput (minute, queue, worker, completed, failed)
            SELECT date_trunc('minute', now()) - make_interval(mins => m), 'q' || q, 'w' || w,
                   m % 50, m % 3
            FROM generate_series(0, 1439) AS m, generate_series(1, 5) AS q,
                 generate_series(1, 4) AS w""")
        )
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE sqlatasks_tasks"))
        await conn.execute(text("ANALYZE sqlatasks_finished"))
        await conn.execute(text("ANALYZE sqlatasks_throughput"))
        plans = {name: await sql.plan(conn, name) for name in sql.PAGE_STATEMENTS}
    scanning = {
        name: plan for name, plan in plans.items() if re.search(r"Seq Scan on sqlatasks_", plan)
    }
    assert not scanning, scanning
    for name in ("overview_parked", "parked_page"):  # the parked index (schema v6)
        assert re.search(r"Index Scan using sqlatasks_tasks_parked_idx", plans[name]), plans[name]
    # the chart: a range of the rollup's primary key, the last hour only (schema v9)
    assert re.search(r"Index Scan (using|on) sqlatasks_throughput_pkey", plans["throughput"]), (
        plans["throughput"]
    )
