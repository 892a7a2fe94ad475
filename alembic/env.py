"""Alembic environment for sqlatasks' own history.

The database comes from, in order: a connection handed in as `config.attributes["connection"]`
(tests and applications that run migrations from code, inside a running event loop), the
`sqlalchemy.url` option, or SQLATASKS_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from sqlatasks import migrations, settings
from sqlatasks.models import SCHEMA, Base

config = context.config
VERSION_TABLE = "sqlatasks_alembic_version"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        version_table_schema=SCHEMA,
        # Only our own objects: the database may hold the application's tables too.
        include_name=lambda name, kind, _parent: kind != "table" or name in migrations.TABLES,
        include_schemas=SCHEMA is not None,
    )
    _migrate()


def _migrate() -> None:
    with context.begin_transaction():
        if SCHEMA is not None:
            # Before alembic creates its version table there (SQLATASKS_SCHEMA).
            context.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
        context.run_migrations()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("SQLATASKS_DATABASE_URL")
    if not url:
        raise SystemExit("alembic: set SQLATASKS_DATABASE_URL to the database to migrate")
    return settings.database_url(url)


async def _run_async() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


given = config.attributes.get("connection")
if given is not None:
    _run(given)
elif context.is_offline_mode():
    # `alembic upgrade head --sql`: the SQL script, for a database this need not reach.
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("SQLATASKS_DATABASE_URL")
    context.configure(
        url=settings.database_url(url) if url else None,
        dialect_name=None if url else "postgresql",
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        version_table_schema=SCHEMA,
    )
    _migrate()
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(_run_async())
