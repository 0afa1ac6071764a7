"""Automatic renewal: which certificates to renew now, in which batches.

Each run, in order:
1. certificates issued before renewal points were stored get theirs;
2. renewals that failed since the last run are counted and given a retry time measured in
   hours (shared.renewal.renewal_retry_delay), never a whole period;
3. due certificates are found by an indexed query, each site's maintenance window is
   respected, and shared.renewal.choose_batch keeps a recording server and the failover
   server covering it out of the same batch (and out of a batch while the other is still
   being renewed);
4. a renewal request is stored for each chosen certificate (a host-held key is renewed from
   its CSR) and enqueued after the commit.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Text, and_, cast, or_, select
from sqlalchemy.orm import Session, aliased, joinedload

from shared import contracts, events
from shared.clock import Clock
from shared.db.models import Certificate, Delivery, Host, IssuanceRequest, Site
from shared.db.session import Database
from shared.issuance import ISSUE_BATCH, issue_messages, renewal_requests
from shared.logging import fields
from shared.renewal import (
    Candidate,
    MaintenanceWindow,
    UnreadableWindow,
    choose_batch,
    decide,
    renewal_due_at,
    renewal_retry_delay,
)

log = logging.getLogger(__name__)

ACTOR = "expiry-watcher"
Publish = Callable[[contracts.Message], None]


@dataclass(frozen=True)
class RenewalReport:
    backfilled: int
    failures_recorded: int
    due: int
    waiting_for_window: int
    held_back: int
    started: list[int]


def backfill_due(session: Session, limit: int) -> int:
    rows = session.scalars(
        select(Certificate)
        .options(joinedload(Certificate.host).joinedload(Host.site))
        .where(Certificate.status == "active", Certificate.renewal_due_at.is_(None))
        .limit(limit)
    ).all()
    for row in rows:
        row.renewal_due_at = renewal_due_at(
            row.not_before, row.not_after, row.host.site.renew_at_fraction, row.serial
        )
    return len(rows)


def record_failures(session: Session, now: dt.datetime) -> int:
    """Count each failed renewal request once: a failure newer than the certificate's last
    scheduled retry is new."""
    request = aliased(IssuanceRequest)
    rows = session.execute(
        select(Certificate, request)
        .join(request, request.id == Certificate.renewal_request_id)
        .options(joinedload(Certificate.host))
        .where(
            Certificate.status == "active",
            request.status == "failed",
            or_(
                Certificate.next_renewal_at.is_(None),
                Certificate.next_renewal_at < request.updated_at,
            ),
        )
    ).all()
    for certificate, failed in rows:
        certificate.renewal_attempts += 1
        certificate.next_renewal_at = now + renewal_retry_delay(certificate.renewal_attempts)
        events.record(
            session,
            "renewal.failed",
            ACTOR,
            at=now,
            site_id=certificate.host.site_id,
            host_id=certificate.host_id,
            subject=("certificate", certificate.id),
            request_id=failed.id,
            reason=failed.reason,
            retry_at=certificate.next_renewal_at.isoformat(),
        )
    return len(rows)


def due_certificates(session: Session, now: dt.datetime, limit: int) -> list[Certificate]:
    request = aliased(IssuanceRequest)
    return list(
        session.scalars(
            select(Certificate)
            .outerjoin(request, request.id == Certificate.renewal_request_id)
            .options(joinedload(Certificate.host).joinedload(Host.site))
            .where(
                Certificate.status == "active",
                Certificate.renewal_due_at <= now,
                or_(Certificate.next_renewal_at.is_(None), Certificate.next_renewal_at <= now),
                or_(Certificate.renewal_request_id.is_(None), request.status == "failed"),
            )
            .order_by(Certificate.renewal_due_at, Certificate.id)
            .limit(limit)
        ).unique()
    )


def busy_host_names(session: Session) -> set[str]:
    """Hosts being renewed right now: a request in flight, or a new certificate on its way
    that its endpoints do not present yet."""
    in_flight = (
        select(Host.name)
        .join(IssuanceRequest, IssuanceRequest.host_id == Host.id)
        .where(IssuanceRequest.status.in_(("queued", "signing")))
    )
    unbound = (
        select(Host.name)
        .join(Delivery, Delivery.host_id == Host.id)
        .where(
            and_(
                Delivery.kind == "certificate",
                Delivery.status.in_(("pending", "delivered", "installed")),
                Delivery.probe_state.in_(("unprobed", "mismatch", "unreachable")),
            )
        )
    )
    return set(session.scalars(in_flight)) | set(session.scalars(unbound))


def covering_failovers(session: Session, site_ids: set[int]) -> dict[str, list[str]]:
    """recording server name -> names of the failover servers that cover it."""
    covering: dict[str, list[str]] = {}
    # Only hosts that cover something: the JSON's text is "[]" for the others. A site of
    # hundreds of recording servers has a few failovers, so this reads a few rows.
    rows = session.execute(
        select(Host.name, Host.failover_for).where(
            Host.site_id.in_(site_ids), cast(Host.failover_for, Text).not_in(("[]", "null"))
        )
    )
    for name, failover_for in rows.all():
        for covered in failover_for or []:
            covering.setdefault(covered, []).append(name)
    return covering


def site_window(
    site: Site, seen: dict[int, MaintenanceWindow | UnreadableWindow | None] | None = None
) -> MaintenanceWindow | UnreadableWindow | None:
    """The site's window (read once per run through `seen`). One that does not parse holds
    back that site only, and is logged with the site's name."""
    seen = {} if seen is None else seen
    if site.id not in seen:
        window = seen[site.id] = MaintenanceWindow.stored(site.maintenance_window)
        if isinstance(window, UnreadableWindow):
            log.error(
                "maintenance window unreadable: the site's renewals wait until it is fixed",
                extra=fields(site=site.name, error=window.error),
            )
    return seen[site.id]


def renew_due(
    db: Database,
    publish: Publish,
    clock: Clock,
    *,
    per_site_limit: int = 5,
    limit: int = 500,
    batch_size: int = ISSUE_BATCH,
) -> RenewalReport:
    now = clock.now()
    with db.session() as session:
        backfilled = backfill_due(session, limit)
        failures = record_failures(session, now)
    with db.session() as session:
        due = due_certificates(session, now, limit)
        ready: dict[int, Certificate] = {}
        waiting = 0
        windows: dict[int, MaintenanceWindow | UnreadableWindow | None] = {}
        for certificate in due:
            window = site_window(certificate.host.site, windows)
            decision = decide(
                now, certificate.renewal_due_at or now, window, certificate.next_renewal_at
            )
            if decision.renew:
                ready[certificate.host_id] = certificate
            else:
                waiting += 1
        covering = covering_failovers(session, {c.host.site_id for c in ready.values()})
        candidates = [
            Candidate(
                host_id=c.host_id,
                host_name=c.host.name,
                site_id=c.host.site_id,
                roles=tuple(c.host.roles),
                failover_for=tuple(c.host.failover_for or ()),
                due_at=c.renewal_due_at or now,
                covered_by=tuple(covering.get(c.host.name, ())),
            )
            for c in ready.values()
        ]
        batch = choose_batch(
            candidates, per_site_limit=per_site_limit, busy_host_names=busy_host_names(session)
        )
        requests = renewal_requests(
            session, [ready[c.host_id] for c in batch], actor=ACTOR, now=now
        )
        started: list[IssuanceRequest] = []
        for certificate_id, request in requests.items():
            if isinstance(request, IssuanceRequest):
                started.append(request)
            else:
                log.warning(
                    "certificate not renewed",
                    extra=fields(certificate_id=certificate_id, error=request.message),
                )
    for message in issue_messages(started, batch_size):  # after the commit: a worker must find them
        publish(message)
    return RenewalReport(
        backfilled,
        failures,
        len(due),
        waiting,
        len(candidates) - len(batch),
        [r.id for r in started],
    )
