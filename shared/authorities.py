"""Certificate authorities as stored rows: make their key material, load them for signing,
and build the chain a leaf is served with."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import crls
from shared.db.models import Authority
from shared.errors import Conflict, KeyUnavailable, NotFound, ValidationFailed
from shared.pki.ca import IssuedCa, create_intermediate_ca, create_root_ca
from shared.pki.export import fingerprint_sha256, serial_hex, to_pem
from shared.pki.keys import decrypt_private_key, encrypt_private_key
from shared.pki.profiles import CrlProfile

MAX_CHAIN_DEPTH = 8


def certificate_of(authority: Authority) -> x509.Certificate:
    if not authority.certificate_pem:
        raise Conflict(f"authority {authority.name!r} has no certificate yet ({authority.status})")
    return x509.load_pem_x509_certificate(authority.certificate_pem.encode())


def load_signer(authority: Authority, passphrase: str) -> IssuedCa:
    if authority.status not in ("active", "retiring"):
        raise Conflict(f"authority {authority.name!r} is {authority.status} and cannot sign")
    if authority.encrypted_key is None:
        raise KeyUnavailable(f"authority {authority.name!r} has no stored key")
    return IssuedCa(
        certificate_of(authority), decrypt_private_key(authority.encrypted_key, passphrase)
    )


def generate_material(
    session: Session,
    authority: Authority,
    *,
    passphrase: str,
    now: dt.datetime,
    crl_profile: CrlProfile | None = None,
) -> None:
    """Make the key and certificate of a pending authority and store them (key encrypted).
    With `crl_profile` (every path that makes a real authority: `certfleet init` and the
    issuer), its first, empty CRL is signed in the same transaction: an authority never
    exists without a CRL, so a revocation check never meets a missing one."""
    if authority.kind == "root":
        issued = create_root_ca(
            authority.name,
            now=now,
            key_bits=authority.key_bits,
            validity_days=authority.validity_days,
        )
    else:
        if authority.parent_id is None:
            raise ValidationFailed("an intermediate authority needs a parent")
        parent = session.get(Authority, authority.parent_id)
        if parent is None:
            raise NotFound(f"parent authority {authority.parent_id} does not exist")
        issued = create_intermediate_ca(
            authority.name,
            parent=load_signer(parent, passphrase),
            now=now,
            key_bits=authority.key_bits,
            validity_days=authority.validity_days,
        )
    cert = issued.certificate
    authority.certificate_pem = to_pem(cert).decode()
    authority.encrypted_key = encrypt_private_key(issued.key, passphrase)
    authority.serial = serial_hex(cert)
    authority.fingerprint = fingerprint_sha256(cert)
    authority.not_before = cert.not_valid_before_utc
    authority.not_after = cert.not_valid_after_utc
    authority.status = "active"
    authority.reason = None
    if crl_profile is not None:
        session.flush()
        if crls.store_next_crl(session, authority, issued, now=now, profile=crl_profile) is None:
            raise Conflict(f"authority {authority.name!r} got a CRL while it was being made")


def chain_above(session: Session, authority: Authority) -> list[x509.Certificate]:
    """The authority's certificate and every issuer above it, ending with the root."""
    chain: list[x509.Certificate] = []
    current: Authority | None = authority
    while current is not None:
        if len(chain) >= MAX_CHAIN_DEPTH:
            raise Conflict("the authority chain is too deep or cyclic")
        chain.append(certificate_of(current))
        current = session.get(Authority, current.parent_id) if current.parent_id else None
    return chain


def trust_anchors(session: Session) -> list[x509.Certificate]:
    """Roots that clients must trust now: those of every authority not yet retired."""
    live = session.scalars(
        select(Authority).where(Authority.status.in_(("active", "retiring"))).order_by(Authority.id)
    ).all()
    anchors: dict[str, x509.Certificate] = {}
    for authority in live:
        root = chain_above(session, authority)[-1]
        anchors.setdefault(fingerprint_sha256(root), root)
    return list(anchors.values())
