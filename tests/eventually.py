"""`eventually`: the one way a test waits for something another process or connection does."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import anyio

T = TypeVar("T")

POLL = 0.05
"""Default seconds between two looks: short, since most looks are cheap (a file, one query)."""


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], object] = bool,
    *,
    what: str,
    timeout: float = 60.0,
    interval: float = POLL,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    until: Callable[[T], object] = bool,
    *,
    what: str,
    timeout: float = 60.0,
    interval: float = POLL,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    until: Callable[[Any], object] = bool,
    *,
    what: str,
    timeout: float = 60.0,
    interval: float = POLL,
) -> Any:
    """Look at `probe()` (sync or async) until `until(value)` holds; return that value.

    `timeout` is an anti-hang bound, never a measurement: make it generous. When it passes,
    the AssertionError says what the test waited for and the last value it saw. An exception
    from `probe` (a runner that exited, say) ends the wait at once.
    """
    last: Any = "<never looked>"
    with anyio.move_on_after(timeout):
        while True:
            last = probe()
            if inspect.isawaitable(last):
                last = await last
            if until(last):
                return last
            await anyio.sleep(interval)
    raise AssertionError(f"waited {timeout:g} s for {what}; last value seen: {last!r}")
