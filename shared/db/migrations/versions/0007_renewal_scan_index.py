"""renewal scan index: (status, renewal_due_at, id) instead of renewal_due_at alone

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 02:27:00
"""
from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_renewal_due_at'))
        batch_op.create_index(
            'ix_certificates_status_renewal_due', ['status', 'renewal_due_at', 'id'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index('ix_certificates_status_renewal_due')
        batch_op.create_index(
            batch_op.f('ix_certificates_renewal_due_at'), ['renewal_due_at'], unique=False
        )
