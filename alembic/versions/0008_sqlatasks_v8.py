"""sqlatasks schema version 8: the trace context column.

Revision ID: 0008_sqlatasks_v8
Revises: 0007_sqlatasks_v7
Create Date: 2026-12-08
"""

from __future__ import annotations

from sqlatasks import migrations

revision = "0008_sqlatasks_v8"
down_revision = "0007_sqlatasks_v7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.upgrade(version=8)


def downgrade() -> None:
    migrations.downgrade(version=7)
