"""LISTEN/NOTIFY wake-ups: the only driver-specific module.

Holds one asyncpg connection that LISTENs on the channel the insert trigger notifies (wake an
idle worker) and on the cancellation channel (interrupt a running task). A lost connection is
reconnected with backoff; while it is down, workers still poll every idle sleep, so tasks keep
moving, only with more latency.

Every connection proves that it hears before it is trusted: it NOTIFYs itself from a second
connection and waits for the message. Through PgBouncer in transaction pooling, LISTEN
succeeds but binds nothing (the server connection goes back to the pool at once), so the
probe goes unheard: the listener says so once and stops, and the worker polls every idle
sleep, knowingly (docs/pgbouncer.md). A direct URL for LISTEN (`--listen-url`) avoids that.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import asyncpg
from sqlalchemy.engine import make_url

from sqlatasks import errors, poolers
from sqlatasks.backoff import Backoff

log = logging.getLogger(__name__)

KEEPALIVE = 30.0
"""Seconds between checks that a quiet LISTEN connection is still alive."""
PROBE_TIMEOUT = 10.0
"""Seconds a new LISTEN connection may take to hear its own probe before it is judged deaf."""


def asyncpg_dsn(database_url: str) -> str:
    """The asyncpg DSN for a `postgresql+asyncpg://` SQLAlchemy URL, without the query keys
    that only SQLAlchemy understands (asyncpg would send them to the server as settings)."""
    url = make_url(database_url)
    url = url.set(drivername="postgresql").difference_update_query(poolers.SQLALCHEMY_ONLY)
    if "ssl" in url.query:  # the keyword argument's name; a DSN spells it as libpq does
        url = url.difference_update_query(["ssl"]).update_query_dict({"sslmode": url.query["ssl"]})
    return url.render_as_string(False)


def _where(database_url: str) -> str:
    url = make_url(database_url)
    return f"{url.host or url.query.get('host', 'the socket')}:{url.port or 5432}"


async def listen(
    database_url: str,
    channels: Mapping[str, Callable[[str], None]],
    *,
    on_connect: Callable[[], None],
    name: str = "sqlatasks listener",
    idle_sleep: float | None = None,
) -> None:
    """Call `channels[channel](payload)` on every NOTIFY, reconnecting when the link drops;
    `on_connect()` after each (re)connection, for whatever was missed meanwhile.

    Returns only when LISTEN cannot work through `database_url` (its probe went unheard), after
    one warning; the caller's polling every `idle_sleep` is then all there is. `name` labels
    the connection in pg_stat_activity (application_name).
    """
    backoff = Backoff(first=0.5, most=30.0)
    while True:
        try:
            heard = await _listen_once(database_url, channels, on_connect, name)
            if not heard:
                _warn_deaf(database_url, idle_sleep)
                return
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


def _warn_deaf(database_url: str, idle_sleep: float | None) -> None:
    every = f"every idle sleep ({idle_sleep:g} s)" if idle_sleep else "every idle sleep"
    log.warning(
        "LISTEN is off: NOTIFY does not reach this worker through %s (PgBouncer in "
        "transaction pooling?); polling %s instead, and an operator's cancel does not "
        "interrupt a running task. For NOTIFY-fast pickup give --listen-url "
        "(SQLATASKS_LISTEN_URL) a direct or session-pooled URL (docs/pgbouncer.md)",
        _where(database_url),
        every,
    )


async def _connect(database_url: str, name: str) -> asyncpg.Connection:
    # No statement cache: the keepalive is the only prepared statement, twice a minute.
    return await asyncpg.connect(
        asyncpg_dsn(database_url),
        statement_cache_size=0,
        server_settings={"application_name": name},
    )


async def _listen_once(
    database_url: str,
    channels: Mapping[str, Callable[[str], None]],
    on_connect: Callable[[], None],
    name: str,
) -> bool:
    """Listen until the connection is lost (True), or return False at once when it proves
    deaf: its own probe NOTIFY did not reach it."""
    conn = await _connect(database_url, name)
    lost = anyio.Event()

    def on_notify(_conn: Any, _pid: int, channel: str, payload: str) -> None:
        channels[channel](payload)

    conn.add_termination_listener(lambda _conn: lost.set())
    try:
        # The probe first, so that the LISTENs that matter are this session's last statements.
        # A connection lost during the probe proves nothing about NOTIFY: reconnect and probe
        # again (True), as for any lost connection.
        if not await _hears(conn, database_url, lost):
            return lost.is_set() or conn.is_closed()
        for channel in channels:
            await conn.add_listener(channel, on_notify)
        on_connect()
        while not conn.is_closed():
            with anyio.move_on_after(KEEPALIVE):
                await lost.wait()
                return True
            await conn.fetchval("SELECT 1")  # a dead peer shows up here, not in a quiet LISTEN
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pass
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await conn.close()
    return True


async def _hears(conn: asyncpg.Connection, database_url: str, lost: anyio.Event) -> bool:
    """Whether a NOTIFY sent from a second connection reaches `conn` within PROBE_TIMEOUT;
    False at once when `lost` is set (`conn` was closed) before it did.

    From a second connection, not `conn` itself: behind a transaction pooler `conn`'s own
    NOTIFY would run on the very server connection that holds its LISTEN and be delivered
    back to it, which proves nothing.
    """
    channel = f"sqlatasks_probe_{uuid.uuid4().hex}"
    heard = anyio.Event()
    answered = anyio.Event()
    """Set by the probe's NOTIFY, or by the connection's loss."""

    def on_probe(*_args: Any) -> None:
        heard.set()
        answered.set()

    await conn.add_listener(channel, on_probe)
    sender = await _connect(database_url, "sqlatasks LISTEN probe")
    try:
        await sender.execute(f"NOTIFY {channel}")  # a fresh hex name: no quoting needed
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await sender.close()

    async def on_loss() -> None:
        await lost.wait()
        answered.set()

    async with anyio.create_task_group() as watch:
        watch.start_soon(on_loss)
        with anyio.move_on_after(PROBE_TIMEOUT):
            await answered.wait()
        watch.cancel_scope.cancel()
    await conn.remove_listener(channel, on_probe)
    return heard.is_set()
