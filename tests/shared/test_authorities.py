"""Authorities as rows: material generation, signer loading, chains and trust anchors."""

from __future__ import annotations

import pytest
from cryptography import x509
from sqlalchemy import select

from shared.authorities import (
    certificate_of,
    chain_above,
    generate_material,
    load_signer,
    trust_anchors,
)
from shared.clock import FixedClock
from shared.db.models import Authority
from shared.db.session import Database
from shared.errors import Conflict, KeyUnavailable, ValidationFailed
from shared.pki.export import fingerprint_sha256
from tests.factories import (
    make_intermediate_authority,
    make_pending_authority,
    make_root_authority,
    public_der,
)


def test_generate_material_for_root_and_intermediate(
    database: Database, clock: FixedClock, ca_passphrase: str
) -> None:
    with database.session() as session:
        root = make_root_authority(session, ca_passphrase, clock, name="Fleet Root")
        inter = make_intermediate_authority(session, root, ca_passphrase, clock, name="Fleet Int")
        root_id, inter_id = root.id, inter.id

    with database.sessions() as session:
        loaded_root = session.get(Authority, root_id)
        loaded_inter = session.get(Authority, inter_id)
        assert loaded_root is not None and loaded_inter is not None
        for authority in (loaded_root, loaded_inter):
            assert authority.status == "active"
            assert authority.reason is None
            cert = certificate_of(authority)
            assert authority.fingerprint == fingerprint_sha256(cert)
            assert authority.serial == format(cert.serial_number, "x")
            assert authority.not_before == cert.not_valid_before_utc == clock.now()
            assert authority.not_after == cert.not_valid_after_utc
            assert authority.encrypted_key is not None
            assert b"ENCRYPTED PRIVATE KEY" in authority.encrypted_key
        root_cert, inter_cert = certificate_of(loaded_root), certificate_of(loaded_inter)
        assert root_cert.subject.rfc4514_string() == "CN=Fleet Root"
        inter_cert.verify_directly_issued_by(root_cert)
        basic = inter_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert basic.path_length == 0

        assert chain_above(session, loaded_inter) == [inter_cert, root_cert]
        assert chain_above(session, loaded_root) == [root_cert]
        assert trust_anchors(session) == [root_cert]


def test_load_signer(sqlite_database: Database, clock: FixedClock, ca_passphrase: str) -> None:
    with sqlite_database.session() as session:
        root = make_root_authority(session, ca_passphrase, clock)
        signer = load_signer(root, ca_passphrase)
        assert signer.certificate == certificate_of(root)
        assert public_der(signer.key) == public_der(signer.certificate.public_key())
        with pytest.raises(KeyUnavailable):
            load_signer(root, "not-the-passphrase")
        root.status = "retired"
        with pytest.raises(Conflict, match="cannot sign"):
            load_signer(root, ca_passphrase)


def test_pending_authority_has_no_certificate(sqlite_database: Database, clock: FixedClock) -> None:
    with sqlite_database.session() as session:
        pending = make_pending_authority(session, clock)
        with pytest.raises(Conflict, match="no certificate yet"):
            certificate_of(pending)


def test_intermediate_needs_a_parent(
    sqlite_database: Database, clock: FixedClock, ca_passphrase: str
) -> None:
    with sqlite_database.session() as session:
        orphan = make_pending_authority(session, clock, kind="intermediate")
        with pytest.raises(ValidationFailed, match="needs a parent"):
            generate_material(session, orphan, passphrase=ca_passphrase, now=clock.now())


def test_trust_anchors_cover_every_live_root_once(
    sqlite_database: Database, clock: FixedClock, ca_passphrase: str
) -> None:
    with sqlite_database.session() as session:
        old_root = make_root_authority(session, ca_passphrase, clock)
        make_intermediate_authority(session, old_root, ca_passphrase, clock)
        new_root = make_root_authority(session, ca_passphrase, clock)
        retired_root = make_root_authority(session, ca_passphrase, clock)
        retired_root.status = "retired"
        old_root.status = "retiring"
        make_pending_authority(session, clock)
    with sqlite_database.sessions() as session:
        anchors = trust_anchors(session)
        fingerprints = [fingerprint_sha256(c) for c in anchors]
        assert fingerprints == [old_root.fingerprint, new_root.fingerprint]
        assert session.scalar(select(Authority).where(Authority.status == "pending")) is not None
