"""host_names, shared_names, hosts.delivery_directory and campaigns.site_id: every name and
every directory target's directory belongs to one host (a name unless an admin shares it), and
a campaign confined to one site says which

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 14:00:00

Existing hosts' names are copied into host_names. A name that two hosts already carry is
recorded as shared (by 'migration 0010'), so that an existing fleet keeps working; an admin
can unshare it once only one host carries it.
"""
from __future__ import annotations

import datetime as dt
import json
import posixpath

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _names(value: object) -> list[str]:
    if isinstance(value, str):
        value = json.loads(value or '[]')
    return [str(v) for v in value] if isinstance(value, list) else []


def upgrade() -> None:
    op.create_table(
        'shared_names',
        sa.Column('name', sa.String(length=253), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'host_names',
        sa.Column('name', sa.String(length=253), nullable=False),
        sa.Column('host_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_index('ix_host_names_host_id', 'host_names', ['host_id'])
    with op.batch_alter_table('campaigns') as batch:
        batch.add_column(sa.Column('site_id', sa.Integer(), nullable=True))
        batch.create_index('ix_campaigns_site_id', ['site_id'])
    with op.batch_alter_table('hosts') as batch:
        batch.add_column(sa.Column('delivery_directory', sa.String(length=1100), nullable=True))
        batch.create_unique_constraint('uq_hosts_delivery_directory', ['delivery_directory'])

    bind = op.get_bind()
    owners: dict[str, set[int]] = {}
    for host_id, dns, ips in bind.execute(sa.text('SELECT id, dns_names, ip_addresses FROM hosts')):
        for name in [*_names(dns), *_names(ips)]:
            owners.setdefault(name, set()).add(host_id)
    now = dt.datetime.now(dt.UTC)
    shared = sorted(n for n, ids in owners.items() if len(ids) > 1)
    if shared:
        bind.execute(
            sa.text('INSERT INTO shared_names (name, created_by, created_at) VALUES (:n, :b, :t)'),
            [{'n': n, 'b': 'migration 0010', 't': now} for n in shared],
        )
    single = [{'n': n, 'h': next(iter(ids))} for n, ids in owners.items() if len(ids) == 1]
    if single:
        bind.execute(sa.text('INSERT INTO host_names (name, host_id) VALUES (:n, :h)'), single)

    # Each directory target's directory, for the first host that writes there (a later one
    # keeps delivering, and is refused only when next saved).
    taken: set[str] = set()
    for host_id, name, delivery in bind.execute(sa.text('SELECT id, name, delivery FROM hosts')):
        if isinstance(delivery, str):
            delivery = json.loads(delivery or '{}')
        if not isinstance(delivery, dict) or delivery.get('method') != 'directory':
            continue
        settings = delivery.get('settings') or {}
        path = posixpath.normpath(str(settings.get('path', '')))
        where = path if settings.get('layout', 'host') == 'flat' else posixpath.join(path, name)
        if where not in taken:
            taken.add(where)
            bind.execute(
                sa.text('UPDATE hosts SET delivery_directory = :d WHERE id = :h'),
                {'d': where, 'h': host_id},
            )
    sites: dict[str, int] = {n: i for n, i in bind.execute(sa.text('SELECT name, id FROM sites'))}
    for campaign_id, selector in bind.execute(sa.text('SELECT id, selector FROM campaigns')):
        if isinstance(selector, str):
            selector = json.loads(selector or '{}')
        names = (selector or {}).get('sites') or []
        if len(names) == 1 and names[0] in sites:
            bind.execute(
                sa.text('UPDATE campaigns SET site_id = :s WHERE id = :c'),
                {'s': sites[names[0]], 'c': campaign_id},
            )


def downgrade() -> None:
    with op.batch_alter_table('hosts') as batch:
        batch.drop_constraint('uq_hosts_delivery_directory', type_='unique')
        batch.drop_column('delivery_directory')
    with op.batch_alter_table('campaigns') as batch:
        batch.drop_index('ix_campaigns_site_id')
        batch.drop_column('site_id')
    op.drop_index('ix_host_names_host_id', table_name='host_names')
    op.drop_table('host_names')
    op.drop_table('shared_names')
