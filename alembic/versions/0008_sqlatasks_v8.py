"""PLACEHOLDER for sqlatasks schema version 8 (branch obs's; replace at merge).

Revision ID: 0008_sqlatasks_v8
Revises: 0007_sqlatasks_v7
Create Date: 2026-11-30
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
