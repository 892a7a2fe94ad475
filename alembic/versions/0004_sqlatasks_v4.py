"""sqlatasks schema version 4: flow control (concurrency keys, sqlatasks_queues).

Revision ID: 0004_sqlatasks_v4
Revises: 0003_sqlatasks_v3
Create Date: 2026-11-28
"""

from __future__ import annotations

from sqlatasks import migrations

revision = "0004_sqlatasks_v4"
down_revision = "0003_sqlatasks_v3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrations.upgrade(version=4)


def downgrade() -> None:
    migrations.downgrade(version=3)
