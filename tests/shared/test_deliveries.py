"""The delivery lifecycle on both databases: planning is idempotent, claims are exclusive,
retries back off within hours, and a probe judges what the host really presents."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from shared import deliveries
from shared.clock import FixedClock
from shared.db.models import Certificate, Delivery, Event, Host
from shared.db.session import Database
from tests.factories import (
    issue_certificate,
    make_host,
    make_root_authority,
    make_site,
)


@dataclass(frozen=True)
class World:
    host_id: int
    certificate_id: int
    fingerprint: str


@pytest.fixture
def world(database: Database, clock: FixedClock, ca_passphrase: str, data_key: str) -> World:
    with database.session() as session:
        root = make_root_authority(session, ca_passphrase, clock)
        host = make_host(session, make_site(session, root), name="rec01")
        host.delivery = {"method": "directory", "settings": {"path": "/srv/certs"}}
        host.tls_endpoints = ["127.0.0.1:7563"]
        host_id = host.id
    certificate_id = issue_certificate(database, clock, host_id, ca_passphrase, data_key)
    with database.sessions() as session:
        fingerprint = session.get(Certificate, certificate_id).fingerprint  # type: ignore[union-attr]
    return World(host_id, certificate_id, fingerprint)


def delivery(database: Database, delivery_id: int) -> Delivery:
    with database.sessions() as session:
        row = session.scalar(select(Delivery).where(Delivery.id == delivery_id))
        assert row is not None
        return row


def test_planning_is_idempotent_and_skips_hosts_without_a_method(
    database: Database, world: World, clock: FixedClock
) -> None:
    with database.session() as session:
        first = deliveries.plan_certificates(session, [world.certificate_id], clock.now())
        again = deliveries.plan_certificates(session, [world.certificate_id], clock.now())
    assert len(first) == 1 and again == []
    with database.session() as session:
        host = session.get(Host, world.host_id)
        assert host is not None
        host.delivery = {"method": "none"}
    with database.session() as session:
        assert deliveries.plan_certificates(session, [world.certificate_id], clock.now()) == []
        count = len(session.scalars(select(Delivery)).all())
    assert count == 1


def test_claim_is_exclusive_and_respects_the_schedule(
    database: Database, world: World, clock: FixedClock
) -> None:
    with database.session() as session:
        [delivery_id] = deliveries.plan_certificates(session, [world.certificate_id], clock.now())
    with database.session() as session:
        assert deliveries.claim(session, delivery_id, clock.now()) is True
    with database.session() as session:
        assert deliveries.claim(session, delivery_id, clock.now()) is False  # leased
    clock.advance(deliveries.CLAIM_LEASE + dt.timedelta(seconds=1))
    with database.session() as session:
        assert deliveries.claim(session, delivery_id, clock.now()) is True  # lease expired
        row = session.get(Delivery, delivery_id)
        assert row is not None
        wait = deliveries.mark_attempt_failed(
            session, row, "connection refused", retryable=True, actor="test", now=clock.now()
        )
    assert wait == deliveries.backoff(2)
    with database.session() as session:
        assert deliveries.claim(session, delivery_id, clock.now()) is False  # not due yet
    clock.advance(wait)
    with database.session() as session:
        assert deliveries.claim(session, delivery_id, clock.now()) is True
    assert delivery(database, delivery_id).attempts == 3


def test_retries_are_bounded_and_backoff_stays_within_the_hour(
    database: Database, world: World, clock: FixedClock
) -> None:
    assert [deliveries.backoff(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert deliveries.backoff(50) == dt.timedelta(hours=1)
    with database.session() as session:
        [delivery_id] = deliveries.plan_certificates(session, [world.certificate_id], clock.now())
    waits = []
    for _ in range(deliveries.MAX_ATTEMPTS):
        clock.advance(dt.timedelta(hours=2))
        with database.session() as session:
            assert deliveries.claim(session, delivery_id, clock.now())
            row = session.get(Delivery, delivery_id)
            assert row is not None
            waits.append(
                deliveries.mark_attempt_failed(
                    session, row, "timed out", retryable=True, actor="test", now=clock.now()
                )
            )
    assert waits[-1] is None and all(w is not None for w in waits[:-1])
    final = delivery(database, delivery_id)
    assert final.status == "failed" and final.last_error == "timed out"
    with database.sessions() as session:
        kinds = session.scalars(select(Event.kind).where(Event.subject_id == delivery_id)).all()
    assert kinds.count("delivery.retrying") == deliveries.MAX_ATTEMPTS - 1
    assert "delivery.failed" in kinds


def test_probe_verdicts(database: Database, world: World, clock: FixedClock) -> None:
    with database.session() as session:
        [delivery_id] = deliveries.plan_certificates(session, [world.certificate_id], clock.now())
        row = session.get(Delivery, delivery_id)
        assert row is not None
        deliveries.mark_delivered(session, row, installed=True, actor="test", now=clock.now())
    with database.session() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        wait = deliveries.record_probe(session, row, {"a:1": "f" * 64}, clock.now())
        assert wait is not None
        assert (row.status, row.probe_state) == ("installed", "mismatch")
        assert row.last_error is not None and row.last_error.startswith("renewed but not bound")
        deliveries.record_probe(session, row, {"a:1": None}, clock.now())
        assert row.probe_state == "unreachable"
        assert (
            deliveries.record_probe(session, row, {"a:1": world.fingerprint}, clock.now()) is None
        )
        assert (row.status, row.probe_state, row.last_error) == ("verified", "match", None)


def test_superseded_certificate_is_stale(
    database: Database, world: World, clock: FixedClock, ca_passphrase: str, data_key: str
) -> None:
    with database.session() as session:
        [delivery_id] = deliveries.plan_certificates(session, [world.certificate_id], clock.now())
    issue_certificate(database, clock, world.host_id, ca_passphrase, data_key)
    with database.sessions() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        assert "superseded" in (deliveries.stale_reason(row) or "")


def test_a_revoked_certificate_is_never_pushed(
    database: Database, world: World, clock: FixedClock
) -> None:
    with database.session() as session:
        [delivery_id] = deliveries.plan_certificates(session, [world.certificate_id], clock.now())
        row = session.get_one(Delivery, delivery_id)
        assert deliveries.stale_reason(row) is None
        row.certificate.status = "revoked"
        assert deliveries.stale_reason(row) == "the certificate is revoked: it is not delivered"


def test_probe_backoff_starts_from_its_own_base() -> None:
    base = dt.timedelta(seconds=2)
    assert [deliveries.probe_backoff(n, base).total_seconds() for n in (1, 2, 3)] == [2, 4, 8]
    assert deliveries.probe_backoff(100, base) <= deliveries.MAX_BACKOFF
    assert deliveries.probe_backoff(100, dt.timedelta(minutes=10)) == deliveries.MAX_BACKOFF
