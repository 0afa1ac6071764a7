"""Schema, migrations and column types on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text, update
from sqlalchemy.exc import StatementError

from shared.db.migrate import alembic_config, downgrade, upgrade
from shared.db.models import Authority, Base, Event
from shared.db.session import Database, make_engine
from shared.db.types import utcnow

TABLES = {
    "authorities",
    "sites",
    "hosts",
    "issuance_requests",
    "certificates",
    "events",
    "api_tokens",
    "deliveries",
    "agent_enrollments",
}


def test_migrations_create_every_table(database: Database) -> None:
    inspector = inspect(database.engine)
    assert set(inspector.get_table_names()) >= TABLES
    with database.engine.connect() as conn:
        current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    head = ScriptDirectory.from_config(alembic_config(database.url)).get_current_head()
    assert current == head


def test_migrated_schema_matches_the_models(database: Database) -> None:
    """The migration and the models must not drift apart."""
    inspector = inspect(database.engine)
    for table in Base.metadata.sorted_tables:
        migrated = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert set(migrated) == set(table.columns.keys()), table.name
        for column in table.columns:
            assert migrated[column.name]["nullable"] == column.nullable, (
                f"{table.name}.{column.name}"
            )
        migrated_indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        assert {i.name for i in table.indexes} <= migrated_indexes, table.name


def test_upgrade_is_idempotent_and_downgrade_drops_tables(db_url: str) -> None:
    upgrade(db_url)  # already at head: a no-op
    downgrade(db_url, "base")
    engine = make_engine(db_url)
    try:
        assert not TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_utc_datetime_round_trips_aware_utc(database: Database) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    written = dt.datetime(2026, 11, 28, 14, 30, 15, 123456, tzinfo=plus_two)
    with database.session() as session:
        event = Event(at=written, kind="test.tz", actor="tests", data={"k": [1, "x"]})
        session.add(event)
        session.flush()
        event_id = event.id
    with database.sessions() as session:
        loaded = session.scalars(select(Event).where(Event.id == event_id)).one()
        assert loaded.at == written
        assert loaded.at.tzinfo is not None
        assert loaded.at.utcoffset() == dt.timedelta(0)
        assert loaded.at.hour == 12
        assert loaded.data == {"k": [1, "x"]}


def test_utc_datetime_refuses_naive_values(database: Database) -> None:
    with pytest.raises(StatementError, match="timezone-aware"), database.session() as session:
        session.add(Event(at=dt.datetime(2026, 11, 28, 12, 0), kind="x", actor="tests", data={}))
        session.flush()


def test_utcnow_is_aware() -> None:
    assert utcnow().utcoffset() == dt.timedelta(0)


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_database: Database) -> None:
    with sqlite_database.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_foreign_keys_are_enforced(database: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    from shared.db.models import Host

    with pytest.raises(IntegrityError), database.session() as session:
        session.add(Host(site_id=999999, name="orphan"))
        session.flush()


def test_session_rolls_back_on_error(database: Database) -> None:
    with pytest.raises(RuntimeError), database.session() as session:
        session.add(Event(at=utcnow(), kind="rolled.back", actor="tests", data={}))
        session.flush()
        raise RuntimeError("boom")
    with database.sessions() as session:
        assert session.scalars(select(Event).where(Event.kind == "rolled.back")).all() == []


def test_migrations_step_down_and_up_with_data_in_place(
    db_url: str, ca_passphrase: str, data_key: str
) -> None:
    """Rebuilding tables (SQLite batch mode) must keep rows that other rows reference."""
    from shared.clock import FixedClock
    from tests.factories import (
        FIXED_NOW,
        issue_certificate,
        make_host,
        make_root_authority,
        make_site,
    )

    clock = FixedClock(FIXED_NOW)
    db = Database(db_url)
    try:
        with db.session() as session:
            host_id = make_host(
                session, make_site(session, make_root_authority(session, ca_passphrase, clock))
            ).id
        issue_certificate(db, clock, host_id, ca_passphrase, data_key)
    finally:
        db.dispose()
    downgrade(db_url, "0002")
    upgrade(db_url)
    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM certificates")).scalar() == 1
            assert conn.execute(text("SELECT renewal_attempts FROM certificates")).scalar() == 0
            if conn.dialect.name == "sqlite":
                assert conn.execute(text("PRAGMA foreign_key_check")).fetchall() == []
    finally:
        db.dispose()


def test_migration_0010_gives_every_name_one_owner_and_shares_the_duplicates(
    db_url: str, ca_passphrase: str
) -> None:
    """Hosts that already carry the same name keep working: that name becomes shared."""
    from shared.clock import FixedClock
    from shared.db.models import HostName, SharedName
    from tests.factories import FIXED_NOW, make_root_authority, make_site

    db = Database(db_url)
    try:  # the site through today's models, before stepping down to 0009
        with db.session() as session:
            site = make_site(
                session, make_root_authority(session, ca_passphrase, FixedClock(FIXED_NOW))
            )
            site_id = site.id
    finally:
        db.dispose()
    downgrade(db_url, "0009")
    db = Database(db_url)
    try:
        with db.engine.begin() as conn:  # the hosts table as it was at 0009
            insert = text(
                "INSERT INTO hosts (site_id, name, dns_names, ip_addresses, roles, failover_for,"
                " platform, delivery, tls_endpoints, created_at, updated_at) VALUES (:s, :n,"
                " '[]', :ips, '[]', '[]', 'windows', :d, '[]', :t, :t)"
            )
            for name, ips in (
                ("rec01", '["10.1.0.50", "10.1.0.1"]'),
                ("rec02", '["10.1.0.50", "10.1.0.2"]'),
            ):
                conn.execute(
                    insert,
                    {
                        "s": site_id,
                        "n": name,
                        "ips": ips,
                        "t": FIXED_NOW,
                        "d": json.dumps(
                            {
                                "method": "directory",
                                "settings": {"path": "/srv/share", "layout": "flat"},
                            }
                        ),
                    },
                )
            ids = tuple(conn.execute(text("SELECT id FROM hosts ORDER BY name")).scalars())
    finally:
        db.dispose()
    upgrade(db_url)
    db = Database(db_url)
    try:
        with db.session() as session:
            owners = dict(session.execute(select(HostName.name, HostName.host_id)).all())
            shared = set(session.scalars(select(SharedName.name)))
    finally:
        db.dispose()
    assert shared == {"10.1.0.50"}
    assert owners["10.1.0.1"] == ids[0] and owners["10.1.0.2"] == ids[1]
    assert "10.1.0.50" not in owners
    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            directories = conn.execute(
                text("SELECT name, delivery_directory FROM hosts ORDER BY name")
            ).all()
    finally:
        db.dispose()
    assert directories == [("rec01", "/srv/share"), ("rec02", None)]  # the first keeps it
    downgrade(db_url, "0009")  # and back down cleanly
    upgrade(db_url)


def test_migration_0011_gives_every_authority_its_created_at_as_updated_at(
    db_url: str, ca_passphrase: str
) -> None:
    from shared.clock import FixedClock
    from tests.factories import FIXED_NOW, make_root_authority

    db = Database(db_url)
    try:
        with db.session() as session:
            authority_id = make_root_authority(session, ca_passphrase, FixedClock(FIXED_NOW)).id
    finally:
        db.dispose()
    downgrade(db_url, "0010")
    created = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    db = Database(db_url)
    try:
        with db.engine.begin() as conn:
            before_0011 = sa.table(
                "authorities", sa.column("created_at", Authority.created_at.type)
            )
            conn.execute(update(before_0011).values(created_at=created))
            columns = list(conn.execute(text("SELECT * FROM authorities")).keys())
            assert "updated_at" not in columns
    finally:
        db.dispose()
    upgrade(db_url)
    db = Database(db_url)
    try:
        with db.sessions() as session:
            assert session.get_one(Authority, authority_id).updated_at == created
    finally:
        db.dispose()
