"""`wait_for`: wait until a task has finished, woken by NOTIFY, polling as the fallback.

In each process (and event loop), one LISTEN connection per database serves every waiter: it
opens with the first `wait_for` and closes when the last one returns. The finished-tasks table's
insert trigger notifies the ids of the tasks just kept, and the completer those it parked; a
waiter wakes when its id is named, and reads the task again. Whatever NOTIFY misses (the LISTEN
connection is down, a task finished unkept) the poll finds within `poll_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlatasks import listener, settings, status
from sqlatasks.models import FINISHED_CHANNEL
from sqlatasks.rows import FINAL_STATES, TaskInfo

log = logging.getLogger(__name__)

__all__ = ["wait_for"]


async def wait_for(
    engine: AsyncEngine,
    task_id: int,
    *,
    timeout: float,  # noqa: ASYNC109 - the documented API, as asyncio.wait_for
    poll_interval: float = 2.0,
) -> TaskInfo | None:
    """The task once it is no longer scheduled, queued or running: its `TaskInfo` when it
    completed or was cancelled and is kept, or is parked (`failed`); None when it is gone with
    nothing kept (or never existed, or its enqueue has not committed). TimeoutError after
    `timeout` seconds.

    TypeError if `engine` is not an AsyncEngine (a session cannot be shared with the waiting).

    Kept and parked tasks wake their waiters by NOTIFY, within milliseconds of their commit;
    the rest are seen by a read every `poll_interval` seconds. Each read is a short
    transaction of its own on `engine`.
    """
    if not isinstance(engine, AsyncEngine):
        raise TypeError(
            f"wait_for() takes an AsyncEngine (it listens on a connection of its own), not "
            f"{type(engine).__name__}; pass your session's engine: session.bind"
        )
    with anyio.fail_after(timeout):
        async with _waiting(engine, task_id) as waiter:
            while True:
                woken = waiter.arm()  # before the read: a NOTIFY during it is not lost
                async with engine.connect() as conn:
                    info = await status.read(conn, task_id)
                if info is None or info.state in FINAL_STATES:
                    return info
                with anyio.move_on_after(poll_interval):
                    await woken.wait()
    raise AssertionError("unreachable")  # fail_after raised, or the loop returned


class _Waiter:
    def __init__(self) -> None:
        self._event = anyio.Event()

    def arm(self) -> anyio.Event:
        self._event = anyio.Event()
        return self._event

    def wake(self) -> None:
        self._event.set()


class _Hub:
    """One LISTEN connection, and the waiters it wakes by task id."""

    def __init__(self, url: str) -> None:
        self.waiters: dict[int, set[_Waiter]] = {}
        channels = {FINISHED_CHANNEL: self._notified}
        self.task = asyncio.get_running_loop().create_task(
            listener.listen(url, channels, on_connect=self._wake_all, name="sqlatasks wait_for")
        )

    def _notified(self, payload: str) -> None:
        for part in payload.split(","):
            for waiter in self.waiters.get(int(part), ()) if part.isdigit() else ():
                waiter.wake()

    def _wake_all(self) -> None:
        """(Re)connected: whatever finished meanwhile was not heard; read again."""
        for waiters in self.waiters.values():
            for waiter in waiters:
                waiter.wake()


# Per event loop, per database URL: a hub's connection belongs to the loop that opened it.
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Hub]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def _waiting(engine: AsyncEngine, task_id: int) -> AsyncIterator[_Waiter]:
    url = settings.database_url(engine.url.render_as_string(hide_password=False))
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    hub = hubs.get(url)
    if hub is None:
        hub = hubs[url] = _Hub(url)
    waiter = _Waiter()
    hub.waiters.setdefault(task_id, set()).add(waiter)
    try:
        yield waiter
    finally:
        same = hub.waiters[task_id]
        same.discard(waiter)
        if not same:
            del hub.waiters[task_id]
        if not hub.waiters:  # the last waiter: close the connection
            del hubs[url]
            hub.task.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await asyncio.wait([hub.task])
