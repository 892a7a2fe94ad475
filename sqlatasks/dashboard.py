"""A web dashboard for the queue: an ASGI app (Starlette), mountable under any prefix.

    from sqlatasks.dashboard import create_app
    app.mount("/tasks-admin", create_app(engine))                  # read-only
    app.mount("/tasks-admin", create_app(engine, allow_actions=True, redact=hide_secrets))

or alone: `sqlatasks dashboard --port 8080 [--allow-actions]` (docs/dashboard.md). Pages are
server-rendered HTML with a stylesheet and a few lines of script served by the app itself (no
CDN, no build step). Every page reads through an index and a cap (sqlatasks.sql.dashboard):
fast on a table of a million rows. Read-only unless `allow_actions`: actions are POSTs with a
CSRF token, refused with 403 otherwise. The app has no login of its own: put the
application's authentication in front of it (docs/dashboard.md shows a middleware).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sqlatasks.webui import html
from sqlatasks.webui.actions import Actions
from sqlatasks.webui.views import Config, Redact, Views

__all__ = ["Redact", "create_app"]


def create_app(
    database: AsyncEngine | str,
    *,
    allow_actions: bool = False,
    redact: Redact | None = None,
    page_size: int = 50,
) -> Starlette:
    """The dashboard on `database` (an engine of the application's, or a URL: then the app
    makes its own engine and disposes of it at shutdown when it runs alone).

    `allow_actions`: retry, purge and cancel (POST, CSRF-checked); else every POST is 403.
    `redact(task_name, payload) -> payload`: what the task page shows of a payload, for
    fields that operators must not see (the payload is only sent when asked for anyway).
    """
    owned = isinstance(database, str)
    engine = (
        create_async_engine(
            database,
            pool_size=2,
            connect_args={"server_settings": {"application_name": "sqlatasks dashboard"}},
        )
        if isinstance(database, str)
        else database
    )
    config = Config(engine, allow_actions, redact, page_size=page_size)
    views, actions = Views(config), Actions(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if owned:
            await engine.dispose()

    routes = [
        Route("/", views.overview),
        Route("/tasks", views.tasks),
        Route("/parked", views.parked),
        Route("/task/{task_id:int}", views.task),
        Route("/periodic", views.periodic),
        Route("/workers", views.workers),
        Route("/static/dashboard.css", _asset(html.CSS, "text/css")),
        Route("/static/dashboard.js", _asset(html.JS, "text/javascript")),
        *(
            Route(f"/actions/{name}", getattr(actions, name), methods=["POST"])
            for name in ("retry", "purge", "selection", "cancel", "pause", "resume")
        ),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _asset(content: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return Response(content, media_type=media_type, headers={"cache-control": "max-age=300"})

    return serve
