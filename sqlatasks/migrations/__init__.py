"""The queue table's DDL, frozen per schema version and callable from any alembic revision.

An application with its own alembic history adds one revision that calls `upgrade(version=1)`
(and `downgrade(version=0)` on the way down), and one per later version (`upgrade(version=2)`,
`downgrade(version=1)`); each version is a numbered module, applied in order. The applied
version is recorded in the table's comment, so `upgrade()` skips what is already there.

    from sqlatasks import migrations

    def upgrade() -> None:
        migrations.upgrade(version=1)

    def downgrade() -> None:
        migrations.downgrade(version=0)
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

from alembic import op
from sqlatasks.models import SCHEMA_COMMENT_PREFIX as COMMENT_PREFIX
from sqlatasks.models import SCHEMA_VERSION as LATEST
from sqlatasks.models import TABLE_NAME, schema_version


def upgrade(version: int = LATEST) -> None:
    """Bring the queue table up to `version`, applying each missing step in order."""
    _check(version)
    for step in range(current_version() + 1, version + 1):
        _apply(_module(step).UP)
        op.execute(f"COMMENT ON TABLE {TABLE_NAME} IS '{COMMENT_PREFIX}{step}'")


def downgrade(version: int = 0) -> None:
    """Take the queue table down to `version` (0 removes it), undoing each step in order."""
    _check(version)
    for step in range(current_version(), version, -1):
        _apply(_module(step).DOWN)
        if step > 1:
            op.execute(f"COMMENT ON TABLE {TABLE_NAME} IS '{COMMENT_PREFIX}{step - 1}'")


def current_version() -> int:
    """The schema version recorded on the table; 0 when there is no table."""
    comment = (
        op.get_bind()
        .exec_driver_sql(f"SELECT obj_description(to_regclass('{TABLE_NAME}'), 'pg_class')")
        .scalar()
    )
    return schema_version(comment)


def _check(version: int) -> None:
    if not 0 <= version <= LATEST:
        raise ValueError(f"sqlatasks schema versions run from 0 to {LATEST}, not {version}")


def _apply(statements: Sequence[str]) -> None:
    # One statement each: asyncpg prepares every statement, and a prepared statement holds one.
    for statement in statements:
        op.execute(statement)


def _module(step: int) -> ModuleType:
    return importlib.import_module(f"sqlatasks.migrations.v{step}")
