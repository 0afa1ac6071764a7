"""Stored CRLs on both databases: what they list, when they are due, and a CRL Number that
never repeats even when two workers publish at once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from cryptography import x509
from sqlalchemy import update

from shared import crls
from shared.authorities import load_signer
from shared.clock import FixedClock
from shared.db.models import Authority, AuthorityCrl, Certificate
from shared.db.session import Database
from shared.pki.ca import IssuedCa
from shared.pki.crl import RevokedEntry
from shared.pki.profiles import CrlProfile
from tests.factories import issue_certificate, make_host, make_root_authority, make_site


@dataclass(frozen=True)
class World:
    authority_id: int
    certificate_ids: list[int]
    signer: IssuedCa


@pytest.fixture
def world(database: Database, clock: FixedClock, ca_passphrase: str, data_key: str) -> World:
    with database.session() as session:
        authority = make_root_authority(session, ca_passphrase, clock)
        site = make_site(session, authority)
        host_ids = [make_host(session, site).id for _ in range(2)]
        authority_id = authority.id
        signer = load_signer(authority, ca_passphrase)
    ids = [issue_certificate(database, clock, h, ca_passphrase, data_key) for h in host_ids]
    return World(authority_id, ids, signer)


def _revoke(database: Database, certificate_id: int, reason: str, at: dt.datetime) -> int:
    with database.session() as session:
        row = session.get(Certificate, certificate_id)
        assert row is not None
        row.status, row.revoked_at, row.revocation_reason = "revoked", at, reason
        return int(row.serial, 16)


def _publish(database: Database, world: World, now: dt.datetime) -> int | None:
    with database.session() as session:
        authority = session.get(Authority, world.authority_id)
        assert authority is not None
        return crls.store_next_crl(session, authority, world.signer, now=now)


def _stored(database: Database, authority_id: int) -> tuple[int, x509.CertificateRevocationList]:
    with database.session() as session:
        stored = crls.stored_crl(session, authority_id)
        assert stored is not None
        return stored.number, x509.load_der_x509_crl(stored.der)


def test_store_lists_revoked_certificates_and_counts_up(
    database: Database, world: World, clock: FixedClock
) -> None:
    assert _publish(database, world, clock.now()) == 1
    number, empty = _stored(database, world.authority_id)
    assert number == 1 and len(empty) == 0
    serial = _revoke(database, world.certificate_ids[0], "keyCompromise", clock.now())
    assert _publish(database, world, clock.now()) == 2
    number, crl = _stored(database, world.authority_id)
    assert number == 2 == crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert crl.is_signature_valid(world.signer.key.public_key())
    [entry] = list(crl)
    assert entry.serial_number == serial
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )


@pytest.mark.parametrize("first", [True, False], ids=["first-insert", "update"])
def test_a_crl_built_on_a_stale_number_is_not_stored(
    database: Database,
    world: World,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
    first: bool,
) -> None:
    """Another worker stores a CRL between this one's read of the number and its write: the
    late one stores nothing (its caller retries), so no number is issued twice."""
    if not first:
        assert _publish(database, world, clock.now()) == 1
    start = 0 if first else 1
    real_entries = crls.revoked_entries

    def racing_entries(session: object, authority_id: int) -> list[RevokedEntry]:
        monkeypatch.setattr(crls, "revoked_entries", real_entries)
        assert _publish(database, world, clock.now()) == start + 1  # the other worker
        return real_entries(session, authority_id)  # type: ignore[arg-type]

    monkeypatch.setattr(crls, "revoked_entries", racing_entries)
    assert _publish(database, world, clock.now()) is None
    assert _stored(database, world.authority_id)[0] == start + 1
    assert _publish(database, world, clock.now()) == start + 2


def test_due_when_missing_half_expired_or_behind_a_revocation(
    database: Database, world: World, clock: FixedClock
) -> None:
    profile = CrlProfile(validity_days=4)
    now = clock.now()

    def due(at: dt.datetime) -> list[int]:
        with database.session() as session:
            return crls.due_authority_ids(session, at, profile)

    assert due(now) == [world.authority_id]  # no CRL yet
    with database.session() as session:
        authority = session.get(Authority, world.authority_id)
        assert authority is not None
        crls.store_next_crl(session, authority, world.signer, now=now, profile=profile)
    assert due(now) == []
    assert due(now + dt.timedelta(days=1, hours=23)) == []
    assert due(now + dt.timedelta(days=2)) == [world.authority_id]  # half of 4 days left
    _revoke(database, world.certificate_ids[1], "superseded", now)
    assert due(now) == [world.authority_id]  # the stored CRL misses a revocation
    assert _publish(database, world, now) == 2
    with database.session() as session:
        stored = session.get(AuthorityCrl, world.authority_id)
        assert stored is not None and (stored.revoked_count, stored.entries) == (1, 1)
        session.execute(
            update(Authority).where(Authority.id == world.authority_id).values(status="retired")
        )
    assert due(now + dt.timedelta(days=30)) == []  # a retired CA signs nothing any more
