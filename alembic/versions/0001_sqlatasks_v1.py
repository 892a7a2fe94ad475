"""sqlatasks schema version 1: the queue table.

Revision ID: 0001_sqlatasks_v1
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from sqlatasks import migrations

revision = "0001_sqlatasks_v1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.upgrade(version=1)


def downgrade() -> None:
    migrations.downgrade(version=0)
