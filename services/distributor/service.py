"""Distribution: plan deliveries, push bundles through targets, probe what hosts present.

Plain functions over the database; the Celery tasks only call these and schedule what they
return (a retry delay, a follow-up probe)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from services.distributor.probe import ProbeFailed, Prober
from services.distributor.targets.base import Target, TargetError
from shared import deliveries
from shared.bundles import build_bundle, fingerprint_of, trust_bundle_pem
from shared.clock import Clock
from shared.db.models import Delivery, Host
from shared.db.session import Database
from shared.errors import CertfleetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What the task should do next: retry this step later, and/or probe."""

    status: str
    retry_in: dt.timedelta | None = None
    probe: bool = False


@dataclass(frozen=True)
class Context:
    targets: Mapping[str, Target]
    clock: Clock
    data_key: str | None = field(default=None, repr=False)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)


def distribute_certificates(
    db: Database, certificate_ids: Sequence[int], clock: Clock
) -> list[int]:
    with db.session() as session:
        return deliveries.plan_certificates(session, certificate_ids, clock.now())


def distribute_trust(db: Database, host_ids: Sequence[int], clock: Clock) -> list[int]:
    with db.session() as session:
        fingerprint = fingerprint_of(trust_bundle_pem(session))
        hosts = session.scalars(select(Host).where(Host.id.in_(list(host_ids)))).all()
        return deliveries.plan_trust(session, hosts, fingerprint, clock.now())


def _load(session: Session, delivery_id: int) -> Delivery | None:
    """The delivery with its host and certificate, or None (a message for a row this
    database does not have: another deployment's, on a shared Redis, or deleted)."""
    delivery = session.scalar(
        select(Delivery)
        .options(joinedload(Delivery.host), joinedload(Delivery.certificate))
        .where(Delivery.id == delivery_id)
    )
    if delivery is None:
        log.warning(
            "no such delivery: message dropped", extra={"fields": {"delivery_id": delivery_id}}
        )
    return delivery


MISSING = Outcome("missing")


def attempt(db: Database, delivery_id: int, ctx: Context) -> Outcome:
    """One push attempt. Transient database errors propagate (the task retries); target
    errors become a scheduled retry or a final failure."""
    with db.session() as session:
        if not deliveries.claim(session, delivery_id, ctx.clock.now()):
            return Outcome("skipped")
    with db.session() as session:
        delivery = _load(session, delivery_id)
        if delivery is None:  # claimed a moment ago, deleted since
            return MISSING
        settings = dict((delivery.host.delivery or {}).get("settings") or {})
        stale = deliveries.stale_reason(delivery)
        if stale is not None:
            deliveries.mark_attempt_failed(
                session,
                delivery,
                stale,
                retryable=False,
                actor=deliveries.ACTOR,
                now=ctx.clock.now(),
            )
            return Outcome(delivery.status)
        try:
            bundle = build_bundle(session, delivery, data_key=ctx.data_key, environ=ctx.environ)
            target = ctx.targets[delivery.method]
            result = target.deliver(bundle, settings)
        except TargetError as exc:
            wait = deliveries.mark_attempt_failed(
                session,
                delivery,
                exc.message,
                retryable=exc.retryable,
                actor=deliveries.ACTOR,
                now=ctx.clock.now(),
            )
            return Outcome(delivery.status, retry_in=wait)
        except CertfleetError as exc:
            deliveries.mark_attempt_failed(
                session,
                delivery,
                exc.message,
                retryable=False,
                actor=deliveries.ACTOR,
                now=ctx.clock.now(),
            )
            return Outcome(delivery.status)
        deliveries.mark_delivered(
            session,
            delivery,
            installed=result.installed,
            actor=deliveries.ACTOR,
            now=ctx.clock.now(),
            detail=result.detail,
        )
        return Outcome(delivery.status, probe=deliveries.needs_probe(delivery))


def verify(
    db: Database,
    delivery_id: int,
    prober: Prober,
    clock: Clock,
    probe_delay: dt.timedelta = dt.timedelta(seconds=5),
) -> Outcome:
    """Probe every TLS endpoint of the host and judge the delivery."""
    with db.session() as session:
        delivery = _load(session, delivery_id)
        if delivery is None:
            return MISSING
        if delivery.status not in ("delivered", "installed") or not deliveries.needs_probe(
            delivery
        ):
            return Outcome(delivery.status)
        endpoints = list(delivery.host.tls_endpoints)
    presented: dict[str, str | None] = {}
    for endpoint in endpoints:
        try:
            presented[endpoint] = prober.presented_fingerprint(endpoint)
        except ProbeFailed as exc:
            log.info("probe failed", extra={"fields": {"endpoint": endpoint, "error": str(exc)}})
            presented[endpoint] = None
    with db.session() as session:
        delivery = _load(session, delivery_id)
        if delivery is None:
            return MISSING
        wait = deliveries.record_probe(session, delivery, presented, clock.now(), probe_delay)
        return Outcome(delivery.status, retry_in=wait)
