"""The dashboard's pages (GET): each one connection, a few bounded statements, no writes."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from sqlatasks import cron, definition, status
from sqlatasks.sql import dashboard as sql
from sqlatasks.webui import chart, forms
from sqlatasks.webui import html as h

CSRF_COOKIE = "sqlatasks_csrf"
STATES = forms.STATES
CHART_MINUTES = 60

Redact = Callable[[str, Any], Any]
"""`redact(task_name, payload) -> payload`: what the task page shows of a payload."""


@dataclass(frozen=True)
class Config:
    engine: AsyncEngine
    allow_actions: bool
    redact: Redact | None
    page_size: int = 50
    scan: int = 50_000
    """Rows of the claim index one live-task page reads at most (its filters apply within)."""
    cap: int = 10_000
    """Rows the overview's counts read at most per statement: beyond, they show "≥ cap"."""


class Views:
    def __init__(self, config: Config) -> None:
        self.config = config

    async def overview(self, request: Request) -> Response:
        async with self.config.engine.connect() as conn:
            queues = await sql.overview(conn, self.config.cap)
            settings = await sql.queue_settings(conn)
            now, minutes = await sql.throughput(conn, CHART_MINUTES)
        hour = chart.per_queue(minutes)
        cap, base, csrf = self.config.cap, base_path(request), _csrf(request)
        actions = self.config.allow_actions

        def count(counts: dict[str, float], key: str) -> str:
            return h.number(_at_least(counts, key, cap))

        rows = [
            [
                h.link(base, "/tasks", name, queue=name),
                *(count(c, key) for key in ("queued", "scheduled", "running")),
                h.link(base, "/parked", _at_least(c, "parked", cap), queue=name),
                count(c, "kept"),
                h.esc(h.seconds(c.get("lag"))),
                *(h.number(n) for n in hour.get(name, (0, 0))[:2]),
                *forms.flow(settings.get(name)),
                *([forms.flow_button(base, csrf, name, settings.get(name))] if actions else []),
            ]
            for name, c in sorted({**{q: {} for q in [*settings, *hour]}, **queues}.items())
        ]
        headers = ["queue", "due", "scheduled", "running", "parked", "kept", "lag",
                   "completed 1 h", "failed 1 h", "flow", "limits",
                   *([""] if actions else [])]  # fmt: skip
        body = chart.figure(now, minutes, CHART_MINUTES)
        body += h.table(headers, rows, empty="No tasks in any queue.")
        if actions:
            body += f"<p>{forms.pause_any(base, csrf)}</p>"
        body += (
            f'<p class="note">Counts read at most {cap:,} rows each: live tasks in claim order '
            "(a count shown as ≥ N is at least N), parked ones of the newest parked (the "
            "parked page lists them all), kept ones of the longest kept. Completed and "
            "failed (parked) in the last hour: the workers' counts, written every "
            "--throughput-interval seconds. Flow and "
            "limits: what every runner obeys (docs/flow-control.md).</p>"
        )
        return self._page(request, "Overview", body, refresh=5)

    async def tasks(self, request: Request) -> Response:
        q = request.query_params
        filters = {
            "queue": q.get("queue") or None,
            "task_name": q.get("task") or None,
            "state": q.get("state") if q.get("state") in STATES else None,
        }
        after = _cursor(q.get("after"))
        async with self.config.engine.connect() as conn:
            found, following = await sql.live_page(
                conn, after, filters=filters, page=self.config.page_size, scan=self.config.scan
            )
        base = base_path(request)
        rows = [
            [
                h.link(base, f"/task/{r.id}", str(r.id)),
                f'<span class="{r.state}">{h.esc(r.state)}</span>',
                h.esc(r.queue),
                h.esc(r.task_name),
                h.esc(r.priority),
                h.esc(f"{r.attempts}/{r.max_attempts or '∞'}"),
                h.esc(r.scheduled_at),
                h.esc(r.locked_by if r.state == "running" else ""),
                h.esc(_elapsed(r)),
            ]
            for r in found
        ]
        headers = ["id", "state", "queue", "task", "priority", "attempt", "due at", "worker",
                   "running for ≤"]  # fmt: skip
        body = forms.filters(base, "/tasks", q, states=True)
        body += h.table(headers, rows, empty="No task here matches.")
        if following is not None:
            cursor = f"{following.priority},{following.scheduled_at.isoformat()},{following.id}"
            body += h.link(base, "/tasks", "next page →", **{**_kept(q), "after": cursor})
        title = "Running tasks" if filters["state"] == "running" else "Tasks"
        return self._page(request, title, body, refresh=None if after != sql.FIRST else 5)

    async def parked(self, request: Request) -> Response:
        q, base, csrf = request.query_params, base_path(request), _csrf(request)
        after = _parked_cursor(q.get("after"))
        queue, name = q.get("queue") or None, q.get("task") or None
        async with self.config.engine.connect() as conn:
            found = await sql.parked_page(
                conn, after, queue=queue, task_name=name, page=self.config.page_size
            )
        rows = [
            [
                f'<input type="checkbox" name="ids" value="{r.id}" form="selection">',
                h.link(base, f"/task/{r.id}", str(r.id)),
                h.esc(r.queue),
                h.esc(r.task_name),
                h.esc(r.attempts),
                h.esc(r.failed_at),
                f'<span class="parked">{h.esc(h.first_line(r.last_error))}</span>',
            ]
            for r in found
        ]
        headers = ["", "id", "queue", "task", "attempts", "parked at", "error"]
        body = forms.filters(base, "/parked", q, states=False)
        body += h.table(headers, rows, empty="No parked task matches.")
        if self.config.allow_actions and found:
            body += forms.parked_actions(base, csrf, queue, name)
        if len(found) == self.config.page_size:
            cursor = f"{found[-1].failed_at.isoformat()},{found[-1].id}"
            body += h.link(base, "/parked", "next page →", **{**_kept(q), "after": cursor})
        return self._page(request, "Parked tasks", body, refresh=None)

    async def task(self, request: Request) -> Response:
        task_id, base = int(request.path_params["task_id"]), base_path(request)
        show_payload = request.query_params.get("payload") == "1"
        info = None
        if definition.task_id_problem(task_id) is None:  # else no task has it (past bigint)
            async with self.config.engine.connect() as conn:
                info = await status.read(conn, task_id, payload=show_payload)
        if info is None:
            body = f"<p>Nothing is known of task {task_id} (finished and not kept?).</p>"
            return self._page(request, f"Task {task_id}", body, refresh=None, code=404)
        fields = [
            ("state", f'<span class="{info.state}">{h.esc(info.state)}</span>'),
            *((k, h.esc(getattr(info, k))) for k in ("task_name", "queue", "unique_key")),
            ("attempts", h.esc(f"{info.attempts}/{info.max_attempts or '∞'}")),
            *((k, h.esc(getattr(info, k))) for k in (
                "enqueued_at", "scheduled_at", "started_at", "finished_at", "worker")),
        ]  # fmt: skip
        body = h.table(["field", "value"], fields, empty="")
        if info.last_error:
            body += f'<h2>Error</h2><pre id="error">{h.esc(info.last_error)}</pre>'
        if info.progress is not None:
            p = info.progress
            said = (
                f"attempt {p.attempt}, reported {p.reported_at.isoformat(sep=' ')}"
                if p.reported_at is not None
                else "not as a worker writes it (edited by hand?): shown as stored"
            )
            body += f'<h2>Progress</h2><pre id="progress">{h.esc(_json(p.value))}</pre>'
            body += f'<p class="note">{h.esc(said)}</p>'
        if info.result is not None:
            body += f"<h2>Result</h2><pre>{h.esc(_json(info.result))}</pre>"
        if show_payload:
            shown = info.payload
            if self.config.redact is not None:
                shown = self.config.redact(info.task_name, shown)
            body += f'<h2>Payload</h2><pre id="payload">{h.esc(_json(shown))}</pre>'
        else:
            body += h.link(base, f"/task/{task_id}", "show payload", payload=1)
        if self.config.allow_actions:
            body += forms.task_actions(base, _csrf(request), info)
        return self._page(request, f"Task {task_id}", body, refresh=None)

    async def periodic(self, request: Request) -> Response:
        async with self.config.engine.connect() as conn:
            found = await sql.periodic(conn)
        now = datetime.now(UTC)
        rows = [
            [h.esc(r.name), h.esc(r.cron), h.esc(r.last_slot), h.esc(_next(r.cron, now))]
            for r in found
        ]
        headers = ["schedule", "cron", "last slot fired", "next slot"]
        body = h.table(headers, rows, empty="No periodic schedule has been seen by a runner.")
        return self._page(request, "Periodic schedules", body, refresh=30)

    async def workers(self, request: Request) -> Response:
        async with self.config.engine.connect() as conn:
            found = await sql.workers(conn)
        rows = [
            [h.esc(r.name), h.esc(r.pid), h.esc(r.state), h.esc(r.client),
             h.esc(r.backend_start), h.esc(h.seconds(r.idle_seconds))]
            for r in found
        ]  # fmt: skip
        headers = ["connection", "pid", "state", "client", "connected at", "heartbeat age"]
        body = h.table(headers, rows, empty="No runner is connected to this database.")
        body += (
            '<p class="note">From pg_stat_activity: each runner\'s supervisor and each '
            "worker's claim loop label their connection; the heartbeat age is the time since "
            "that connection last finished a statement (a claim loop polls at least every "
            "--idle-sleep).</p>"
        )
        return self._page(request, "Runners and workers", body, refresh=5)

    def _page(
        self, request: Request, title: str, body: str, *, refresh: int | None, code: int = 200
    ) -> Response:
        if request.headers.get("x-dashboard-partial"):
            return HTMLResponse(body, status_code=code)
        flash = request.query_params.get("done")
        text = h.page(base_path(request), title, body, refresh=refresh, flash=flash)
        response = HTMLResponse(text, status_code=code)
        csrf = _csrf(request)
        if request.cookies.get(CSRF_COOKIE) != csrf:
            path = base_path(request) or "/"
            response.set_cookie(CSRF_COOKIE, csrf, path=path, httponly=True, samesite="strict")
        return response


def base_path(request: Request) -> str:
    """The prefix the app is mounted under ("" when it runs alone)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _csrf(request: Request) -> str:
    """This browser's CSRF token (the cookie's, or a new one the page response sets)."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token:
        token = request.scope.setdefault("sqlatasks.csrf", secrets.token_urlsafe(32))
    return str(token)


def _cursor(text: str | None) -> sql.Cursor:
    try:
        priority, scheduled_at, task_id = (text or "").split(",")
        return sql.Cursor(int(priority), datetime.fromisoformat(scheduled_at), int(task_id))
    except ValueError:
        return sql.FIRST


def _at_least(counts: dict[str, float], key: str, cap: int) -> str:
    """A count read through a cap: "≥ cap" once it reaches it."""
    value = int(counts.get(key, 0))
    return f"≥ {value}" if value >= cap else str(value)


def _parked_cursor(text: str | None) -> sql.ParkedCursor:
    try:
        failed_at, task_id = (text or "").rsplit(",", 1)
        return sql.ParkedCursor(datetime.fromisoformat(failed_at), int(task_id))
    except ValueError:
        return sql.NEWEST


def _elapsed(row: Any) -> str:
    """Running for at most this long: since it was due (the claim time is not stored)."""
    if row.state != "running":
        return ""
    return h.seconds((datetime.now(UTC) - row.scheduled_at).total_seconds())


def _next(expression: str, now: datetime) -> datetime | None:
    try:
        return cron.next_slot(expression, now)
    except (ValueError, StopIteration):
        return None


def _json(value: Any) -> str:
    dump = getattr(value, "model_dump", None)
    return json.dumps(dump(mode="json") if dump else value, indent=2, default=str)


def _kept(q: Any) -> dict[str, str]:
    return {k: q[k] for k in ("queue", "task", "state") if q.get(k)}
