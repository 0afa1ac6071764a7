"""Host agents: one-time enrolment, then pull bundles and acknowledge what was installed.

The agent makes its own key and CSR (the key never leaves the host); its token is scoped to
its host and reaches nothing but these endpoints."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from services.api.auth import Principal
from shared import deliveries, events
from shared.bundles import build_bundle
from shared.db.models import AGENT_ROLE, AgentEnrollment, Delivery, Host, IssuanceRequest
from shared.errors import Conflict, NotFound, Unauthorized
from shared.issuance import check_csr_for_host, request_fingerprint, store_request
from shared.pki.profiles import XPROTECT_SERVER
from shared.tokens import create_token, hash_secret

ENROLLMENT_PREFIX = "cfe_"


@dataclass(frozen=True)
class Enrolled:
    host: Host
    agent_token: str
    request: IssuanceRequest


def make_enrollment(
    session: Session, host: Host, *, hours: int, actor: str, now: dt.datetime
) -> tuple[str, dt.datetime]:
    secret = ENROLLMENT_PREFIX + secrets.token_urlsafe(32)
    expires = now + dt.timedelta(hours=hours)
    session.add(
        AgentEnrollment(
            host_id=host.id,
            token_hash=hash_secret(secret),
            created_by=actor,
            created_at=now,
            expires_at=expires,
        )
    )
    events.record(
        session,
        "agent.enrollment_created",
        actor,
        at=now,
        site_id=host.site_id,
        host_id=host.id,
        expires_at=expires.isoformat(),
    )
    return secret, expires


def enroll(session: Session, secret: str, csr: str, now: dt.datetime) -> Enrolled:
    """Spend the one-time secret (a conditional update, so it works once even under a race),
    switch the host to agent delivery, and queue issuance for the agent's CSR."""
    spent = session.execute(
        update(AgentEnrollment)
        .where(
            AgentEnrollment.token_hash == hash_secret(secret),
            AgentEnrollment.used_at.is_(None),
            AgentEnrollment.expires_at > now,
        )
        .values(used_at=now)
        .returning(AgentEnrollment.host_id)
    ).first()
    if spent is None:
        raise Unauthorized("the enrolment token is unknown, used or expired")
    host = session.get(Host, spent[0])
    assert host is not None
    check_csr_for_host(host, csr, XPROTECT_SERVER)
    csr = csr.strip() + "\n"
    host.delivery = {"method": "agent", "settings": {}}
    host.delivery_directory = None  # no directory target any more: its directory is free
    token = create_token(
        session,
        name=f"agent:{host.name}",
        role=AGENT_ROLE,
        site_id=None,
        created_by="enrollment",
        now=now,
        host_id=host.id,
    )
    validity = host.site.default_validity_days
    request = store_request(
        session,
        host,
        csr,
        validity,
        None,
        request_fingerprint(host.id, csr, validity),
        f"agent:{host.name}",
        now,
    )
    events.record(
        session,
        "agent.enrolled",
        f"agent:{host.name}",
        at=now,
        site_id=host.site_id,
        host_id=host.id,
        subject=("api_token", token.token.id),
    )
    return Enrolled(host, token.secret, request)


def next_bundle(session: Session, who: Principal, now: dt.datetime) -> dict[str, Any] | None:
    """The oldest delivery waiting for this host's agent, marked delivered; None if none."""
    while True:
        delivery = session.scalar(
            select(Delivery)
            .options(joinedload(Delivery.host), joinedload(Delivery.certificate))
            .where(
                Delivery.host_id == who.host_id,
                Delivery.method == "agent",
                Delivery.status.in_(("pending", "delivered")),
            )
            .order_by(Delivery.id)
            .limit(1)
        )
        if delivery is None:
            return None
        stale = deliveries.stale_reason(delivery)
        if stale is None:
            break
        deliveries.mark_attempt_failed(
            session, delivery, stale, retryable=False, actor=who.actor, now=now
        )
    bundle = build_bundle(session, delivery, data_key=None, environ={})
    if delivery.status == "pending":
        delivery.attempts += 1
        deliveries.mark_delivered(session, delivery, installed=False, actor=who.actor, now=now)
    return {
        "delivery_id": delivery.id,
        "kind": delivery.kind,
        "fingerprint": bundle.fingerprint,
        "certificate_pem": bundle.certificate_pem.decode() if bundle.certificate_pem else None,
        "chain_pem": bundle.chain_pem.decode() if bundle.chain_pem else None,
        "trust_pem": bundle.trust_pem.decode(),
        "host": delivery.host,
    }


def acknowledge(
    session: Session, who: Principal, data: dict[str, Any], now: dt.datetime
) -> Delivery:
    delivery = session.scalar(
        select(Delivery)
        .options(joinedload(Delivery.host), joinedload(Delivery.certificate))
        .where(Delivery.id == data["delivery_id"], Delivery.host_id == who.host_id)
    )
    if delivery is None:
        raise NotFound(f"delivery {data['delivery_id']} is not one of this host's")
    if delivery.status not in ("pending", "delivered"):
        raise Conflict(f"delivery {delivery.id} is already {delivery.status}")
    if data["status"] == "failed":
        deliveries.mark_attempt_failed(
            session,
            delivery,
            data.get("error") or "the agent failed",
            retryable=False,
            actor=who.actor,
            now=now,
        )
        return delivery
    expected = (
        delivery.trust_fingerprint
        if delivery.kind == "trust"
        else (deliveries.expected_fingerprint(delivery))
    )
    if data.get("fingerprint") != expected:
        raise Conflict("the acknowledged fingerprint is not the one delivered")
    deliveries.mark_delivered(session, delivery, installed=True, actor=who.actor, now=now)
    return delivery
