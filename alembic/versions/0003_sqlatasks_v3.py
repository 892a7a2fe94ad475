"""sqlatasks schema version 3: periodic schedules (sqlatasks_periodic).

Revision ID: 0003_sqlatasks_v3
Revises: 0002_sqlatasks_v2
Create Date: 2026-11-28
"""

from __future__ import annotations

from sqlatasks import migrations

revision = "0003_sqlatasks_v3"
down_revision = "0002_sqlatasks_v2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.upgrade(version=3)


def downgrade() -> None:
    migrations.downgrade(version=2)
