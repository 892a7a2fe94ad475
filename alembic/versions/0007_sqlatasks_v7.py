"""sqlatasks schema version 7: the progress columns.

Revision ID: 0007_sqlatasks_v7
Revises: 0006_sqlatasks_v6
Create Date: 2026-12-08
"""

from __future__ import annotations

from sqlatasks import migrations

revision = "0007_sqlatasks_v7"
down_revision = "0006_sqlatasks_v6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.upgrade(version=7)


def downgrade() -> None:
    migrations.downgrade(version=6)
