"""authorities.updated_at: when an authority last changed state, so the sweep can tell a
pending authority whose creation message was lost, and one stuck in `generating` because
its worker died, from one being made right now

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 22:00:00

Existing authorities take their created_at.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('authorities') as batch:
        batch.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
    op.execute('UPDATE authorities SET updated_at = created_at')
    with op.batch_alter_table('authorities') as batch:
        batch.alter_column('updated_at', existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('authorities') as batch:
        batch.drop_column('updated_at')
