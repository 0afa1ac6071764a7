"""The life of a Delivery, shared by the distributor (push targets, probes) and the API
(the agent pulls and acknowledges):

    pending ──deliver──▶ delivered ──reload/ack──▶ installed ──probe matches──▶ verified
       │                    │                          │
       └──── failed ◀───────┴──────────────────────────┘ (bounded retries with backoff)

A probe that finds another certificate on an installed host leaves the delivery installed
with probe_state `mismatch`: "renewed but not bound". Every step records an Event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from shared import events
from shared.db.models import Certificate, Delivery, Host

ACTOR = "distributor"
MAX_ATTEMPTS = 6
MAX_PROBES = 6
PUSH_METHODS = ("directory", "ssh", "webhook")
CLAIM_LEASE = dt.timedelta(minutes=5)
MAX_BACKOFF = dt.timedelta(hours=1)


def backoff(attempts: int) -> dt.timedelta:
    """30 s, 1 min, 2 min ... capped at one hour: a failed delivery is retried within hours,
    not pushed a whole renewal period away."""
    exponent = min(max(attempts - 1, 0), 7)  # 30 s * 2**7 already passes the cap
    return min(dt.timedelta(seconds=30 * 2**exponent), MAX_BACKOFF)


def client_host_ids(session: Session) -> list[int]:
    """Every client host: each must hold the current trust bundle."""
    return [row.id for row in session.execute(select(Host.id, Host.roles)) if "client" in row.roles]


NO_METHOD = "none"  # a host whose certificates certfleet does not deliver


def method_of(host: Host) -> str:
    return method_in(host.delivery)


def method_in(delivery: dict[str, Any] | None) -> str:
    """The method a host's delivery settings name (NO_METHOD when unset)."""
    return str((delivery or {}).get("method", NO_METHOD))


def has_method(delivery: dict[str, Any] | None) -> bool:
    """Whether certfleet delivers to a host with these delivery settings."""
    return method_in(delivery) != NO_METHOD


def method_column() -> ColumnElement[str]:
    """method_in() in SQL, for filters that must run in the database."""
    return func.coalesce(Host.delivery["method"].as_string(), NO_METHOD)


def _record(
    session: Session, kind: str, delivery: Delivery, actor: str, now: dt.datetime, **data: Any
) -> None:
    events.record(
        session,
        kind,
        actor,
        at=now,
        site_id=delivery.host.site_id,
        host_id=delivery.host_id,
        subject=("delivery", delivery.id),
        method=delivery.method,
        **data,
    )


def plan_certificates(
    session: Session, certificate_ids: Sequence[int], now: dt.datetime
) -> list[int]:
    """A pending Delivery for each active certificate whose host has a delivery method.
    Idempotent: a certificate already planned for its host's method is not planned again.
    Returns the IDs that a push target should attempt now (agent deliveries wait for the pull)."""
    # Only IDs and delivery settings first: most hosts of a large fleet may have no method.
    candidates = session.execute(
        select(Certificate.id, Certificate.host_id, Host.delivery)
        .join(Host, Host.id == Certificate.host_id)
        .where(Certificate.id.in_(list(certificate_ids)), Certificate.status == "active")
        .order_by(Certificate.id)
    ).all()
    wanted = [
        (certificate_id, host_id, method)
        for certificate_id, host_id, delivery in candidates
        if (method := method_in(delivery)) != NO_METHOD
    ]
    if not wanted:
        return []
    existing = set(
        session.execute(
            select(Delivery.certificate_id, Delivery.method).where(
                Delivery.certificate_id.in_([c for c, _, _ in wanted])
            )
        ).all()
    )
    hosts = {
        h.id: h for h in session.scalars(select(Host).where(Host.id.in_({h for _, h, _ in wanted})))
    }
    new = [
        Delivery(
            host=hosts[host_id],
            kind="certificate",
            certificate_id=certificate_id,
            method=method,
            status="pending",
            created_at=now,
            updated_at=now,
        )
        for certificate_id, host_id, method in wanted
        if (certificate_id, method) not in existing
    ]
    session.add_all(new)
    session.flush()  # one multi-row INSERT for the batch
    for delivery in new:
        _record(
            session,
            "delivery.planned",
            delivery,
            ACTOR,
            now,
            certificate_id=delivery.certificate_id,
        )
    return [d.id for d in new if d.method in PUSH_METHODS]


def plan_trust(
    session: Session, hosts: Sequence[Host], trust_fingerprint: str, now: dt.datetime
) -> list[int]:
    """A pending trust-bundle Delivery for each client host that does not have this bundle
    yet (or whose last try failed)."""
    planned: list[int] = []
    for host in hosts:
        method = method_of(host)
        if "client" not in host.roles or method == NO_METHOD:
            continue
        exists = session.scalar(
            select(Delivery.id).where(
                Delivery.host_id == host.id,
                Delivery.kind == "trust",
                Delivery.trust_fingerprint == trust_fingerprint,
                Delivery.status != "failed",
            )
        )
        if exists is not None:
            continue
        delivery = Delivery(
            host=host,
            kind="trust",
            trust_fingerprint=trust_fingerprint,
            method=method,
            status="pending",
            created_at=now,
            updated_at=now,
        )
        session.add(delivery)
        session.flush()
        _record(session, "delivery.planned", delivery, ACTOR, now, trust=trust_fingerprint)
        if method in PUSH_METHODS:
            planned.append(delivery.id)
    return planned


def claim(session: Session, delivery_id: int, now: dt.datetime) -> bool:
    """Take a pending push delivery for one attempt; false if another worker has it, it is
    not due yet, or it is not pending."""
    row = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == "pending",
            Delivery.method.in_(PUSH_METHODS),
            or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
        )
        .values(attempts=Delivery.attempts + 1, claimed_until=now + CLAIM_LEASE, updated_at=now)
        .returning(Delivery.id)
    ).first()
    return row is not None


def mark_delivered(
    session: Session,
    delivery: Delivery,
    *,
    installed: bool,
    actor: str,
    now: dt.datetime,
    detail: str = "",
) -> None:
    delivery.status = "installed" if installed else "delivered"
    delivery.delivered_at = delivery.delivered_at or now
    if installed:
        delivery.installed_at = now
    delivery.last_error = None
    delivery.claimed_until = None
    delivery.next_attempt_at = None
    delivery.updated_at = now
    if not needs_probe(delivery):
        delivery.probe_state = "none"
    _record(session, f"delivery.{delivery.status}", delivery, actor, now, detail=detail)


def mark_attempt_failed(
    session: Session,
    delivery: Delivery,
    message: str,
    *,
    retryable: bool,
    actor: str,
    now: dt.datetime,
) -> dt.timedelta | None:
    """Record a failed attempt. Returns when to try again, or None once it is final."""
    delivery.last_error = message
    delivery.claimed_until = None
    delivery.updated_at = now
    if retryable and delivery.attempts < MAX_ATTEMPTS:
        wait = backoff(delivery.attempts)
        delivery.next_attempt_at = now + wait
        _record(
            session,
            "delivery.retrying",
            delivery,
            actor,
            now,
            error=message,
            attempt=delivery.attempts,
        )
        return wait
    delivery.status = "failed"
    _record(session, "delivery.failed", delivery, actor, now, error=message)
    return None


def needs_probe(delivery: Delivery) -> bool:
    return delivery.kind == "certificate" and bool(delivery.host.tls_endpoints)


def stale_reason(delivery: Delivery) -> str | None:
    """A certificate that is no longer active (superseded, revoked, expired) must never be
    pushed to its host."""
    certificate = delivery.certificate
    if delivery.kind != "certificate" or certificate is None or certificate.status == "active":
        return None
    if certificate.status == "superseded":
        return "the certificate is superseded; its successor is delivered instead"
    return f"the certificate is {certificate.status}: it is not delivered"


def expected_fingerprint(delivery: Delivery) -> str | None:
    return delivery.certificate.fingerprint if delivery.certificate is not None else None


def probe_backoff(probes: int, base: dt.timedelta) -> dt.timedelta:
    """A restarting service needs seconds, not the delivery backoff: base, 2x, 4x ...
    capped at the delivery backoff's cap."""
    factor: int = 2 ** min(max(probes - 1, 0), 10)
    return min(base * factor, MAX_BACKOFF)


def record_probe(
    session: Session,
    delivery: Delivery,
    presented: dict[str, str | None],
    now: dt.datetime,
    base_delay: dt.timedelta = dt.timedelta(seconds=5),
) -> dt.timedelta | None:
    """Judge what the endpoints presented (endpoint -> fingerprint, None if unreachable).
    Verified only when every endpoint presents the issued certificate. Returns when to probe
    again, or None when the judgement is final."""
    expected = expected_fingerprint(delivery)
    delivery.probe_attempts += 1
    delivery.updated_at = now
    wrong = {ep: fp for ep, fp in presented.items() if fp is not None and fp != expected}
    unreachable = [ep for ep, fp in presented.items() if fp is None]
    if not wrong and not unreachable:
        delivery.status, delivery.probe_state = "verified", "match"
        delivery.verified_at, delivery.last_error = now, None
        delivery.presented_fingerprint = expected
        _record(session, "delivery.verified", delivery, ACTOR, now, endpoints=sorted(presented))
        return None
    if wrong:
        endpoint, fingerprint = sorted(wrong.items())[0]
        delivery.probe_state, delivery.presented_fingerprint = "mismatch", fingerprint
        delivery.last_error = (
            f"renewed but not bound: {endpoint} presents {fingerprint[:16]}…, "
            f"not the issued {(expected or '')[:16]}…"
        )
    else:
        delivery.probe_state = "unreachable"
        delivery.last_error = "probe could not reach " + ", ".join(sorted(unreachable))
    if delivery.probe_attempts < MAX_PROBES:
        return probe_backoff(delivery.probe_attempts, base_delay)
    kind = "delivery.unbound" if wrong else "delivery.unreachable"
    _record(session, kind, delivery, ACTOR, now, error=delivery.last_error)
    return None
