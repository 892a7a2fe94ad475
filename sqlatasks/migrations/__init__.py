"""The queue table's DDL, frozen per schema version and callable from any alembic revision.

An application with its own alembic history adds one revision that calls `upgrade(version=6)`
(and `downgrade(version=0)` on the way down), and one per later version (`upgrade(version=7)`,
`downgrade(version=6)`); each version is a numbered module, applied in order. The applied
version is recorded in the table's comment, so `upgrade()` skips what is already there.

    from sqlatasks import migrations

    def upgrade() -> None:
        migrations.upgrade(version=6)

    def downgrade() -> None:
        migrations.downgrade(version=0)

Its env.py passes `include_name=migrations.include_name` to `context.configure(...)`, so that
`alembic revision --autogenerate` never proposes to drop sqlatasks' tables. Applications
without alembic run `sqlatasks migrate` (`run()` here); `sqlatasks sql` prints the DDL (`ddl()`).

With a schema set (SQLATASKS_SCHEMA, sqlatasks.models.SCHEMA) the steps, frozen as unqualified
DDL, run with `search_path` set to that schema alone, after `CREATE SCHEMA IF NOT EXISTS`; the
caller's `search_path` is restored after them (a failed step's transaction rolls the change back
with it). Functions that name tables then get the schema as their own `search_path`, so that a
caller with any `search_path` reaches the right tables. Without one, the steps are exactly those
of earlier releases.

Offline (`alembic upgrade head --sql`) there is no database to read the version from: the script
assumes version 0 where it starts, and each revision emits the steps from the version the
previous one reached. A script that starts at a revision (`upgrade rev:head --sql`) is refused,
since the version there is unknown; `downgrade --sql` assumes the latest version where it starts.
"""

from __future__ import annotations

import importlib
import io
import weakref
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import quoted_name

from alembic import op
from sqlatasks.models import SCHEMA, TABLE_NAME, Base, schema_version
from sqlatasks.models import SCHEMA_COMMENT_PREFIX as COMMENT_PREFIX
from sqlatasks.models import SCHEMA_VERSION as LATEST

__all__ = [
    "LATEST",
    "TABLES",
    "current_version",
    "ddl",
    "downgrade",
    "include_name",
    "include_object",
    "run",
    "upgrade",
]

TABLES = frozenset({*(t.name for t in Base.metadata.tables.values()), "sqlatasks_alembic_version"})
"""Every table sqlatasks creates (with the version table of its own alembic history)."""

# Offline, the version each migration context's script has reached so far.
_offline_versions: weakref.WeakKeyDictionary[MigrationContext, int] = weakref.WeakKeyDictionary()
# Any fixed key: two `sqlatasks migrate` at once (two app instances starting) take turns.
_MIGRATE_LOCK = 0x5A7A_7A5C


def upgrade(version: int = LATEST) -> None:
    """Bring the queue table up to `version`, applying each missing step in order."""
    _check(version)
    start = _version_now(default=None)
    steps = range(start + 1, version + 1)
    _apply(_enter_schema() if steps else ())
    for step in steps:
        _apply(_module(step).UP)
        _apply([f"COMMENT ON TABLE {TABLE_NAME} IS '{COMMENT_PREFIX}{step}'"])
    _apply(_leave_schema(pin_functions=True) if steps else ())
    _reached(max(start, version))


def downgrade(version: int = 0) -> None:
    """Take the queue table down to `version` (0 removes it), undoing each step in order."""
    _check(version)
    start = _version_now(default=LATEST)
    steps = range(start, version, -1)
    _apply(_enter_schema() if steps else ())
    for step in steps:
        _apply(_module(step).DOWN)
        if step > 1:
            _apply([f"COMMENT ON TABLE {TABLE_NAME} IS '{COMMENT_PREFIX}{step - 1}'"])
    _apply(_leave_schema(pin_functions=False) if steps else ())
    _reached(min(start, version))


def current_version(connection: Connection | None = None) -> int:
    """The schema version recorded on the table; 0 when there is no table.

    On `connection`, or by default on alembic's (`op`) inside a migration.
    """
    bind = connection if connection is not None else op.get_bind()
    comment = bind.exec_driver_sql(
        f"SELECT obj_description(to_regclass('{TABLE_NAME}'), 'pg_class')"
    ).scalar()
    return schema_version(comment)


def run(connection: Connection, version: int = LATEST) -> tuple[int, int]:
    """Upgrade the database of `connection` to `version`, in its transaction; (before, after).

    For applications without alembic (`sqlatasks migrate`): the same steps as the revisions,
    through alembic's `op` on a MigrationContext. Concurrent calls wait for each other (an
    advisory lock held to the end of the transaction), so the second finds the work done.
    Never downgrades: a database already past `version` is left as it is.
    """
    _check(version)
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATE_LOCK})")
    before = current_version(connection)
    with Operations.context(MigrationContext.configure(connection)):
        upgrade(version)
    return before, max(before, version)


def ddl(version: int = LATEST, *, from_version: int = 0) -> str:
    """The SQL that takes a database from `from_version` to `version` in one transaction, each
    statement ending in `;`: what `sqlatasks sql` prints, for psql or a DBA."""
    _check(from_version)
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer}
    )
    _offline_versions[context] = from_version
    with Operations.context(context):
        # One transaction: the script applies whole or not at all.
        context.impl.static_output("BEGIN;")
        upgrade(version)
        context.impl.static_output("COMMIT;")
    return buffer.getvalue()


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """For `context.configure(include_name=...)`: False for sqlatasks' tables, so autogenerate
    neither reflects nor compares them (nor their columns, indexes and triggers)."""
    return not (type_ == "table" and name is not None and str(name) in TABLES)


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """For `context.configure(include_object=...)`: False for sqlatasks' tables and anything on
    them (columns, indexes, constraints). Combine with the application's own filter with
    `and`; `include_name` does the same earlier, without reflecting the tables at all."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    table_name: str | quoted_name | None = getattr(table, "name", None)
    return table_name is None or str(table_name) not in TABLES


def _enter_schema() -> list[str]:
    """Statements that make the unqualified steps act in SCHEMA (none without one)."""
    if SCHEMA is None:
        return []
    return [
        f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"',
        # Kept in a setting of our own, not in Python: an offline script must restore it too.
        "SELECT set_config('sqlatasks.search_path', current_setting('search_path'), false)",
        # The schema alone: no step can create anything in, or find anything of, another.
        f'SET search_path TO "{SCHEMA}"',
    ]


def _leave_schema(*, pin_functions: bool) -> list[str]:
    """Back to the caller's search_path; after an upgrade, every sqlatasks function in SCHEMA
    without a search_path of its own gets one, so that a caller whose search_path lacks the
    schema (the application's sessions, the runner) still finds the tables they name."""
    if SCHEMA is None:
        return []
    pin = f"""
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc AS p
             WHERE p.pronamespace = '"{SCHEMA}"'::regnamespace
               AND p.proname LIKE 'sqlatasks\\_%' AND p.proconfig IS NULL
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       f, '{SCHEMA}');
    END LOOP;
END;
$$"""
    restore = "SELECT set_config('search_path', current_setting('sqlatasks.search_path'), false)"
    return [pin, restore] if pin_functions else [restore]


def _version_now(*, default: int | None) -> int:
    """The version now: the database's, or offline the one this script has reached, else
    `default` (None: 0, unless the script starts at a revision, where the version is unknown)."""
    context = op.get_context()
    if not context.as_sql:
        return current_version()
    if context in _offline_versions:
        return _offline_versions[context]
    if default is not None:
        return default
    environment = context.environment_context
    if environment is not None and environment.get_starting_revision_argument() is not None:
        raise ValueError(
            "sqlatasks cannot tell its schema version at an alembic revision in offline (--sql) "
            "mode: start the script at the beginning of the history, or print the steps "
            "with `sqlatasks sql --from-version N`"
        )
    return 0


def _reached(version: int) -> None:
    context = op.get_context()
    if context.as_sql:
        _offline_versions[context] = version


def _check(version: int) -> None:
    if not 0 <= version <= LATEST:
        raise ValueError(f"sqlatasks schema versions run from 0 to {LATEST}, not {version}")


def _apply(statements: Sequence[str]) -> None:
    context = op.get_context()
    for statement in statements:
        if context.as_sql:
            # Verbatim: compiling the text would double the `%` of format() in the functions
            # for percent-style drivers, and could read `:name` as a bind parameter.
            context.impl.static_output(statement.strip() + context.impl.command_terminator)
        else:
            # One statement each: asyncpg prepares every statement, and one prepared
            # statement holds one.
            op.execute(statement)


def _module(step: int) -> ModuleType:
    return importlib.import_module(f"sqlatasks.migrations.v{step}")
