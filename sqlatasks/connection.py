"""One database connection held for the life of a loop, and replaced after an error; and
the rule that every pool of the runner discards a connection after a connection-level or
server-state error (`errors.discards_connection`) instead of handing it out again.

Checking a connection out of SQLAlchemy's pool and back costs about as much as the statement
itself on the claim and ack path, so the dispatcher and the completer each keep theirs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import anyio
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sqlatasks import errors
from sqlatasks.sql import server


def discard_broken_connections(engine: AsyncEngine) -> AsyncEngine:
    """Make `engine`'s pool invalidate a connection (close it for good, and recycle the pool's
    other connections on their next checkout) whenever a statement fails with an error that
    `errors.discards_connection` names, as SQLAlchemy already does for a lost connection.

    Without it, a session opened while the server was read-only (a failover to a replica,
    `default_transaction_read_only`) goes back to the pool after its error and is handed out
    again for ever, long after the server is writable. Returns `engine`.
    """

    def on_error(context: ExceptionContext) -> None:
        if errors.discards_connection(context.original_exception):
            context.is_disconnect = True

    event.listen(engine.sync_engine, "handle_error", on_error)
    return engine


class HeldConnection:
    def __init__(
        self,
        engine: AsyncEngine,
        name: str,
        on_open: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    ) -> None:
        """`on_open(connection)`: run on each connection it opens (session settings)."""
        self._engine = engine
        self._name = name
        self._on_open = on_open
        self._connection: AsyncConnection | None = None

    async def get(self) -> AsyncConnection:
        """The held connection, opened on first use or after `close()`."""
        if self._connection is None:
            connection = await self._engine.connect()
            try:
                await server.connection_name(connection, self._name)
                if self._on_open is not None:
                    await self._on_open(connection)
            except BaseException:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await connection.close()
                raise
            self._connection = connection
        return self._connection

    async def close(self) -> None:
        """Discard the held connection (after an error, or at the end): it is invalidated, never
        returned to the pool, so the next `get()` opens a fresh session whatever state the old
        one was left in (read-only, mid-statement, cut off)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            # It is broken already, most likely: invalidating it may fail; it is gone anyway.
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(5),
                contextlib.suppress(SQLAlchemyError, OSError),
            ):
                await connection.invalidate()
                await connection.close()
