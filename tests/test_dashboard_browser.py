"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's
Python client), served by `python -m sqlatasks dashboard` on a database with a task in every
state and a real runner: filter, open a parked task and read its error, retry it and see it
run, pause its queue and see a new task wait, resume and see it run, see the overview's chart
count what ran, and see actions refused (403) by a read-only dashboard. It writes the screenshots of
docs/dashboard.md (docs/images/dashboard-*.png)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from playwright.async_api import Page, async_playwright
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqlatasks import enqueue
from tests import dashboard_tasks as t
from tests import ledger
from tests.conftest import ROOT
from tests.dashboard_tasks import seed
from tests.eventually import eventually
from tests.processes import Runners

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
CHROMIUM = os.environ.get("SQLATASKS_TEST_CHROMIUM") or shutil.which("chromium") or ""
IMAGES = ROOT / "docs" / "images"
IDLE_SLEEP = 0.5
"""The runner's: a worker learns of a pause within one (docs/flow-control.md)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve(db_url: str, tmp_path: Path) -> Iterator[object]:
    """`serve(*flags)`: `python -m sqlatasks dashboard` on db_url; its base URL. Stopped after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> str:
        port = _free_port()
        log = (tmp_path / f"dashboard-{port}.log").open("wb")
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "sqlatasks", "dashboard", "--database-url", db_url,
                 "--port", str(port), *flags],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        )  # fmt: skip
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


async def _up(base: str) -> str:
    async def answer() -> bool:
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(base + "/")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(answer, what=f"the dashboard at {base}")
    return base


async def _enqueue_flaky(engine: AsyncEngine) -> int:
    async with AsyncSession(engine) as session, session.begin():
        queued = enqueue(t.flaky, t.Report(number=1))
        session.add(queued)
        await session.flush()
        return int(queued.id)


async def _shot(page: Page, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(IMAGES / f"dashboard-{name}.png"), full_page=True)


async def test_operator_finds_a_parked_task_retries_it_and_sees_it_run(
    engine: AsyncEngine, tmp_path: Path, start_runner: Runners, serve: object
) -> None:
    assert CHROMIUM, "chromium is not installed (.ci/run installs it: apt-get install chromium)"
    ids = await seed(engine)
    flaky = await _enqueue_flaky(engine)
    runner = start_runner(
        "--workers", "1", "--queue", "reports", "--idle-sleep", str(IDLE_SLEEP),
        "--throughput-interval", "0.2",
        imports=["tests.dashboard_tasks"],
    )  # fmt: skip
    await runner.started(1)
    base = await _up(serve("--allow-actions"))  # type: ignore[operator]
    read_only = await _up(serve())  # type: ignore[operator]
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        page = await browser.new_page(viewport={"width": 1200, "height": 700})
        # the parked task shows up on the parked page (the runner ran it once, and it failed)
        await page.goto(base + "/parked")
        parked_link = page.locator(f"a[href='/task/{flaky}']")
        await eventually(
            lambda: _reload_count(page, parked_link), what="the flaky task parked", timeout=60
        )
        # the overview: every queue, every state
        await page.goto(base + "/")
        overview = await page.locator("main").inner_text()
        for queue in ("mail", "images", "billing", "reports"):
            assert queue in overview
        # filter the tasks by queue and state
        await page.goto(base + "/tasks")
        await page.fill("input[name=queue]", "mail")
        await page.select_option("select[name=state]", "queued")
        await page.click("form.filters button")
        await page.wait_for_url("**/tasks?queue=mail*")
        listed = await page.locator("main table").inner_text()
        assert listed.count("app:send_mail") == 3
        assert "app:digest" not in listed  # scheduled, filtered out
        assert "app:resize" not in listed  # another queue
        await _shot(page, "tasks")
        # open the parked task from the parked page: its whole error
        await page.goto(base + "/parked")
        assert "printer on fire" in await page.locator("main table").inner_text()
        await page.click(f"a[href='/task/{flaky}']")
        error = await page.locator("#error").inner_text()
        assert "report 1 failed: printer on fire" in error
        assert "second line of error" in error
        await _shot(page, "task")
        # retry it, and see it run to completion
        await page.click("button[value=retry]")
        await page.wait_for_selector("#flash")
        assert "retried 1" in await page.locator("#flash").inner_text()
        await ledger.wait_for_entries(tmp_path, "ran", 1)
        state = page.locator("main table span.completed")
        await eventually(lambda: _reload_count(page, state), what="the task shown completed")
        await _pause_enqueue_and_resume(page, base, engine, tmp_path)
        await _chart_shows_the_hour(page, base)
        # a read-only dashboard: no buttons, and a forged POST is refused
        await page.goto(f"{read_only}/task/{ids['parked']}")
        assert await page.locator("button[value=retry]").count() == 0
        refused = await page.evaluate(
            """async (url) => (await fetch(url, {method: 'POST',
                 headers: {'content-type': 'application/x-www-form-urlencoded'},
                 body: 'ids=1&csrf=x'})).status""",
            f"{read_only}/actions/retry",
        )
        assert refused == 403
        await browser.close()


async def _pause_enqueue_and_resume(
    page: Page, base: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Pause "reports" from the overview: a task enqueued then does not start (its row stays
    unleased, nothing in the ledger) for a few seconds; resume it there, and the task runs."""
    await page.goto(base + "/")
    await page.locator("tr", has_text="reports").locator("button[value=pause]").click()
    await page.wait_for_selector("#flash")
    assert "reports: paused" in await page.locator("#flash").inner_text()
    assert "paused" in await page.locator("tr", has_text="reports").inner_text()
    await _shot(page, "paused")
    await anyio.sleep(3 * IDLE_SLEEP)  # the documented bound: every worker has re-read it
    async with AsyncSession(engine) as session, session.begin():
        queued = enqueue(t.tally, t.Report(number=2))
        session.add(queued)
        await session.flush()
        task_id = int(queued.id)
    await anyio.sleep(3.0)  # many idle sleeps: an unpaused queue would have started it
    assert ledger.entries(tmp_path, "tallied") == []
    async with engine.connect() as conn:
        leased = await conn.scalar(
            text("SELECT locked_by FROM sqlatasks_tasks WHERE id = :id"), {"id": task_id}
        )
    assert leased is None
    await page.goto(base + "/")
    await page.locator("tr", has_text="reports").locator("button[value=resume]").click()
    await page.wait_for_selector("#flash")
    assert "reports: resumed" in await page.locator("#flash").inner_text()
    await ledger.wait_for_entries(tmp_path, "tallied", 1)


async def _chart_shows_the_hour(page: Page, base: str) -> None:
    """The overview's chart counts what the runner did: the flaky task parked once, then
    (retried from the dashboard) completed, and the tallied task completed: 2 completed,
    1 failed — once the worker's next flush (every 0.2 s here) is in."""
    await page.goto(base + "/")
    chart = page.locator("figure#throughput")

    async def totals() -> str:
        await page.reload()
        return str(await chart.locator("figcaption").inner_text())

    caption = await eventually(
        totals, lambda text: "2 completed, 1 failed" in text, what="the chart's totals"
    )
    assert "0 retried" in caption
    label = await chart.locator("svg").get_attribute("aria-labelledby")
    assert label == "throughput-title throughput-desc"
    described = await chart.locator("svg desc").text_content()
    assert "2 completed, 1 failed (parked)" in str(described)
    assert await chart.locator("rect.done").count() >= 1  # at least one minute's bar
    await _shot(page, "overview")


async def _reload_count(page: Page, locator: object) -> int:
    await page.reload()
    return int(await locator.count())  # type: ignore[attr-defined]
