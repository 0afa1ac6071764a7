"""Driving campaigns. `advance` runs from the beat (every 15 s) and right after a campaign is
created or resumed; it is safe to run twice, or twice at once (items are claimed with a
conditional update, so no certificate is renewed twice by one campaign).

Each run, for every unfinished campaign:
1. progress: each item in flight follows its request (queued -> issued or failed) and then its
   certificate's delivery (issued -> delivered -> verified, or failed); an item is finished
   when nothing more can be learnt (see CampaignItem);
2. a running campaign with `max_failures` failed items pauses itself: a fleet-wide mistake
   (a wrong CSR policy, a dead share) stops after a few hosts, not after all of them;
3. a rotation moves through its phases (ROTATION_PHASES) in order, each only when the one
   before is complete: the new CA exists -> the trust bundle with both CAs has reached
   `ack_share` of the clients -> the sites switch to the new CA and every leaf of the old
   one is re-issued -> no active leaf of the old CA is left -> the old CA is retired and the
   bundle without it is sent;
4. dispatch: pending items are started, most urgent first, within the rate (items started in
   the last minute), the per-site concurrency (items in flight), the site's maintenance window
   and never a recording server with the failover server covering it
   (shared.renewal.choose_batch). A certificate already being renewed is adopted, not
   renewed twice; one renewed meanwhile counts as issued.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from services.expiry_watcher.renewal import busy_host_names, covering_failovers, site_window
from shared import contracts, events
from shared.bundles import fingerprint_of, trust_bundle_pem
from shared.campaigns import (
    IN_FLIGHT,
    ROTATE,
    Resolved,
    Selector,
    add_items,
    resolve,
    rotation_sites,
)
from shared.clock import Clock
from shared.db.models import (
    Authority,
    Campaign,
    CampaignItem,
    Certificate,
    Delivery,
    Host,
    IssuanceRequest,
    Site,
)
from shared.db.session import Database
from shared.deliveries import MAX_PROBES, client_host_ids, has_method
from shared.errors import CertfleetError
from shared.issuance import ISSUE_BATCH, issue_messages, renewal_requests
from shared.renewal import Candidate, choose_batch

Publish = Callable[[contracts.Message], None]
ACTOR = "expiry-watcher"
PENDING_SCAN = 2000
RATE_WINDOW = dt.timedelta(minutes=1)
AUTHORITY_RESEND = dt.timedelta(minutes=10)
ACKED = ("delivered", "installed", "verified")


@dataclass
class AdvanceReport:
    campaigns: int = 0
    started: list[int] = field(default_factory=list)  # issuance request IDs
    finished_items: int = 0
    phases: list[str] = field(default_factory=list)  # "campaign 3: trust -> reissue"


def advance(
    db: Database, publish: Publish, clock: Clock, *, batch_size: int = ISSUE_BATCH
) -> AdvanceReport:
    report = AdvanceReport()
    with db.session() as session:
        ids = list(
            session.scalars(
                select(Campaign.id).where(Campaign.finished_at.is_(None)).order_by(Campaign.id)
            )
        )
    for campaign_id in ids:
        messages: list[contracts.Message] = []
        with db.session() as session:
            campaign = session.get_one(Campaign, campaign_id)
            _advance_one(session, campaign, clock.now(), report, messages, batch_size)
        report.campaigns += 1
        for message in messages:  # after the commit: a worker must find the rows
            publish(message)
    return report


def _advance_one(
    session: Session,
    campaign: Campaign,
    now: dt.datetime,
    report: AdvanceReport,
    messages: list[contracts.Message],
    batch_size: int,
) -> None:
    report.finished_items += _progress(session, campaign, now)
    _pause_on_failures(session, campaign, now)
    if campaign.kind == ROTATE:
        before = campaign.phase
        _rotate(session, campaign, now, messages)
        if campaign.phase != before:
            report.phases.append(f"campaign {campaign.id}: {before} -> {campaign.phase}")
    if campaign.status == "running" and (campaign.kind != ROTATE or campaign.phase == "reissue"):
        started = _dispatch(session, campaign, now)
        report.started += [r.id for r in started]
        messages += issue_messages(started, batch_size)
    if campaign.kind != ROTATE:
        _finish_if_done(session, campaign, now)
    campaign.updated_at = now


# --- 1. progress ---------------------------------------------------------------------------


def _progress(session: Session, campaign: Campaign, now: dt.datetime) -> int:
    # Of each item's host only whether it has a delivery method: not the whole host.
    rows = session.execute(
        select(CampaignItem, Host.delivery)
        .join(Host, Host.id == CampaignItem.host_id)
        .where(
            CampaignItem.campaign_id == campaign.id,
            CampaignItem.status.in_(IN_FLIGHT),
            CampaignItem.finished_at.is_(None),
        )
    ).all()
    if not rows:
        return 0
    items = [item for item, _ in rows]
    delivered = {item.id for item, delivery in rows if has_method(delivery)}
    requests = {
        r.id: r
        for r in session.scalars(
            select(IssuanceRequest).where(
                IssuanceRequest.id.in_([i.request_id for i in items if i.request_id])
            )
        )
    }
    latest: dict[int, Delivery] = {}
    new_ids = [i.new_certificate_id for i in items if i.new_certificate_id]
    for delivery in session.scalars(
        select(Delivery)
        .where(Delivery.certificate_id.in_(new_ids), Delivery.kind == "certificate")
        .order_by(Delivery.id)
    ):
        latest[delivery.certificate_id or 0] = delivery
    finished = 0
    for item in items:
        before = (item.status, item.finished_at)
        if item.status == "queued":
            request = requests.get(item.request_id or 0)
            if request is None or request.status in ("queued", "signing"):
                continue
            if request.status == "failed":
                _finish(item, "failed", now, request.reason or "the issuer refused the request")
            else:
                item.status, item.new_certificate_id = "issued", request.certificate_id
        if item.status in ("issued", "delivered"):
            _follow_delivery(item, latest.get(item.new_certificate_id or 0), now, delivered)
        if (item.status, item.finished_at) != before:
            item.updated_at = now
            finished += item.finished_at is not None
    return finished


def _follow_delivery(
    item: CampaignItem, delivery: Delivery | None, now: dt.datetime, delivered: set[int]
) -> None:
    """`delivered`: the items whose host has a delivery method."""
    if delivery is None:
        if item.id not in delivered:
            _finish(item, "issued", now)  # nothing delivers it: issued is as far as it goes
        return
    if delivery.status == "failed":
        _finish(item, "failed", now, delivery.last_error or "delivery failed")
    elif delivery.status == "verified":
        _finish(item, "verified", now)
    elif delivery.status in ("delivered", "installed"):
        item.status = "delivered"
        if delivery.probe_state == "none":
            _finish(item, "delivered", now)  # no endpoint to probe: delivered is the last word
        elif delivery.probe_state == "mismatch" and delivery.probe_attempts >= MAX_PROBES:
            _finish(item, "delivered", now, delivery.last_error or "renewed but not bound")


def _finish(item: CampaignItem, status: str, now: dt.datetime, error: str | None = None) -> None:
    item.status, item.finished_at, item.error = status, now, error


def _pause_on_failures(session: Session, campaign: Campaign, now: dt.datetime) -> None:
    if campaign.status != "running":
        return
    failed = _count(session, campaign, CampaignItem.status == "failed")
    if failed >= campaign.max_failures:
        reason = (
            f"paused after {failed} failed hosts (max_failures {campaign.max_failures}): "
            "fix the cause, then resume with retry_failed"
        )
        _pause(session, campaign, reason, now, failed=failed)


def _record(session: Session, campaign: Campaign, what: str, now: dt.datetime, **data: Any) -> None:
    events.record(
        session, f"campaign.{what}", ACTOR, at=now, subject=("campaign", campaign.id), **data
    )


def _pause(
    session: Session, campaign: Campaign, reason: str, now: dt.datetime, **data: Any
) -> None:
    campaign.status, campaign.reason = "paused", reason
    _record(session, campaign, "paused", now, **data)


def _end(session: Session, campaign: Campaign, status: str, now: dt.datetime) -> None:
    """Nothing more to do or watch: `finished` (completed or cancelled) or `failed`."""
    campaign.status, campaign.finished_at = status, now
    what = "failed" if status == "failed" else "finished"
    _record(session, campaign, what, now, status=status)


def _count(session: Session, campaign: Campaign, *where: object) -> int:
    return int(
        session.scalar(
            select(func.count(CampaignItem.id)).where(
                CampaignItem.campaign_id == campaign.id,
                *where,  # type: ignore[arg-type]
            )
        )
        or 0
    )


def _finish_if_done(session: Session, campaign: Campaign, now: dt.datetime) -> bool:
    if _count(session, campaign, CampaignItem.finished_at.is_(None)):
        return False
    _end(session, campaign, "cancelled" if campaign.status == "cancelled" else "completed", now)
    return True


# --- 3. rotation ---------------------------------------------------------------------------


def _rotate(
    session: Session, campaign: Campaign, now: dt.datetime, messages: list[contracts.Message]
) -> None:
    if campaign.status == "cancelled":
        _finish_if_done(session, campaign, now)  # the CAs stay as they are: both trusted
        return
    if campaign.status != "running":
        return
    old = session.get_one(Authority, campaign.authority_id)
    new = session.get_one(Authority, campaign.new_authority_id)
    if campaign.phase == "create_authority":
        _await_authority(session, campaign, new, now, messages)
    if campaign.phase == "trust":
        _await_trust(session, campaign, old, new, now, messages)
    if campaign.phase == "reissue":
        _await_reissue(session, campaign, now)
    if campaign.phase == "retire":
        _retire(session, campaign, old, now, messages)


def _phase(session: Session, campaign: Campaign, phase: str, now: dt.datetime, **data: Any) -> None:
    _record(session, campaign, "phase", now, phase=phase, previous=campaign.phase, **data)
    campaign.phase = phase


def _await_authority(
    session: Session,
    campaign: Campaign,
    new: Authority,
    now: dt.datetime,
    messages: list[contracts.Message],
) -> None:
    if new.status == "failed":
        campaign.reason = f"the new authority {new.name!r} could not be made: {new.reason}"
        _end(session, campaign, "failed", now)
    elif new.status == "pending" and now - new.created_at > AUTHORITY_RESEND:
        messages.append(contracts.create_authority(new.id))  # its message may have been lost
    elif new.status == "active":
        _phase(session, campaign, "trust", now, authority=new.name)


def _await_trust(
    session: Session,
    campaign: Campaign,
    old: Authority,
    new: Authority,
    now: dt.datetime,
    messages: list[contracts.Message],
) -> None:
    """Every client must be able to validate leaves of both CAs before any leaf changes."""
    clients = client_host_ids(session)
    current = fingerprint_of(trust_bundle_pem(session))
    if current != campaign.trust_fingerprint:
        campaign.trust_fingerprint = current
        for chunk in contracts.chunked(clients, contracts.MAX_IDS_PER_MESSAGE):
            messages.append(contracts.distribute_trust(chunk))
    acked = acknowledged(session, clients, current)
    share = acked / len(clients) if clients else 1.0
    if share + 1e-9 < campaign.ack_share:
        campaign.reason = (
            f"waiting for the trust bundle: {acked} of {len(clients)} clients hold it "
            f"({share:.0%}, need {campaign.ack_share:.0%})"
        )
        return
    resolved = resolve(session, Selector.from_json(campaign.selector, ROTATE))
    sites = rotation_sites(session, resolved)
    for site in sites:
        site.authority_id = new.id
    if not session.scalar(select(func.count(Site.id)).where(Site.authority_id == old.id)):
        old.status = "retiring"  # still trusted, no longer issuing
    added = add_items(
        session, campaign, Resolved(resolved.selector, tuple(s.id for s in sites), (), old), now
    )
    campaign.reason = None
    _phase(
        session,
        campaign,
        "reissue",
        now,
        acknowledged=acked,
        clients=len(clients),
        sites=[s.name for s in sites],
        certificates=added,
    )


def acknowledged(session: Session, clients: list[int], trust_fingerprint: str) -> int:
    if not clients:
        return 0
    return int(
        session.scalar(
            select(func.count(func.distinct(Delivery.host_id))).where(
                Delivery.kind == "trust",
                Delivery.trust_fingerprint == trust_fingerprint,
                Delivery.status.in_(ACKED),
                Delivery.host_id.in_(clients),
            )
        )
        or 0
    )


def _await_reissue(session: Session, campaign: Campaign, now: dt.datetime) -> None:
    if _count(session, campaign, CampaignItem.finished_at.is_(None)):
        return
    left = _count(session, campaign, CampaignItem.status.in_(("failed", "skipped")))
    unbound = _count(
        session, campaign, CampaignItem.error.is_not(None), CampaignItem.status == "delivered"
    )
    if left:
        reason = (
            f"{left} certificate(s) could not be re-issued under the new authority: the old "
            "one stays trusted until they are. Fix the cause, then resume with retry_failed"
        )
        _pause(session, campaign, reason, now)
        return
    _phase(session, campaign, "retire", now, unbound=unbound)


def _retire(
    session: Session,
    campaign: Campaign,
    old: Authority,
    now: dt.datetime,
    messages: list[contracts.Message],
) -> None:
    sites_left = list(session.scalars(select(Site.name).where(Site.authority_id == old.id)))
    if sites_left:
        campaign.reason = (
            f"authority {old.name!r} is kept: sites {', '.join(sites_left)} still issue from it"
        )
    else:
        resolved = Resolved(Selector(), (), (), old)
        late = add_items(session, campaign, resolved, now) if _old_leaves(session, old) else 0
        if late:
            # Signed by the old CA while the sites switched: re-issue those too, then retire.
            _phase(session, campaign, "reissue", now, late_certificates=late)
            return
        old.status = "retired"
        clients = client_host_ids(session)
        for chunk in contracts.chunked(clients, contracts.MAX_IDS_PER_MESSAGE):
            messages.append(contracts.distribute_trust(chunk))
        events.record(session, "authority.retired", ACTOR, at=now, subject=("authority", old.id))
    _phase(session, campaign, "done", now, retired=not sites_left)
    _end(session, campaign, "completed", now)


def _old_leaves(session: Session, old: Authority) -> int:
    return int(
        session.scalar(
            select(func.count(Certificate.id)).where(
                Certificate.authority_id == old.id, Certificate.status == "active"
            )
        )
        or 0
    )


# --- 4. dispatch ---------------------------------------------------------------------------


def _dispatch(session: Session, campaign: Campaign, now: dt.datetime) -> list[IssuanceRequest]:
    budget = (
        PENDING_SCAN  # unthrottled: as many as one run looks at
        if campaign.rate_per_minute is None
        else campaign.rate_per_minute
        - _count(session, campaign, CampaignItem.started_at > now - RATE_WINDOW)
    )
    if budget <= 0:
        return []
    in_flight = dict(
        session.execute(
            select(CampaignItem.site_id, func.count(CampaignItem.id))
            .where(
                CampaignItem.campaign_id == campaign.id,
                CampaignItem.status.in_(IN_FLIGHT),
                CampaignItem.finished_at.is_(None),
            )
            .group_by(CampaignItem.site_id)
        ).all()
    )
    pending = session.execute(
        select(CampaignItem, Certificate, Host, Site)
        .join(Certificate, Certificate.id == CampaignItem.certificate_id)
        .join(Host, Host.id == CampaignItem.host_id)
        .join(Site, Site.id == Host.site_id)
        .where(CampaignItem.campaign_id == campaign.id, CampaignItem.status == "pending")
        .order_by(Certificate.not_after, CampaignItem.id)
        .limit(PENDING_SCAN)
    ).all()
    slots: dict[int, int] = {}
    rows: dict[int, tuple[CampaignItem, Certificate]] = {}
    candidates: list[Candidate] = []
    for item, certificate, host, site in pending:
        if site.id not in slots:
            open_now = not campaign.respect_windows or _window_open(site, now)
            free = campaign.per_site_concurrency - in_flight.get(site.id, 0)
            slots[site.id] = free if open_now else 0
        if slots[site.id] <= 0 or host.id in rows:
            continue
        rows[host.id] = (item, certificate)
        candidates.append(
            Candidate(
                host_id=host.id,
                host_name=host.name,
                site_id=site.id,
                roles=tuple(host.roles),
                failover_for=tuple(host.failover_for or ()),
                due_at=certificate.not_after,
            )
        )
    if not candidates:
        return []
    covering = covering_failovers(session, {c.site_id for c in candidates})
    candidates = [
        dataclasses.replace(c, covered_by=tuple(covering.get(c.host_name, ()))) for c in candidates
    ]
    batch = choose_batch(
        candidates,
        per_site_limit=max(slots.values()),
        busy_host_names=busy_host_names(session),
    )
    chosen: list[tuple[CampaignItem, Certificate]] = []
    for candidate in batch:
        if budget <= 0:
            break
        if slots[candidate.site_id] <= 0:
            continue
        slots[candidate.site_id] -= 1
        budget -= 1
        chosen.append(rows[candidate.host_id])
    claimed = _claim(session, [item.id for item, _ in chosen], now)
    return _start(session, campaign, [(i, c) for i, c in chosen if i.id in claimed], now)


def _window_open(site: Site, now: dt.datetime) -> bool:
    window = site_window(site)
    return window is None or window.is_open(now)


def _claim(session: Session, item_ids: list[int], now: dt.datetime) -> set[int]:
    """pending -> queued by one conditional update: of two runs at once, each item goes to
    one. Returns the items this run claimed (their objects in the session are updated)."""
    if not item_ids:
        return set()
    claimed = session.execute(
        update(CampaignItem)
        .where(CampaignItem.id.in_(item_ids), CampaignItem.status == "pending")
        .values(status="queued", started_at=now, updated_at=now)
        .returning(CampaignItem.id)
        .execution_options(synchronize_session="fetch")
    )
    return {row[0] for row in claimed.all()}


def _start(
    session: Session,
    campaign: Campaign,
    claimed: list[tuple[CampaignItem, Certificate]],
    now: dt.datetime,
) -> list[IssuanceRequest]:
    """Renew the claimed items' certificates; returns the new requests. A certificate
    already replaced is followed to its successor, one already being renewed is followed to
    that renewal; the rest get new requests in one go."""
    # Into the session, what the checks below read: a query each rather than one per item.
    successors = [c.superseded_by_id for _, c in claimed if c.superseded_by_id]
    if successors:
        session.scalars(select(Certificate).where(Certificate.id.in_(successors))).all()
    renewals = [c.renewal_request_id for _, c in claimed if c.renewal_request_id]
    if renewals:
        session.scalars(select(IssuanceRequest).where(IssuanceRequest.id.in_(renewals))).all()
    renew: list[tuple[CampaignItem, Certificate]] = []
    for item, certificate in claimed:
        if certificate.status != "active":
            successor = (
                session.get(Certificate, certificate.superseded_by_id)
                if certificate.superseded_by_id
                else None
            )
            wanted = campaign.new_authority_id if campaign.kind == ROTATE else None
            if successor is not None and wanted in (None, successor.authority_id):
                item.status, item.new_certificate_id = "issued", successor.id
            else:
                reason = f"certificate {certificate.id} is {certificate.status}"
                _finish(item, "skipped", now, reason)
            continue
        if certificate.renewal_request_id is not None:
            running = session.get(IssuanceRequest, certificate.renewal_request_id)
            if running is not None and running.status in ("queued", "signing"):
                item.request_id = running.id  # already being renewed: follow that renewal
                continue
        renew.append((item, certificate))
    requests = renewal_requests(
        session,
        [c for _, c in renew],
        actor=f"campaign:{campaign.id}",
        now=now,
        campaign_id=campaign.id,
    )
    started: list[IssuanceRequest] = []
    for item, certificate in renew:
        request = requests[certificate.id]
        if isinstance(request, CertfleetError):
            _finish(item, "failed", now, request.message)
            continue
        item.request_id = request.id
        started.append(request)
    return started
