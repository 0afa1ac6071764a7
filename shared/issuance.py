"""Rules of issuance that both the API (to refuse bad input at once) and the issuer (to
check again at signing time) apply: which names a host's certificate carries and whether a
CSR may be signed for it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.orm import Session

from shared import events
from shared.db.models import Certificate, Host, IssuanceRequest, Site
from shared.errors import Conflict, PolicyViolation
from shared.pki.csr import load_csr
from shared.pki.profiles import ServerProfile
from shared.pki.signing import SubjectNames
from shared.policy import SitePolicy, parse_ip


def subject_names(host: Host) -> SubjectNames:
    return SubjectNames(tuple(host.dns_names), tuple(parse_ip(ip) for ip in host.ip_addresses))


def site_policy(site: Site) -> SitePolicy:
    return SitePolicy.build(site.dns_suffixes, site.ip_ranges, site.allow_short_names)


def check_csr_for_host(host: Host, csr_pem: str, profile: ServerProfile) -> rsa.RSAPublicKey:
    """A CSR is signed for a host only if its names are allowed by the site's policy and
    registered for that host; the certificate always carries the host's registered names."""
    info = load_csr(csr_pem, profile)
    site_policy(host.site).enforce(info.dns_names, info.ip_addresses)
    names = subject_names(host)
    unregistered = [n for n in info.dns_names if n not in names.dns_names]
    unregistered += [str(ip) for ip in info.ip_addresses if ip not in names.ip_addresses]
    if unregistered:
        raise PolicyViolation(
            f"the CSR asks for names not registered for host {host.name!r}: "
            + ", ".join(unregistered)
        )
    return info.public_key


def request_fingerprint(host_id: int, csr_pem: str | None, validity_days: int) -> str:
    """What makes two requests 'the same' for Idempotency-Key replays."""
    canonical = json.dumps(
        {"host_id": host_id, "csr": (csr_pem or "").strip(), "validity_days": validity_days},
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_request(
    host: Host,
    csr: str | None,
    validity_days: int,
    idempotency_key: str | None,
    fingerprint: str,
    actor: str,
    now: dt.datetime,
) -> IssuanceRequest:
    """An already validated request as a `queued` row, not yet added to a session."""
    return IssuanceRequest(
        host=host,
        csr_pem=csr,
        validity_days=validity_days,
        status="queued",
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        requested_by=actor,
        created_at=now,
        updated_at=now,
    )


def record_requested(session: Session, row: IssuanceRequest, actor: str, now: dt.datetime) -> None:
    """The audit Event of a stored (flushed) request."""
    events.record(
        session,
        "issuance.requested",
        actor,
        at=now,
        site_id=row.host.site_id,
        host_id=row.host_id,
        subject=("issuance_request", row.id),
        key_source="csr" if row.csr_pem else "server",
    )


def store_request(
    session: Session,
    host: Host,
    csr: str | None,
    validity_days: int,
    idempotency_key: str | None,
    fingerprint: str,
    actor: str,
    now: dt.datetime,
) -> IssuanceRequest:
    """Save an already validated request as `queued` (the caller commits, then publishes)."""
    row = new_request(host, csr, validity_days, idempotency_key, fingerprint, actor, now)
    session.add(row)
    session.flush()
    record_requested(session, row, actor, now)
    return row


def renewal_request(
    session: Session, certificate: Certificate, *, actor: str, now: dt.datetime
) -> IssuanceRequest:
    """A request that renews `certificate` for its host. A host-held key (issued from a CSR,
    e.g. through an agent) is renewed from the same CSR, so the host's key keeps working;
    a server-held key gets a new one."""
    host = certificate.host
    csr = None
    if certificate.key_source == "csr" and certificate.request_id is not None:
        original = session.get(IssuanceRequest, certificate.request_id)
        csr = original.csr_pem if original is not None else None
        if csr is None:
            raise Conflict(f"certificate {certificate.id} has no CSR to renew from")
    validity = host.site.default_validity_days
    row = store_request(
        session, host, csr, validity, None, request_fingerprint(host.id, csr, validity), actor, now
    )
    certificate.renewal_request_id = row.id
    events.record(
        session,
        "renewal.started",
        actor,
        at=now,
        site_id=host.site_id,
        host_id=host.id,
        subject=("certificate", certificate.id),
        request_id=row.id,
    )
    return row
