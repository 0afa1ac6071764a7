"""task_runs and task_durations: how the workers' tasks fare, for /metrics

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 05:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'task_runs',
        sa.Column('task', sa.String(length=100), nullable=False),
        sa.Column('successes', sa.Integer(), nullable=False),
        sa.Column('retries', sa.Integer(), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('seconds_total', sa.Float(), nullable=False),
        sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_failure_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('task'),
    )
    op.create_table(
        'task_durations',
        sa.Column('task', sa.String(length=100), nullable=False),
        sa.Column('le', sa.String(length=16), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('task', 'le'),
    )


def downgrade() -> None:
    op.drop_table('task_durations')
    op.drop_table('task_runs')
