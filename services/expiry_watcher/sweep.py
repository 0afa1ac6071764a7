"""The sweep: the database is the source of truth and Redis only a transport, so anything
whose message may have been lost is found here by indexed queries and sent again.
Duplicates are harmless: every worker claims its rows with a conditional update.

- requests `queued` for longer than the grace period: enqueued again;
- requests stuck in `signing` past the stale limit (their worker died): handed back to
  `queued` and enqueued again;
- push deliveries that are due and not leased: enqueued again;
- delivered/installed deliveries whose probe never concluded: probed again;
- active certificates whose host has a delivery method but no delivery: planned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from shared import contracts, deliveries
from shared.clock import Clock
from shared.db.models import Certificate, Delivery, Host, IssuanceRequest
from shared.db.session import Database

Publish = Callable[[contracts.Message], None]


@dataclass(frozen=True)
class SweepLimits:
    grace: dt.timedelta = dt.timedelta(minutes=2)
    stale_signing: dt.timedelta = dt.timedelta(minutes=15)
    batch: int = 1000
    per_run: int = 20000


@dataclass(frozen=True)
class SweepReport:
    requests_requeued: int
    requests_released: int
    deliveries_resent: int
    probes_resent: int
    certificates_planned: int

    @property
    def total(self) -> int:
        return (
            self.requests_requeued
            + self.requests_released
            + self.deliveries_resent
            + self.probes_resent
            + self.certificates_planned
        )


def sweep(
    db: Database, publish: Publish, clock: Clock, limits: SweepLimits = SweepLimits()
) -> SweepReport:
    now = clock.now()
    with db.session() as session:
        released = _release_stale_signing(session, now - limits.stale_signing, now)
    with db.session() as session:
        requeued = _stale_queued(session, now - limits.grace, now, limits.per_run)
    for chunk in contracts.chunked(requeued, limits.batch):
        publish(contracts.issue_batch(chunk))
    with db.session() as session:
        due = _due_deliveries(session, now - limits.grace, now, limits.per_run)
        probes = _unfinished_probes(session, now - limits.grace, now, limits.per_run)
        unplanned = _unplanned_certificates(session, now - limits.grace, limits.per_run)
    for delivery_id in due:
        publish(contracts.deliver(delivery_id))
    for delivery_id in probes:
        publish(contracts.verify(delivery_id))
    for chunk in contracts.chunked(unplanned, limits.batch):
        publish(contracts.distribute_certificates(chunk))
    return SweepReport(len(requeued), released, len(due), len(probes), len(unplanned))


def _release_stale_signing(session: Session, before: dt.datetime, now: dt.datetime) -> int:
    """A claim older than any task's time limit belongs to a worker that died."""
    result = session.execute(
        update(IssuanceRequest)
        .where(IssuanceRequest.status == "signing", IssuanceRequest.updated_at < before)
        .values(status="queued", updated_at=before)  # old enough to be swept at once
        .returning(IssuanceRequest.id)
    )
    return len(result.all())


def _stale_queued(session: Session, before: dt.datetime, now: dt.datetime, limit: int) -> list[int]:
    """Queued longer than the grace period: send again, and touch them so the next sweep
    waits another grace period before sending again."""
    ids = list(
        session.scalars(
            select(IssuanceRequest.id)
            .where(IssuanceRequest.status == "queued", IssuanceRequest.updated_at < before)
            .order_by(IssuanceRequest.id)
            .limit(limit)
        )
    )
    if ids:
        session.execute(
            update(IssuanceRequest)
            .where(IssuanceRequest.id.in_(ids), IssuanceRequest.status == "queued")
            .values(updated_at=now)
        )
    return ids


def _due_deliveries(
    session: Session, before: dt.datetime, now: dt.datetime, limit: int
) -> list[int]:
    ids = list(
        session.scalars(
            select(Delivery.id)
            .where(
                Delivery.status == "pending",
                Delivery.method.in_(deliveries.PUSH_METHODS),
                or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
                or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
                Delivery.updated_at < before,
            )
            .order_by(Delivery.id)
            .limit(limit)
        )
    )
    if ids:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(updated_at=now))
    return ids


def _unfinished_probes(
    session: Session, before: dt.datetime, now: dt.datetime, limit: int
) -> list[int]:
    """A probe chain whose next message was lost: the delivery sits delivered/installed with
    an open verdict and no update for longer than the grace period."""
    ids = list(
        session.scalars(
            select(Delivery.id)
            .join(Host, Host.id == Delivery.host_id)
            .where(
                Delivery.status.in_(("delivered", "installed")),
                Delivery.kind == "certificate",
                Delivery.probe_state.in_(("unprobed", "mismatch", "unreachable")),
                Delivery.probe_attempts < deliveries.MAX_PROBES,
                Delivery.updated_at < before,
            )
            .order_by(Delivery.id)
            .limit(limit)
        )
    )
    if ids:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(updated_at=now))
    return ids


def _unplanned_certificates(session: Session, before: dt.datetime, limit: int) -> list[int]:
    """Active certificates with no delivery at all although their host has a method. The
    method is tested in SQL: filtered afterwards, the first `limit` certificates of hosts
    without one would hide every later one that has one."""
    return list(
        session.scalars(
            select(Certificate.id)
            .join(Host, Host.id == Certificate.host_id)
            .outerjoin(Delivery, and_(Delivery.certificate_id == Certificate.id))
            .where(
                Certificate.status == "active",
                Certificate.created_at < before,
                Delivery.id.is_(None),
                deliveries.method_column() != deliveries.NO_METHOD,
            )
            .order_by(Certificate.id)
            .limit(limit)
        )
    )
