"""sqlatasks schema version 9: the throughput rollup (sqlatasks_throughput).

Revision ID: 0009_sqlatasks_v9
Revises: 0008_sqlatasks_v8
Create Date: 2026-11-30
"""

from __future__ import annotations

from sqlatasks import migrations

revision = "0009_sqlatasks_v9"
down_revision = "0008_sqlatasks_v8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.upgrade(version=9)


def downgrade() -> None:
    migrations.downgrade(version=8)
