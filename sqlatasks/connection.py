"""One database connection held for the life of a loop, and replaced after an error.

Checking a connection out of SQLAlchemy's pool and back costs about as much as the statement
itself on the claim and ack path, so the dispatcher and the completer each keep theirs.
"""

from __future__ import annotations

import contextlib

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sqlatasks.sql import server


class HeldConnection:
    def __init__(self, engine: AsyncEngine, name: str) -> None:
        self._engine = engine
        self._name = name
        self._connection: AsyncConnection | None = None

    async def get(self) -> AsyncConnection:
        """The held connection, opened on first use or after `close()`."""
        if self._connection is None:
            connection = await self._engine.connect()
            try:
                await server.connection_name(connection, self._name)
            except BaseException:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await connection.close()
                raise
            self._connection = connection
        return self._connection

    async def close(self) -> None:
        """Close the held connection (after an error, or at the end); the next `get()` opens a
        fresh one."""
        connection, self._connection = self._connection, None
        if connection is not None:
            # It is broken already, most likely: closing it may fail, and the pool replaces it.
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(5),
                contextlib.suppress(SQLAlchemyError, OSError),
            ):
                await connection.close()
