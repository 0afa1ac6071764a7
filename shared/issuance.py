"""Rules of issuance that both the API (to refuse bad input at once) and the issuer (to
check again at signing time) apply: which names a host's certificate carries and whether a
CSR may be signed for it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from shared import contracts, events
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


def request_values(
    host: Host,
    csr: str | None,
    validity_days: int,
    idempotency_key: str | None,
    fingerprint: str,
    actor: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """The columns of an already validated `queued` request: for a multi-row INSERT, or
    `IssuanceRequest(**values)` for one row."""
    return {
        "host_id": host.id,
        "csr_pem": csr,
        "validity_days": validity_days,
        "status": "queued",
        "idempotency_key": idempotency_key,
        "request_hash": fingerprint,
        "requested_by": actor,
        "created_at": now,
        "updated_at": now,
    }


def record_requested(session: Session, row: IssuanceRequest, actor: str, now: dt.datetime) -> None:
    """The audit Event of a stored (flushed) request."""
    events.record_all(session, [requested_entry(row, actor, now)])


def requested_entry(row: IssuanceRequest, actor: str, now: dt.datetime) -> dict[str, Any]:
    return events.entry(
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
    row = IssuanceRequest(
        **request_values(host, csr, validity_days, idempotency_key, fingerprint, actor, now)
    )
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
    result = renewal_requests(session, [certificate], actor=actor, now=now)[certificate.id]
    if isinstance(result, Conflict):
        raise result
    return result


def renewal_requests(
    session: Session,
    certificates: Sequence[Certificate],
    *,
    actor: str,
    now: dt.datetime,
    campaign_id: int | None = None,
) -> dict[int, IssuanceRequest | Conflict]:
    """renewal_request for many certificates at once (their hosts and sites loaded): the
    CSRs in one query, the new rows in one INSERT ... RETURNING, the Events in one INSERT.
    By certificate ID: the new request, or why there is none."""
    originals = [
        c.request_id for c in certificates if c.key_source == "csr" and c.request_id is not None
    ]
    csrs: dict[int, str | None] = {}
    if originals:
        rows = session.execute(
            select(IssuanceRequest.id, IssuanceRequest.csr_pem).where(
                IssuanceRequest.id.in_(originals)
            )
        )
        csrs = {request_id: csr for request_id, csr in rows.all()}
    results: dict[int, IssuanceRequest | Conflict] = {}
    renewed: list[Certificate] = []
    values: list[dict[str, Any]] = []
    for certificate in certificates:
        csr = None
        if certificate.key_source == "csr" and certificate.request_id is not None:
            csr = csrs.get(certificate.request_id)
            if csr is None:
                results[certificate.id] = Conflict(
                    f"certificate {certificate.id} has no CSR to renew from"
                )
                continue
        host = certificate.host
        validity = host.site.default_validity_days
        fingerprint = request_fingerprint(host.id, csr, validity)
        new = request_values(host, csr, validity, None, fingerprint, actor, now)
        values.append({**new, "campaign_id": campaign_id})
        renewed.append(certificate)
    entries = []
    for certificate, row in zip(renewed, insert_requests(session, values), strict=True):
        results[certificate.id] = row
        certificate.renewal_request_id = row.id
        entries += [
            requested_entry(row, actor, now),
            events.entry(
                "renewal.started",
                actor,
                at=now,
                site_id=row.host.site_id,
                host_id=row.host_id,
                subject=("certificate", certificate.id),
                request_id=row.id,
            ),
        ]
    events.record_all(session, entries)
    return results


def insert_requests(session: Session, rows: list[dict[str, Any]]) -> list[IssuanceRequest]:
    """New requests (request_values), inserted by one multi-row INSERT ... RETURNING and
    returned in order. Their hosts should be in the session already: reading `request.host`
    then costs no query."""
    if not rows:
        return []
    inserted = session.scalars(
        insert(IssuanceRequest).returning(IssuanceRequest, sort_by_parameter_order=True), rows
    )
    return list(inserted.all())


# Requests per issue message, CERTFLEET_ISSUE_BATCH_SIZE's default (the API and the watcher
# both read the setting): a burst of thousands spreads over every issuer process.
ISSUE_BATCH = 100


def issue_messages(
    rows: Sequence[IssuanceRequest], batch_size: int = ISSUE_BATCH
) -> list[contracts.Message]:
    """The issue messages for new requests, server-side key requests in smaller ones."""
    csr = [r.id for r in rows if r.csr_pem]
    keygen = [r.id for r in rows if not r.csr_pem]
    return contracts.issue_batches(csr, keygen, batch_size)
