"""The issuer service against real databases (SQLite and PostgreSQL) and real crypto."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, undefer

from infra.local import free_port
from services.issuer import service
from services.issuer.service import Secrets, SignerCache
from shared.authorities import certificate_of
from shared.clock import FixedClock
from shared.db.models import Authority, Certificate, Event, Host, IssuanceRequest
from shared.db.session import Database
from shared.errors import KeyUnavailable
from shared.pki.keys import decrypt_private_key
from tests.factories import (
    make_csr,
    make_host,
    make_intermediate_authority,
    make_pending_authority,
    make_request,
    make_root_authority,
    make_site,
    openssl,
    openssl_verify,
    public_der,
    rsa_key,
    write_key,
)

HOST = "rec01"
FQDN = "rec01.site1.example.com"
IP = "10.1.0.10"


@dataclass(frozen=True)
class World:
    root_id: int
    site_id: int
    host_id: int
    root_cert: x509.Certificate


@pytest.fixture
def world(database: Database, clock: FixedClock, ca_passphrase: str) -> World:
    with database.session() as session:
        root = make_root_authority(session, ca_passphrase, clock)
        site = make_site(session, root)
        host = make_host(session, site, name=HOST, dns_names=[FQDN, HOST], ip_addresses=[IP])
        return World(root.id, site.id, host.id, certificate_of(root))


@pytest.fixture
def secrets(ca_passphrase: str, data_key: str) -> Secrets:
    return Secrets(ca_passphrase=ca_passphrase, data_key=data_key)


def _requests(database: Database, host_id: int, *csrs: str | None) -> list[int]:
    with database.session() as session:
        host = session.get(Host, host_id)
        assert host is not None
        return [make_request(session, host, csr_pem=csr).id for csr in csrs]


def _issue(
    database: Database,
    ids: Sequence[int],
    secrets: Secrets,
    clock: FixedClock,
    signers: SignerCache | None = None,
) -> service.BatchResult:
    return service.issue_batch(
        database, ids, signers=signers or SignerCache(), secrets=secrets, clock=clock
    )


def _request(database: Database, request_id: int) -> IssuanceRequest:
    with database.sessions() as session:
        request = session.get(IssuanceRequest, request_id)
        assert request is not None
        return request


def _certificate(database: Database, certificate_id: int | None) -> Certificate:
    assert certificate_id is not None
    with database.sessions() as session:
        return session.scalars(
            select(Certificate)
            .where(Certificate.id == certificate_id)
            .options(undefer(Certificate.encrypted_key))
        ).one()


def _events(database: Database, kind: str) -> list[Event]:
    with database.sessions() as session:
        return list(session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def test_issue_with_csr(
    tmp_path: Path, database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    key = rsa_key()
    [request_id] = _requests(database, world.host_id, make_csr(key, [FQDN, HOST], [IP]))

    result = _issue(database, [request_id], secrets, clock)

    request = _request(database, request_id)
    assert result == service.BatchResult(
        issued=[request_id], failed=[], skipped=[], certificate_ids=[request.certificate_id]
    )
    assert request.status == "issued"
    assert request.reason is None
    assert request.attempts == 1
    row = _certificate(database, request.certificate_id)
    assert row.status == "active"
    assert row.key_source == "csr"
    assert row.encrypted_key is None
    assert row.host_id == world.host_id
    assert row.authority_id == world.root_id
    assert row.request_id == request_id
    assert row.common_name == FQDN
    assert row.dns_names == [FQDN, HOST]
    assert row.ip_addresses == [IP]
    assert row.not_after == clock.now() + dt.timedelta(days=397)

    cert = x509.load_pem_x509_certificate(row.certificate_pem.encode())
    assert public_der(cert.public_key()) == public_der(key)
    assert format(cert.serial_number, "x") == row.serial
    verify = openssl_verify(
        tmp_path,
        cert,
        world.root_cert,
        (),
        "-purpose",
        "sslserver",
        "-verify_hostname",
        FQDN,
        at=clock.now(),
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_issue_with_server_side_key(
    tmp_path: Path,
    database: Database,
    world: World,
    secrets: Secrets,
    clock: FixedClock,
    data_key: str,
    ca_passphrase: str,
) -> None:
    [request_id] = _requests(database, world.host_id, None)

    result = _issue(database, [request_id], secrets, clock)

    assert result.issued == [request_id]
    row = _certificate(database, _request(database, request_id).certificate_id)
    assert row.key_source == "server"
    assert row.encrypted_key is not None
    key = decrypt_private_key(row.encrypted_key, data_key)
    cert = x509.load_pem_x509_certificate(row.certificate_pem.encode())
    assert public_der(cert.public_key()) == public_der(key)
    with pytest.raises(KeyUnavailable):
        decrypt_private_key(row.encrypted_key, ca_passphrase)

    plain_body = "".join(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
        .splitlines()[1:-1]
    )
    with database.engine.connect() as conn:
        raw = (
            conn.execute(text("SELECT * FROM certificates WHERE id = :id"), {"id": row.id})
            .mappings()
            .one()
        )
    for value in raw.values():
        stored = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
        assert b"BEGIN PRIVATE KEY" not in stored
        assert b"BEGIN RSA PRIVATE KEY" not in stored
        assert plain_body[64:128].encode() not in stored
        assert data_key.encode() not in stored

    verify = openssl_verify(
        tmp_path, cert, world.root_cert, (), "-purpose", "sslserver", at=clock.now()
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_issue_from_an_intermediate_verifies_with_the_chain(
    tmp_path: Path, database: Database, clock: FixedClock, secrets: Secrets, ca_passphrase: str
) -> None:
    with database.session() as session:
        root = make_root_authority(session, ca_passphrase, clock)
        inter = make_intermediate_authority(session, root, ca_passphrase, clock)
        host = make_host(session, make_site(session, inter), name="mob01")
        chain = (certificate_of(inter), certificate_of(root))
        host_id = host.id
    [request_id] = _requests(database, host_id, None)

    assert _issue(database, [request_id], secrets, clock).issued == [request_id]

    row = _certificate(database, _request(database, request_id).certificate_id)
    cert = x509.load_pem_x509_certificate(row.certificate_pem.encode())
    assert cert.issuer == chain[0].subject
    ok = openssl_verify(
        tmp_path, cert, chain[1], [chain[0]], "-purpose", "sslserver", at=clock.now()
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    without_chain = openssl_verify(tmp_path, cert, chain[1], at=clock.now())
    assert without_chain.returncode != 0


def test_second_issuance_supersedes_the_first(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    [first_id] = _requests(database, world.host_id, None)
    _issue(database, [first_id], secrets, clock)
    clock.advance(dt.timedelta(days=200))
    [second_id] = _requests(database, world.host_id, make_csr(rsa_key(), [FQDN]))
    _issue(database, [second_id], secrets, clock)

    first = _certificate(database, _request(database, first_id).certificate_id)
    second = _certificate(database, _request(database, second_id).certificate_id)
    assert first.status == "superseded"
    assert first.superseded_by_id == second.id
    assert first.superseded_at == clock.now()
    assert second.status == "active"
    assert second.superseded_at is None
    assert first.fingerprint != second.fingerprint

    issued = _events(database, "certificate.issued")
    assert [e.subject_id for e in issued] == [first.id, second.id]
    assert issued[0].data["superseded"] == []
    assert issued[1].data["superseded"] == [first.id]


def test_supersede_within_one_batch(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    [earlier] = _requests(database, world.host_id, None)
    _issue(database, [earlier], secrets, clock)
    ids = _requests(database, world.host_id, None, None)
    assert _issue(database, ids, secrets, clock).issued == ids
    with database.sessions() as session:
        rows = session.execute(
            select(Certificate.id, Certificate.status, Certificate.superseded_by_id)
            .where(Certificate.host_id == world.host_id)
            .order_by(Certificate.id)
        ).all()
    # One active certificate; each older one superseded by the next, in request order.
    assert [(status, by) for _id, status, by in rows] == [
        ("superseded", rows[1][0]),
        ("superseded", rows[2][0]),
        ("active", None),
    ]
    issued = _events(database, "certificate.issued")
    assert [e.data["superseded"] for e in issued] == [[], [rows[0][0]], [rows[1][0]]]


def test_only_certificates_of_hosts_with_a_delivery_method_go_to_the_distributor(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    with database.session() as session:
        site = session.get_one(Host, world.host_id).site
        pushed = make_host(session, site, name="rec-push")
        pushed.delivery = {"method": "directory", "settings": {"path": "/srv/certs"}}
        pushed_id = pushed.id
    [plain] = _requests(database, world.host_id, None)
    [push] = _requests(database, pushed_id, None)
    result = _issue(database, [plain, push], secrets, clock)
    assert result.issued == [plain, push]
    assert result.to_distribute == [_request(database, push).certificate_id]
    assert result.certificate_ids == [_request(database, i).certificate_id for i in (plain, push)]


@pytest.mark.parametrize("status", ["signing", "issued", "failed"])
def test_request_not_queued_is_skipped(
    database: Database, world: World, secrets: Secrets, clock: FixedClock, status: str
) -> None:
    with database.session() as session:
        host = session.get(Host, world.host_id)
        assert host is not None
        request_id = make_request(session, host, status=status).id

    result = _issue(database, [request_id], secrets, clock)

    assert result == service.BatchResult(issued=[], failed=[], skipped=[request_id])
    request = _request(database, request_id)
    assert request.status == status
    assert request.attempts == 0
    with database.sessions() as session:
        assert session.scalars(select(Certificate)).all() == []


def test_running_a_batch_twice_issues_once(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    ids = _requests(database, world.host_id, None, make_csr(rsa_key(), [FQDN]))
    signers = SignerCache()
    first = _issue(database, ids, secrets, clock, signers)
    second = _issue(database, ids, secrets, clock, signers)

    assert first.issued == ids
    assert second == service.BatchResult(issued=[], failed=[], skipped=ids)
    with database.sessions() as session:
        assert len(session.scalars(select(Certificate)).all()) == 2
        attempts = session.scalars(
            select(IssuanceRequest.attempts).where(IssuanceRequest.id.in_(ids))
        ).all()
    assert attempts == [1, 1]
    assert len(_events(database, "certificate.issued")) == 2


def test_unknown_ids_are_skipped(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    [request_id] = _requests(database, world.host_id, None)
    result = _issue(database, [request_id, 999999], secrets, clock)
    assert result.issued == [request_id]
    assert result.skipped == [999999]


def _assert_failed(database: Database, request_id: int, *fragments: str) -> str:
    request = _request(database, request_id)
    assert request.status == "failed"
    assert request.certificate_id is None
    assert request.reason is not None
    for fragment in fragments:
        assert fragment in request.reason, request.reason
    [event] = [e for e in _events(database, "issuance.failed") if e.subject_id == request_id]
    assert event.subject_type == "issuance_request"
    assert event.data["reason"] == request.reason
    assert event.host_id == request.host_id
    with database.sessions() as session:
        assert (
            session.scalars(select(Certificate).where(Certificate.request_id == request_id)).all()
            == []
        )
    return request.reason


def test_csr_name_outside_site_policy_fails(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    [request_id] = _requests(
        database, world.host_id, make_csr(rsa_key(), [FQDN, "rec01.attacker.example.org"])
    )
    result = _issue(database, [request_id], secrets, clock)
    assert result.failed == [request_id]
    _assert_failed(
        database,
        request_id,
        "DNS name 'rec01.attacker.example.org' is outside the site's allowed suffixes",
    )


def test_csr_ip_outside_site_policy_fails(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    [request_id] = _requests(database, world.host_id, make_csr(rsa_key(), [FQDN], ["192.0.2.7"]))
    _issue(database, [request_id], secrets, clock)
    _assert_failed(database, request_id, "'192.0.2.7' is outside the site's allowed ranges")


def test_csr_name_in_policy_but_not_registered_fails(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    [request_id] = _requests(
        database, world.host_id, make_csr(rsa_key(), [FQDN, "rec02.site1.example.com"])
    )
    _issue(database, [request_id], secrets, clock)
    _assert_failed(
        database, request_id, "not registered for host 'rec01'", "rec02.site1.example.com"
    )


def test_invalid_csr_fails_readably(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    [weak, garbage] = _requests(
        database, world.host_id, make_csr(rsa_key(1024), [FQDN]), "not a CSR"
    )
    _issue(database, [weak, garbage], secrets, clock)
    _assert_failed(database, weak, "RSA 1024")
    _assert_failed(database, garbage, "not a valid PEM or DER")


def test_host_names_outside_policy_fail(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    """The registered names are checked again at signing time (the policy may have changed)."""
    with database.session() as session:
        host = session.get(Host, world.host_id)
        assert host is not None
        host.site.dns_suffixes = ["site9.example.com"]
    [request_id] = _requests(database, world.host_id, None)
    _issue(database, [request_id], secrets, clock)
    _assert_failed(database, request_id, f"'{FQDN}' is outside the site's allowed suffixes")


def test_missing_data_key_for_server_side_key_fails(
    database: Database, world: World, clock: FixedClock, ca_passphrase: str
) -> None:
    ids = _requests(database, world.host_id, None, make_csr(rsa_key(), [FQDN]))
    result = _issue(database, ids, Secrets(ca_passphrase=ca_passphrase), clock)
    assert result.failed == [ids[0]]
    assert result.issued == [ids[1]]  # a CSR needs no data key
    _assert_failed(database, ids[0], "CERTFLEET_DATA_KEY is not set")


def test_missing_or_wrong_ca_passphrase_fails(
    database: Database, world: World, clock: FixedClock, data_key: str
) -> None:
    [missing, wrong] = _requests(database, world.host_id, None, None)
    _issue(database, [missing], Secrets(data_key=data_key), clock)
    _issue(database, [wrong], Secrets(ca_passphrase="wrong-passphrase!", data_key=data_key), clock)
    _assert_failed(database, missing, "CERTFLEET_CA_KEY_PASSPHRASE is not set")
    reason = _assert_failed(database, wrong, "cannot be decrypted")
    assert "wrong-passphrase!" not in reason


def test_issued_event_is_recorded(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    [request_id] = _requests(database, world.host_id, None)
    _issue(database, [request_id], secrets, clock)
    row = _certificate(database, _request(database, request_id).certificate_id)
    [event] = _events(database, "certificate.issued")
    assert event.actor == "issuer"
    assert event.at == clock.now()
    assert event.site_id == world.site_id
    assert event.host_id == world.host_id
    assert (event.subject_type, event.subject_id) == ("certificate", row.id)
    assert event.data["serial"] == row.serial
    assert event.data["fingerprint"] == row.fingerprint
    assert event.data["not_after"] == row.not_after.isoformat()
    assert "BEGIN" not in str(event.data)


def test_validity_is_capped_by_the_issuing_ca(
    database: Database, clock: FixedClock, secrets: Secrets, ca_passphrase: str
) -> None:
    with database.session() as session:
        root = make_root_authority(session, ca_passphrase, clock, validity_days=100)
        host_id = make_host(session, make_site(session, root)).id
        root_end = certificate_of(root).not_valid_after_utc
    [request_id] = _requests(database, host_id, None)
    _issue(database, [request_id], secrets, clock)
    row = _certificate(database, _request(database, request_id).certificate_id)
    assert row.not_after == root_end


# --- Transient failures ------------------------------------------------------------------


class StoreUnreachable(Database):
    """The database goes away after the claim: the store step's connection is refused (a
    real refusal, from a port nothing listens on), and later sessions work again."""

    def __init__(self, real: Database) -> None:
        self.real, self.calls = real, 0

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        self.calls += 1
        if self.calls == 2:
            dead = create_engine(f"postgresql+psycopg://127.0.0.1:{free_port()}/nothing")
            try:
                dead.connect()
            finally:
                dead.dispose()
        with self.real.session() as session:
            yield session


def test_release_puts_claimed_rows_back(
    database: Database, world: World, clock: FixedClock
) -> None:
    ids = _requests(database, world.host_id, None, None)
    with database.session() as session:
        host = session.get(Host, world.host_id)
        assert host is not None
        issued_id = make_request(session, host, status="issued").id
    with database.session() as session:
        tokens = service.claim(session, [*ids, issued_id], clock.now())
    assert tokens == dict.fromkeys(ids, 1)
    assert {_request(database, i).status for i in ids} == {"signing"}
    with database.session() as session:
        assert service.claim(session, ids, clock.now()) == {}  # already owned
    with database.session() as session:
        service.release(session, {**tokens, issued_id: 0}, clock.now())
    assert {_request(database, i).status for i in ids} == {"queued"}
    assert _request(database, issued_id).status == "issued"


def test_a_worker_whose_claim_was_taken_over_stores_nothing(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    """The sweep hands a slow worker's claim to another worker: only the newer claim may store
    its certificate, so the request is issued once."""
    [request_id] = _requests(database, world.host_id, None, None)[:1]
    with database.session() as session:
        slow = service.claim(session, [request_id], clock.now())
    with database.session() as session:  # what the sweep does to a claim it thinks is dead
        service.release(session, slow, clock.now())
    with database.session() as session:
        fast = service.claim(session, [request_id], clock.now())
    assert fast == {request_id: 2}
    with database.session() as session:
        assert service.still_owned(session, slow, clock.now()) == set()
        service.release(session, slow, clock.now())  # the slow worker's release is fenced too
    assert _request(database, request_id).status == "signing"
    with database.session() as session:
        assert service.still_owned(session, fast, clock.now()) == {request_id}


def test_transient_error_releases_the_batch_and_a_retry_issues_it(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    ids = _requests(database, world.host_id, None, None)

    unreachable = StoreUnreachable(database)
    with pytest.raises(OperationalError):
        service.issue_batch(unreachable, ids, signers=SignerCache(), secrets=secrets, clock=clock)
    assert unreachable.calls == 3  # claim, store (refused), release

    for request_id in ids:
        request = _request(database, request_id)
        assert request.status == "queued"
        assert request.attempts == 1
    with database.sessions() as session:
        assert session.scalars(select(Certificate)).all() == []

    retry = _issue(database, ids, secrets, clock)
    assert retry.issued == ids
    assert [_request(database, i).attempts for i in ids] == [2, 2]


def test_give_up_fails_only_unfinished_requests(
    database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    [done, waiting] = _requests(database, world.host_id, None, None)
    _issue(database, [done], secrets, clock)
    service.give_up(database, [done, waiting], "the database stayed unreachable", clock)
    assert _request(database, done).status == "issued"
    request = _request(database, waiting)
    assert (request.status, request.reason) == ("failed", "the database stayed unreachable")


# --- Authorities -------------------------------------------------------------------------


def test_create_root_and_intermediate_authority(
    database: Database, clock: FixedClock, secrets: Secrets, ca_passphrase: str
) -> None:
    with database.session() as session:
        root_id = make_pending_authority(session, clock, name="New Root").id

    assert service.create_authority(database, root_id, secrets=secrets, clock=clock) == "active"
    assert service.create_authority(database, root_id, secrets=secrets, clock=clock) == "skipped"

    with database.session() as session:
        root = session.get(Authority, root_id)
        assert root is not None
        inter_id = make_pending_authority(
            session,
            clock,
            name="New Intermediate",
            kind="intermediate",
            parent=root,
            validity_days=1825,
        ).id
    assert service.create_authority(database, inter_id, secrets=secrets, clock=clock) == "active"

    with database.sessions() as session:
        root = session.get(Authority, root_id)
        inter = session.get(Authority, inter_id)
        assert root is not None and inter is not None
        root_cert, inter_cert = certificate_of(root), certificate_of(inter)
        assert root.encrypted_key is not None
        decrypt_private_key(root.encrypted_key, ca_passphrase)
    inter_cert.verify_directly_issued_by(root_cert)
    assert inter_cert.not_valid_after_utc == clock.now() + dt.timedelta(days=1825)
    created = _events(database, "authority.created")
    assert [(e.subject_id, e.data["name"]) for e in created] == [
        (root_id, "New Root"),
        (inter_id, "New Intermediate"),
    ]


def test_create_authority_failures_are_recorded(
    database: Database, clock: FixedClock, secrets: Secrets, data_key: str
) -> None:
    with database.session() as session:
        no_passphrase = make_pending_authority(session, clock).id
        orphan = make_pending_authority(session, clock, kind="intermediate").id

    status = service.create_authority(
        database, no_passphrase, secrets=Secrets(data_key=data_key), clock=clock
    )
    assert status == "failed"
    assert service.create_authority(database, orphan, secrets=secrets, clock=clock) == "failed"

    with database.sessions() as session:
        first = session.get(Authority, no_passphrase)
        second = session.get(Authority, orphan)
        assert first is not None and second is not None
        assert first.reason is not None and "CERTFLEET_CA_KEY_PASSPHRASE" in first.reason
        assert second.reason is not None and "needs a parent" in second.reason
        assert first.certificate_pem is None
        assert first.encrypted_key is None
    failed = _events(database, "authority.failed")
    assert len(failed) == 2
    assert {e.subject_id for e in failed} == {no_passphrase, orphan}


def test_create_authority_error_hands_it_back_for_a_retry(
    database: Database, clock: FixedClock, secrets: Secrets, ca_passphrase: str
) -> None:
    """An unexpected error must not leave the authority stuck in `generating`, where the
    task's retry could never claim it again."""
    with database.session() as session:
        root = make_root_authority(session, ca_passphrase, clock)
        good_pem = root.certificate_pem
        root.certificate_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        root_id = root.id
        inter_id = make_pending_authority(session, clock, kind="intermediate", parent=root).id

    with pytest.raises(ValueError):
        service.create_authority(database, inter_id, secrets=secrets, clock=clock)

    with database.session() as session:
        handed_back = session.get(Authority, inter_id)
        assert handed_back is not None
        assert handed_back.status == "pending"
        assert handed_back.certificate_pem is None
        parent = session.get(Authority, root_id)
        assert parent is not None
        parent.certificate_pem = good_pem
    assert service.create_authority(database, inter_id, secrets=secrets, clock=clock) == "active"


def test_malformed_csr_fails_alone_without_sinking_the_batch(
    tmp_path: Path, database: Database, world: World, secrets: Secrets, clock: FixedClock
) -> None:
    """A well-signed CSR whose SAN does not parse is a failed request, not a crashed batch
    (which would mark every other request of the batch failed)."""
    malformed = openssl_csr_with_raw_san(tmp_path, "30:05:82:03:61:ff:62")
    good, bad = _requests(database, world.host_id, None, malformed)

    result = _issue(database, [good, bad], secrets, clock)

    assert result.issued == [good]
    assert result.failed == [bad]
    _assert_failed(database, bad, "malformed extension")


def openssl_csr_with_raw_san(tmp_path: Path, der_hex: str) -> str:
    """A CSR made and signed by the openssl CLI with a subjectAltName given as raw DER."""
    key = tmp_path / "csr-key.pem"
    config = tmp_path / "csr.cnf"
    config.write_text(
        "[req]\ndistinguished_name=dn\nreq_extensions=ext\nprompt=no\n"
        f"[dn]\nCN={FQDN}\n[ext]\nsubjectAltName=DER:{der_hex}\n"
    )
    write_key(key, rsa_key())
    result = openssl("req", "-new", "-key", key, "-config", config)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_one_unsignable_request_does_not_fail_its_batch(
    database: Database, world: World, secrets: Secrets, clock: FixedClock, ca_passphrase: str
) -> None:
    with database.session() as session:
        broken = make_root_authority(session, ca_passphrase, clock)
        broken.certificate_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        doomed = make_request(session, make_host(session, make_site(session, broken))).id
    [good] = _requests(database, world.host_id, None)
    result = service.issue_batch(
        database, [doomed, good], signers=SignerCache(), secrets=secrets, clock=clock
    )
    assert result.issued == [good] and result.failed == [doomed]
    with database.sessions() as session:
        row = session.get(IssuanceRequest, doomed)
        assert row is not None and row.status == "failed"
        assert row.reason == "internal error while signing; see issuer logs"


def test_failed_authority_gets_a_reason(database: Database, clock: FixedClock) -> None:
    with database.session() as session:
        pending = make_pending_authority(session, clock).id
    service.fail_authority(database, pending, "internal error while creating the CA", clock)
    with database.sessions() as session:
        row = session.get(Authority, pending)
        assert row is not None and row.status == "failed"
        assert row.reason == "internal error while creating the CA"
        kinds = session.scalars(select(Event.kind).where(Event.subject_id == pending)).all()
        assert "authority.failed" in kinds
