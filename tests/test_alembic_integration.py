"""sqlatasks inside an application's own alembic history, and offline (`--sql`) scripts.

The application here is written as a user would write it, in tmp_path: its own models, its own
alembic directory whose env.py has the lines docs/integration.md gives, and the documented
revision calling `migrations.upgrade(...)`. Alembic runs as the user runs it, as a command.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from sqlatasks import migrations
from sqlatasks.models import Base

ROOT = Path(__file__).resolve().parent.parent  # this checkout (not an installed copy's)

MODELS = """
from sqlalchemy import Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
"""

# The async template of `alembic init -t async`, with the lines docs/integration.md adds.
ENV = """
import asyncio
import os

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from myapp.models import Base
from sqlatasks import migrations

FILTER = {filter}


def run(connection):
    context.configure(connection=connection, target_metadata=Base.metadata, **FILTER)
    with context.begin_transaction():
        context.run_migrations()


async def main():
    engine = create_async_engine(os.environ["MYAPP_DATABASE_URL"])
    async with engine.connect() as connection:
        await connection.run_sync(run)
        await connection.commit()
    await engine.dispose()


asyncio.run(main())
"""

FILTERS = {
    "include_name": '{"include_name": migrations.include_name}',
    # The application's own filter, combined with sqlatasks' one.
    "include_object": """{
    "include_object": lambda obj, name, type_, reflected, compare_to: (
        migrations.include_object(obj, name, type_, reflected, compare_to)
        and not (type_ == "table" and name.startswith("tmp_"))
    )
}""",
}

REVISIONS = {
    "0001_sqlatasks.py": """
from sqlatasks import migrations

revision = "0001"
down_revision = None


def upgrade():
    migrations.upgrade(version=migrations.LATEST)


def downgrade():
    migrations.downgrade(version=0)
""",
    "0002_customers.py": """
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
    )


def downgrade():
    op.drop_table("customers")
""",
}


def admin(server_url: str, *statements: str) -> None:
    """CREATE/DROP DATABASE, which cannot run in a transaction."""

    async def run() -> None:
        engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)
        await engine.dispose()

    asyncio.run(run())


@pytest.fixture
def empty_url(database_url: str) -> Iterator[str]:
    """A database with nothing in it (the `db_url` clones already hold the queue's tables)."""
    name = f"sqlatasks_empty_{os.getpid()}"
    admin(database_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    admin(database_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def write_app(root: Path, filter_source: str) -> None:
    (root / "myapp").mkdir()
    (root / "myapp" / "__init__.py").write_text("")
    (root / "myapp" / "models.py").write_text(MODELS)
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ENV.format(filter=filter_source))
    (root / "migrations" / "script.py.mako").write_text(
        (ROOT / "alembic" / "script.py.mako").read_text()
    )
    for name, source in REVISIONS.items():
        (versions / name).write_text(textwrap.dedent(source))
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")


def alembic_in(root: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m alembic ...` in the application's directory, with this sqlatasks."""
    path = os.pathsep.join([str(root), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=root,
        env={**os.environ, "MYAPP_DATABASE_URL": url, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def upgrade_body(script: str) -> list[str]:
    """The statements of a generated revision's upgrade(), without alembic's comments."""
    body = script.split("def upgrade() -> None:", 1)[1].split("\ndef downgrade", 1)[0]
    return [line.strip() for line in body.splitlines() if line.strip() and "#" not in line]


@pytest.mark.parametrize("filter_name", sorted(FILTERS))
def test_autogenerate_leaves_the_queue_alone(
    filter_name: str, empty_url: str, tmp_path: Path
) -> None:
    write_app(tmp_path, FILTERS[filter_name])
    upgraded = alembic_in(tmp_path, empty_url, "upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr

    generated = alembic_in(tmp_path, empty_url, "revision", "--autogenerate", "-m", "next")
    assert generated.returncode == 0, generated.stderr
    (script,) = [p for p in (tmp_path / "migrations" / "versions").glob("*next.py")]
    assert upgrade_body(script.read_text()) == ["pass"], script.read_text()
    assert "sqlatasks" not in generated.stderr  # alembic logs each detected change


def schema_diff(connection: Connection) -> list[Any]:
    """What alembic would change to make the database match sqlatasks' own models."""
    context = MigrationContext.configure(
        connection,
        opts={
            "include_name": lambda name, kind, _parent: (
                kind != "table" or name in Base.metadata.tables
            ),
            "compare_server_default": True,
        },
    )
    return list(compare_metadata(context, Base.metadata))


def apply_script(url: str, script: str) -> tuple[int, list[Any]]:
    """Run a SQL script (as psql would) on `url`; (schema version, diff against the models)."""

    async def run() -> tuple[int, list[Any]]:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(script)  # type: ignore[union-attr]
            version = await conn.run_sync(migrations.current_version)
            return version, await conn.run_sync(schema_diff)

    return asyncio.run(run())


def repository_alembic(*args: str) -> subprocess.CompletedProcess[str]:
    """The repository's own alembic environment, with no database to reach."""
    env = {k: v for k, v in os.environ.items() if k != "SQLATASKS_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_offline_upgrade_prints_every_step(empty_url: str) -> None:
    offline = repository_alembic("upgrade", "head", "--sql")
    assert offline.returncode == 0, offline.stderr
    for step in range(1, migrations.LATEST + 1):
        assert f"IS 'sqlatasks schema version {step}';" in offline.stdout
    assert offline.stdout.count("CREATE TABLE sqlatasks_tasks") == 1
    # The format() of the unique-key trigger, verbatim (a percent-style compile doubles %).
    assert "'SELECT id FROM %I.%I WHERE unique_key = $1 AND failed_at IS NULL'" in offline.stdout
    assert apply_script(empty_url, offline.stdout) == (migrations.LATEST, [])


def test_offline_upgrade_from_a_revision_is_refused_not_guessed() -> None:
    offline = repository_alembic("upgrade", "0001_sqlatasks_v1:head", "--sql")
    assert offline.returncode != 0
    assert "sqlatasks sql --from-version N" in offline.stderr
    assert "CREATE TABLE sqlatasks_tasks" not in offline.stdout
