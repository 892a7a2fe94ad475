"""sqlatasks schema version 2: unique keys.

Revision ID: 0002_sqlatasks_v2
Revises: 0001_sqlatasks_v1
Create Date: 2026-11-28
"""

from __future__ import annotations

from sqlatasks import migrations

revision = "0002_sqlatasks_v2"
down_revision = "0001_sqlatasks_v1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.upgrade(version=2)


def downgrade() -> None:
    migrations.downgrade(version=1)
