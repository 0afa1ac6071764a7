"""Read certificates and export them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session, joinedload, undefer

from services.api.auth import Principal
from services.api.common import named_in_scope
from shared import access, events
from shared.authorities import chain_above
from shared.db.models import Certificate, Host, IssuanceRequest, Site
from shared.errors import ConfigError, Conflict, KeyUnavailable, NotFound
from shared.issuance import renewal_request
from shared.pki.crl import reason_flag
from shared.pki.export import pem_chain, to_pfx
from shared.pki.keys import decrypt_private_key


def get_certificate(
    session: Session, certificate_id: int, who: Principal, *, with_key: bool = False
) -> Certificate:
    """The certificate, if it exists in the reader's scope; 404 otherwise."""
    query = select(Certificate).where(Certificate.id == certificate_id)
    if with_key:
        query = query.options(undefer(Certificate.encrypted_key))
    row = session.scalar(query)
    if row is None:
        raise NotFound(f"certificate {certificate_id} does not exist")
    who.require_read(row.host.site_id)
    return row


def list_query(
    session: Session, args: dict[str, Any], who: Principal, after_id: int
) -> Select[Any]:
    site = named_in_scope(session, Site, args["site"], "site", who)
    host = named_in_scope(session, Host, args["host"], "host", who)
    query = (
        select(Certificate)
        .options(joinedload(Certificate.host).joinedload(Host.site))
        .where(Certificate.id > after_id)
        .order_by(Certificate.id)
        .limit(args["limit"] + 1)
    )
    if site is not None or who.scoped_site_id is not None:
        query = access.scope(query.join(Host, Host.id == Certificate.host_id), Host.site_id, who)
        if site is not None:
            query = query.where(Host.site_id == site.id)
    if host is not None:
        query = query.where(Certificate.host_id == host.id)
    if args["status"]:
        query = query.where(Certificate.status == args["status"])
    if args["expires_before"]:
        query = query.where(Certificate.not_after < args["expires_before"])
    return query


def chain_for(session: Session, certificate: Certificate) -> list[x509.Certificate]:
    return chain_above(session, certificate.authority)


def leaf_of(certificate: Certificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(certificate.certificate_pem.encode())


def pem_bundle(session: Session, certificate: Certificate) -> bytes:
    return pem_chain(leaf_of(certificate), chain_for(session, certificate))


def export_pfx(
    session: Session,
    certificate: Certificate,
    *,
    password: str,
    friendly_name: str | None,
    data_key: str | None,
    who: Principal,
    now: dt.datetime,
) -> bytes:
    """A Windows-importable PFX of a server-held key. The export is an audit Event."""
    if certificate.encrypted_key is None:
        raise KeyUnavailable(
            "the private key of this certificate is held by the host (it was issued from a CSR)"
        )
    if not data_key:
        raise ConfigError("CERTFLEET_DATA_KEY is not set on the API; cannot export keys")
    key = decrypt_private_key(certificate.encrypted_key, data_key)
    name = friendly_name or f"certfleet {certificate.common_name} {certificate.serial[:12]}"
    pfx = to_pfx(leaf_of(certificate), key, chain_for(session, certificate), password, name)
    record_export(session, certificate, "pfx", who=who, now=now)
    return pfx


def record_export(
    session: Session, certificate: Certificate, fmt: str, *, who: Principal, now: dt.datetime
) -> None:
    """Every download of a certificate (pem, der) or of its key (pfx) is an audit Event; the
    caller commits before it answers."""
    events.record(
        session,
        "certificate.exported",
        who.actor,
        at=now,
        site_id=certificate.host.site_id,
        host_id=certificate.host_id,
        subject=("certificate", certificate.id),
        format=fmt,
    )


def force_renewal(
    session: Session, certificate: Certificate, *, who: Principal, now: dt.datetime
) -> IssuanceRequest:
    if certificate.status != "active":
        raise Conflict(f"certificate {certificate.id} is {certificate.status}; renew its successor")
    pending = (
        session.get(IssuanceRequest, certificate.renewal_request_id)
        if certificate.renewal_request_id is not None
        else None
    )
    if pending is not None and pending.status in ("queued", "signing"):
        return pending  # already on its way: renewing twice would help nobody
    certificate.next_renewal_at = None
    return renewal_request(session, certificate, actor=who.actor, now=now)


REVOCABLE = ("active", "superseded")


def revoke(
    session: Session,
    certificate: Certificate,
    *,
    reason: str,
    renew: bool,
    who: Principal,
    now: dt.datetime,
) -> IssuanceRequest | None:
    """Revoke an active or superseded certificate for good; with `renew`, also start the
    renewal an active one's host now needs. The caller commits, then asks the issuer for a
    fresh CRL (and publishes the renewal). Returns the renewal request, if any."""
    reason_flag(reason)
    if certificate.status not in REVOCABLE:
        raise Conflict(f"certificate {certificate.id} is {certificate.status}, not revocable")
    if certificate.not_after <= now:
        raise Conflict(f"certificate {certificate.id} has expired; no client accepts it anyway")
    renewal = None
    if renew:
        if reason == "keyCompromise" and certificate.key_source == "csr":
            raise Conflict(
                "the host holds this compromised key: a renewal would certify it again; "
                "request a certificate with a CSR for a new key instead"
            )
        renewal = force_renewal(session, certificate, who=who, now=now)
    claimed = session.execute(
        update(Certificate)
        .where(Certificate.id == certificate.id, Certificate.status.in_(REVOCABLE))
        .values(status="revoked", revoked_at=now, revocation_reason=reason)
        .returning(Certificate.id)
    ).first()
    if claimed is None:  # revoked by a concurrent request since it was read
        raise Conflict(f"certificate {certificate.id} is already revoked")
    events.record(
        session,
        "certificate.revoked",
        who.actor,
        at=now,
        site_id=certificate.host.site_id,
        host_id=certificate.host_id,
        subject=("certificate", certificate.id),
        reason=reason,
        serial=certificate.serial,
        renewal_request_id=renewal.id if renewal is not None else None,
    )
    return renewal
