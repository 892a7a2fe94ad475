"""The dashboard's actions (POST): retry, purge, cancel, pause and resume a queue. Refused
(403) unless actions are enabled, and without this browser's CSRF token.

Each action is one transaction through `sqlatasks.operations`, the functions the CLI calls.
CSRF: double-submit — the token is a cookie (SameSite=Strict, HttpOnly) that a page set, and
every form carries it back in a hidden field; a POST whose field does not equal the cookie is
refused. Another site can make a browser send the cookie, never read it into a form.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Literal
from urllib.parse import parse_qs, urlencode

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from sqlatasks import errors, operations
from sqlatasks.sql import dashboard as sql
from sqlatasks.webui.views import CSRF_COOKIE, Config, base_path

FORM_LIMIT = 1_000_000
"""Bytes of a form body read at most (a selection of ids: far below)."""


class Actions:
    def __init__(self, config: Config) -> None:
        self.config = config

    async def retry(self, request: Request) -> Response:
        return await self._parked(request, "retry")

    async def purge(self, request: Request) -> Response:
        return await self._parked(request, "purge")

    async def selection(self, request: Request) -> Response:
        """The parked page's checkboxes: `do` says which of retry and purge."""
        form, refused = await self._form(request)
        if refused is not None:
            return refused
        match form.get("do", [""])[0]:
            case "retry":
                return await self._parked(request, "retry", form)
            case "purge":
                return await self._parked(request, "purge", form)
        return PlainTextResponse("do must be retry or purge", status_code=400)

    async def cancel(self, request: Request) -> Response:
        form, refused = await self._form(request)
        if refused is not None:
            return refused
        task_id = int(form.get("id", ["0"])[0])
        try:
            async with AsyncSession(self.config.engine) as session, session.begin():
                outcome = await operations.cancel(session, task_id)
        except errors.InvalidOption as exc:
            return PlainTextResponse(exc.problem, status_code=400)
        return _back(request, f"/task/{task_id}", f"task {task_id}: {outcome}")

    async def pause(self, request: Request) -> Response:
        """Pause a queue in every runner (`operations.pause_queue`): running tasks finish."""
        return await self._flow(request, "pause")

    async def resume(self, request: Request) -> Response:
        """Resume a paused queue (`operations.resume_queue`)."""
        return await self._flow(request, "resume")

    async def _flow(self, request: Request, do: Literal["pause", "resume"]) -> Response:
        form, refused = await self._form(request)
        if refused is not None:
            return refused
        queue = form.get("queue", [""])[0].strip()
        act = operations.pause_queue if do == "pause" else operations.resume_queue
        try:
            async with AsyncSession(self.config.engine) as session, session.begin():
                await act(session, queue)
        except errors.InvalidOption as exc:
            return PlainTextResponse(exc.problem, status_code=400)
        return _back(request, "/", f"{queue}: {do}d")

    async def _parked(
        self,
        request: Request,
        do: Literal["retry", "purge"],
        form: dict[str, list[str]] | None = None,
    ) -> Response:
        if form is None:
            form, refused = await self._form(request)
            if refused is not None:
                return refused
        ids = [int(i) for i in form.get("ids", []) if i.isdigit()]
        queue, name = form.get("queue", [""])[0] or None, form.get("task", [""])[0] or None
        everything = form.get("all", [""])[0] == "1"
        if not ids and not everything:
            return PlainTextResponse("choose tasks, or all", status_code=400)
        try:
            async with AsyncSession(self.config.engine) as session, session.begin():
                chosen: Sequence[int] | Literal["all"] = ids
                if everything:
                    chosen = await _matching(session, queue, name, self.config.cap)
                act = operations.retry_failed if do == "retry" else operations.delete_failed
                count = await act(session, chosen)
        except errors.InvalidOption as exc:
            return PlainTextResponse(exc.problem, status_code=400)
        done = f"{'retried' if do == 'retry' else 'purged'} {count}"
        if len(ids) == 1 and not everything:
            return _back(request, f"/task/{ids[0]}", done)
        return _back(request, "/parked", done, queue=queue, task=name)

    async def _form(self, request: Request) -> tuple[dict[str, list[str]], Response | None]:
        """The POSTed form, or the response that refuses it (403: actions off, or no CSRF)."""
        if not self.config.allow_actions:
            return {}, PlainTextResponse(
                "actions are disabled: this dashboard is read-only", status_code=403
            )
        body = await request.body()
        if len(body) > FORM_LIMIT:
            return {}, PlainTextResponse("form too large", status_code=413)
        form = parse_qs(body.decode("utf-8", errors="replace"))
        cookie = request.cookies.get(CSRF_COOKIE, "")
        given = form.get("csrf", [""])[0]
        if not cookie or not secrets.compare_digest(cookie.encode(), given.encode()):
            return form, PlainTextResponse("missing or wrong CSRF token", status_code=403)
        return form, None


async def _matching(
    session: AsyncSession, queue: str | None, name: str | None, cap: int
) -> Sequence[int] | Literal["all"]:
    """Every parked task when nothing filters; else the ids of (at most `cap`) that match."""
    if queue is None and name is None:
        return "all"
    conn = await session.connection()
    found = await sql.parked_page(conn, sql.NEWEST, queue=queue, task_name=name, page=cap)
    return [r.id for r in found]


def _back(request: Request, path: str, done: str, **query: str | None) -> Response:
    """See the result: 303 to a page of this dashboard, with what was done."""
    kept = {k: v for k, v in {**query, "done": done}.items() if v}
    return RedirectResponse(f"{base_path(request)}{path}?{urlencode(kept)}", status_code=303)
