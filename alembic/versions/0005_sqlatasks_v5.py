"""sqlatasks schema version 5: kept finished tasks (sqlatasks_finished).

Revision ID: 0005_sqlatasks_v5
Revises: 0003_sqlatasks_v3
Create Date: 2026-12-01
"""

from __future__ import annotations

from sqlatasks import migrations

revision = "0005_sqlatasks_v5"
# Version 4 is being built on another branch: until it lands, this revision applies the empty
# placeholder v4 with v5 (migrations.upgrade applies every missing step in order).
down_revision = "0003_sqlatasks_v3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.upgrade(version=5)


def downgrade() -> None:
    migrations.downgrade(version=3)
