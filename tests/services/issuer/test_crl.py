"""The issuer's CRL publishing, called directly (as the tasks do) on both databases, with the
CRLs checked by the openssl CLI."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from sqlalchemy import select, update

from services.issuer import service
from services.issuer.service import Secrets, SignerCache
from shared import contracts
from shared.authorities import certificate_of
from shared.clock import FixedClock
from shared.db.models import Authority, AuthorityCrl, Certificate, Event
from shared.db.session import Database
from shared.pki.crl import crl_to_der, der_to_pem
from shared.pki.profiles import CrlProfile
from tests.factories import (
    issue_certificate,
    make_host,
    make_pending_authority,
    make_root_authority,
    make_site,
    write_pem,
)


@dataclass(frozen=True)
class World:
    root_id: int
    other_root_id: int
    pending_id: int
    host_id: int
    root_cert: x509.Certificate


@pytest.fixture
def world(database: Database, clock: FixedClock, ca_passphrase: str) -> World:
    with database.session() as session:
        root = make_root_authority(session, ca_passphrase, clock)
        other = make_root_authority(session, ca_passphrase, clock)
        pending = make_pending_authority(session, clock)
        host = make_host(session, make_site(session, root))
        return World(root.id, other.id, pending.id, host.id, certificate_of(root))


@pytest.fixture
def secrets(ca_passphrase: str, data_key: str) -> Secrets:
    return Secrets(ca_passphrase=ca_passphrase, data_key=data_key)


def _stored(database: Database, authority_id: int) -> tuple[int, x509.CertificateRevocationList]:
    with database.session() as session:
        row = session.get(AuthorityCrl, authority_id)
        assert row is not None
        return row.number, x509.load_der_x509_crl(row.der)


def _revoke(database: Database, certificate_id: int, now: dt.datetime) -> int:
    with database.session() as session:
        row = session.get(Certificate, certificate_id)
        assert row is not None
        row.status, row.revoked_at, row.revocation_reason = "revoked", now, "keyCompromise"
        return int(row.serial, 16)


def test_an_authority_without_revocations_gets_an_empty_crl_openssl_accepts(
    database: Database,
    world: World,
    secrets: Secrets,
    clock: FixedClock,
    tmp_path: Path,
    openssl: Callable[..., Any],
) -> None:
    assert service.publish_crl(database, world.root_id, SignerCache(), secrets, clock) == 1
    number, crl = _stored(database, world.root_id)
    assert number == 1 and len(crl) == 0
    assert crl.next_update_utc == clock.now() + dt.timedelta(days=7)
    crl_file = tmp_path / "crl.pem"
    crl_file.write_bytes(der_to_pem(crl_to_der(crl)))
    ca_file = write_pem(tmp_path / "ca.pem", world.root_cert)
    checked = openssl("crl", "-in", crl_file, "-CAfile", ca_file, "-verify", "-noout")
    assert "verify OK" in checked.stderr, checked.stderr


def test_publishing_after_a_revocation_lists_it_under_a_new_number(
    database: Database,
    world: World,
    secrets: Secrets,
    clock: FixedClock,
    ca_passphrase: str,
    data_key: str,
) -> None:
    signers = SignerCache()
    assert service.publish_crl(database, world.root_id, signers, secrets, clock) == 1
    certificate_id = issue_certificate(database, clock, world.host_id, ca_passphrase, data_key)
    serial = _revoke(database, certificate_id, clock.now())
    assert service.publish_crl(database, world.root_id, signers, secrets, clock) == 2
    number, crl = _stored(database, world.root_id)
    assert number == 2 and [r.serial_number for r in crl] == [serial]


def test_authorities_that_cannot_sign_get_no_crl(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    assert service.publish_crl(database, world.pending_id, SignerCache(), secrets, clock) is None
    assert service.publish_crl(database, 999999, SignerCache(), secrets, clock) is None
    with database.session() as session:
        assert session.scalars(select(AuthorityCrl)).all() == []


def test_refresh_publishes_what_is_due_and_only_that(
    database: Database,
    world: World,
    secrets: Secrets,
    clock: FixedClock,
    ca_passphrase: str,
    data_key: str,
) -> None:
    signers = SignerCache()
    profile = CrlProfile(validity_days=2)
    both = sorted([world.root_id, world.other_root_id])
    assert service.refresh_due_crls(database, signers, secrets, clock, profile) == both
    assert service.refresh_due_crls(database, signers, secrets, clock, profile) == []
    certificate_id = issue_certificate(database, clock, world.host_id, ca_passphrase, data_key)
    serial = _revoke(database, certificate_id, clock.now())
    # A lost "publish" message: the refresh sees the revocation is not on the CRL yet.
    assert service.refresh_due_crls(database, signers, secrets, clock, profile) == [world.root_id]
    number, crl = _stored(database, world.root_id)
    assert number == 2 and crl.get_revoked_certificate_by_serial_number(serial) is not None
    later = FixedClock(clock.now() + dt.timedelta(days=1))  # half of two days
    assert service.refresh_due_crls(database, signers, secrets, later, profile) == both
    assert _stored(database, world.root_id)[0] == 3
    assert _stored(database, world.other_root_id)[0] == 2
    assert _stored(database, world.root_id)[1].last_update_utc == later.now()


def test_refresh_goes_on_past_an_authority_it_cannot_sign_for(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    with database.session() as session:
        session.execute(
            update(Authority)
            .where(Authority.id == world.other_root_id)
            .values(encrypted_key=b"not a key")
        )
    refreshed = service.refresh_due_crls(database, SignerCache(), secrets, clock)
    assert refreshed == [world.root_id]
    without_passphrase = Secrets(ca_passphrase=None, data_key=secrets.data_key)
    assert service.refresh_due_crls(database, SignerCache(), without_passphrase, clock) == []


def test_crl_failed_is_recorded(database: Database, world: World, clock: FixedClock) -> None:
    service.crl_failed(database, world.root_id, "internal error", clock)
    with database.session() as session:
        event = session.scalars(select(Event).where(Event.kind == "crl.failed")).one()
        assert (event.subject_type, event.subject_id) == ("authority", world.root_id)


def test_crl_messages_carry_ids_only_and_the_tasks_are_registered() -> None:
    from services.issuer import tasks

    message = contracts.publish_crl("4")  # type: ignore[arg-type]
    assert (message.task, message.queue) == ("certfleet.issuer.publish_crl", "issue")
    assert json.dumps(message.kwargs) == '{"authority_id": 4}'
    assert contracts.refresh_crls().kwargs == {}
    assert contracts.TASK_PUBLISH_CRL in tasks.app.tasks
    assert contracts.TASK_REFRESH_CRLS in tasks.app.tasks
