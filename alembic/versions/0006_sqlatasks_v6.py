"""sqlatasks schema version 6: the parked-tasks index.

Revision ID: 0006_sqlatasks_v6
Revises: 0005_sqlatasks_v5
Create Date: 2026-12-01
"""

from __future__ import annotations

from sqlatasks import migrations

revision = "0006_sqlatasks_v6"
down_revision = "0005_sqlatasks_v5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.upgrade(version=6)


def downgrade() -> None:
    migrations.downgrade(version=5)
