"""sqlatasks schema version 5: flow control (concurrency keys, sqlatasks_queues).

Revision ID: 0005_sqlatasks_v5
Revises: 0004_sqlatasks_v4
Create Date: 2026-11-29
"""

from __future__ import annotations

from sqlatasks import migrations

revision = "0005_sqlatasks_v5"
down_revision = "0004_sqlatasks_v4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.upgrade(version=5)


def downgrade() -> None:
    migrations.downgrade(version=4)
