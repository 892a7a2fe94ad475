"""LISTEN/NOTIFY wake-ups: the only driver-specific module.

Holds one asyncpg connection that LISTENs on the channel the insert trigger notifies (wake an
idle worker) and on the cancellation channel (interrupt a running task). A lost connection is
reconnected with backoff; while it is down, workers still poll every idle sleep, so tasks keep
moving, only with more latency.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import asyncpg
from sqlalchemy.engine import make_url

from sqlatasks import errors
from sqlatasks.backoff import Backoff

log = logging.getLogger(__name__)

KEEPALIVE = 30.0
"""Seconds between checks that a quiet LISTEN connection is still alive."""


def asyncpg_dsn(database_url: str) -> str:
    """The asyncpg DSN for a `postgresql+asyncpg://` SQLAlchemy URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


async def listen(
    database_url: str,
    channels: Mapping[str, Callable[[str], None]],
    *,
    on_connect: Callable[[], None],
    name: str = "sqlatasks listener",
) -> None:
    """Call `channels[channel](payload)` on every NOTIFY, for ever, reconnecting when the link
    drops; `on_connect()` after each (re)connection, for whatever was missed meanwhile.

    `name` labels the connection in pg_stat_activity (application_name).
    """
    backoff = Backoff(first=0.5, most=30.0)
    while True:
        try:
            await _listen_once(asyncpg_dsn(database_url), channels, on_connect, name)
            backoff.reset()
            delay = backoff.next()
            log.warning("LISTEN connection lost; reconnecting (polling meanwhile)")
        except Exception as exc:  # whatever it is, polling carries on: retry, never crash
            delay = backoff.next()
            log.warning(
                "LISTEN connection failed (%s); retrying in %.1f s, polling meanwhile",
                errors.one_line(exc),
                delay,
            )
        await anyio.sleep(delay)


async def _listen_once(
    dsn: str,
    channels: Mapping[str, Callable[[str], None]],
    on_connect: Callable[[], None],
    name: str,
) -> None:
    """Listen until the connection is lost."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": name})
    lost = anyio.Event()

    def on_notify(_conn: Any, _pid: int, channel: str, payload: str) -> None:
        channels[channel](payload)

    conn.add_termination_listener(lambda _conn: lost.set())
    try:
        for channel in channels:
            await conn.add_listener(channel, on_notify)
        on_connect()
        while not conn.is_closed():
            with anyio.move_on_after(KEEPALIVE):
                await lost.wait()
                return
            await conn.fetchval("SELECT 1")  # a dead peer shows up here, not in a quiet LISTEN
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await conn.close()
