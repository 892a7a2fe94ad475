"""A command pointed at a schema (or a database) without the queue's tables says the table is
missing and to check --schema, not "schema version 0 ... run `sqlatasks migrate`".

Found by a cold review: `sqlatasks --schema jobz status` (a typo for jobs) told the operator to
run `sqlatasks migrate`, which would create a second, empty queue in "jobz".
"""

from __future__ import annotations

import pytest

from tests.test_commands import cli


@pytest.mark.slow
def test_a_mistyped_schema_is_named_not_migrated(db_url: str) -> None:
    done = cli("--schema", "jobz", "status", url=db_url)
    assert done.returncode == 1, done
    assert done.stderr == (
        'python -m sqlatasks: the queue table "jobz".sqlatasks_tasks does not exist: check '
        "--schema (SQLATASKS_SCHEMA), or run `sqlatasks migrate` (or `alembic upgrade head`, "
        "with your alembic history)\n"
    )
    assert cli("status", url=db_url).returncode == 0  # the default schema has the tables
