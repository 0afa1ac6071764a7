"""campaigns.rate_per_minute may be null: an unthrottled campaign

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 02:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.alter_column('rate_per_minute', existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE campaigns SET rate_per_minute = 10000 WHERE rate_per_minute IS NULL")
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.alter_column('rate_per_minute', existing_type=sa.Integer(), nullable=False)
