"""Which kind of session the caller gave: async (`AsyncSession`) or synchronous (`Session`).

`enqueue()` and `enqueue_many()` take either kind. Every other function that takes a session
is a coroutine function; given a synchronous session it would return a coroutine that nobody
awaits and do nothing, silently. `async_only` makes it raise TypeError at the call instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, scoped_session

P = ParamSpec("P")
R = TypeVar("R")

SYNC_KINDS = (Session, scoped_session, Connection)


def is_sync(session: object) -> bool:
    """Whether `session` is a synchronous SQLAlchemy session (or scoped session, connection)."""
    return isinstance(session, SYNC_KINDS)


def async_only(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """`fn`, refusing a synchronous session as its first argument with a TypeError that says
    what to use instead, before any coroutine exists."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        session = args[0] if args else kwargs.get("session")
        if is_sync(session):
            raise TypeError(
                f"{fn.__module__}.{fn.__name__}() is async: it needs an AsyncSession and an "
                f"await, not a synchronous {type(session).__name__}. Open an AsyncSession "
                "(create_async_engine, async_sessionmaker) for it; of the API, only enqueue() "
                "and enqueue_many() also take a synchronous Session."
            )
        return fn(*args, **kwargs)

    return call
