"""Expiry notices: which are due (`due_notices`, read-only) and sending each exactly once
(`record_and_send`, through the Notice ledger). `scan` does both; the watcher's task calls it.

Notices and their subjects:
    expires_in_{N}d / expired   ("certificate", id)  N from the channel's thresholds; 0 = expired
    renewal_failed              ("certificate", id)  its latest renewal request failed
    unbound                     ("delivery", id)     installed, but the host's final probe
                                                     verdict is another certificate
    ca_expires_before_leaves    ("authority", id)    an active authority expires before an
                                                     active leaf it issued

Policy, in order, for a certificate (active, superseded or expired, with not_after inside
[now - EXPIRED_LOOKBACK, now + the largest threshold]) and each enabled channel routed to its
site (channel.site_id None or the host's site):
1. a newer active certificate of the same host that is settled (delivery verified, or
   delivered with nothing to probe, or the host has no delivery method: issued is enough)
   silences it completely: a replaced certificate is never nagged about. A superseded one whose
   replacement is not settled yet is still what the host presents, so it is still watched;
2. the most urgent threshold crossed is the notice; the less urgent ones not yet in the ledger
   are recorded `skipped`, so a certificate first seen with 5 days left sends 7d only, once;
3. a renewal in flight (renewal_request_id queued or signing) silences all but `expired`;
4. a muted channel or site (muted_until > now) records the threshold crossed meanwhile as
   `skipped` and sends nothing: after the mute ends, only thresholds crossed later are sent.
   `expired` and the event notices are not recorded while muted, so they go out after the
   mute if they still hold.
The event notices ignore thresholds and renewals in flight; `ca_expires_before_leaves` goes to
global channels and to the channels of every site the authority signs for (a site mute holds
back only that site's channels). `renewal_failed` looks back FAILURE_LOOKBACK; `unbound` waits
for the distributor's final probe verdict (MAX_PROBES), as its `delivery.unbound` event does.

Every query is bounded by an index: certificates by (status, not_after) and (host_id, status),
deliveries by certificate_id and (status, ...), issuance requests by (status, updated_at), the
ledger by its unique (subject_type, subject_id, ...). Channels and muted sites are small tables.

Ledger statuses: `sending` (claimed by one scanner), `sent`, `pending` (a retryable failure,
tried again RETRY_AFTER after the row was created, MAX_ATTEMPTS in all), `failed`, `skipped`
(why, in last_error).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.expiry_watcher.channels import (
    Channel,
    ChannelError,
    ChannelFactory,
    ChannelSpec,
    NoticeMessage,
)
from shared import events
from shared.clock import Clock, days_left
from shared.db.models import (
    Authority,
    Certificate,
    Delivery,
    Host,
    IssuanceRequest,
    Notice,
    NotificationChannel,
    Site,
)
from shared.db.session import Database
from shared.deliveries import MAX_PROBES

log = logging.getLogger(__name__)

ACTOR = "expiry-watcher"
MAX_ATTEMPTS = 5
# Attempt n+2 is due RETRY_AFTER[n] after the row was created: an outage of the relay is
# ridden out for two hours whatever the scan interval.
RETRY_AFTER = tuple(dt.timedelta(minutes=m) for m in (1, 5, 30, 120))
EXPIRED_LOOKBACK = dt.timedelta(days=30)
FAILURE_LOOKBACK = dt.timedelta(days=30)
PAGE = 500
DEFAULT_LIMIT = 200
DAY = dt.timedelta(days=1)
SETTLED = or_(
    Delivery.status == "verified",
    and_(Delivery.status.in_(("delivered", "installed")), Delivery.probe_state == "none"),
)


@dataclass(frozen=True)
class PlannedNotice:
    """One notice to one channel. `skip`: less urgent notices of the same subject and channel
    to record as skipped with it; `muted`: record everything as skipped, send nothing."""

    subject_type: str
    subject_id: int
    channel_id: int
    notice: str
    message: NoticeMessage
    site_id: int | None = None
    host_id: int | None = None
    skip: tuple[str, ...] = ()
    muted: bool = False


@dataclass
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0  # recorded as skipped because muted
    not_claimed: int = 0  # another scanner has it, or the channel is gone
    deferred: int = 0  # its channel failed earlier in this run: left for the next scan


@dataclass(frozen=True)
class _Route:
    id: int
    site_id: int | None
    thresholds: tuple[int, ...]  # ascending: most urgent first
    muted: bool


Ledger = dict[tuple[int, int, str], Notice]


# --- what is due ----------------------------------------------------------------------------


def due_notices(session: Session, now: dt.datetime, *, limit: int) -> list[PlannedNotice]:
    """Up to `limit` notices that are due now and not in the ledger (or pending and due for a
    retry), event notices first, then certificates by urgency. Reads only."""
    routes = [
        _Route(c.id, c.site_id, tuple(sorted(set(c.thresholds))), _muted(c.muted_until, now))
        for c in session.scalars(select(NotificationChannel).where(NotificationChannel.enabled))
    ]
    if not routes:
        return []
    muted_sites = set(session.scalars(select(Site.id).where(Site.muted_until > now)))
    plans = chain(
        _renewal_failures(session, now, routes, muted_sites),
        _unbound(session, now, routes, muted_sites),
        _authorities(session, now, routes, muted_sites),
        _expiring(session, now, routes, muted_sites),
    )
    return list(islice(plans, limit))


def _muted(until: dt.datetime | None, now: dt.datetime) -> bool:
    return until is not None and until > now


def _routes_for(routes: Sequence[_Route], site_id: int) -> Iterator[_Route]:
    return (r for r in routes if r.site_id is None or r.site_id == site_id)


def _ledger(session: Session, subject_type: str, ids: Iterable[int]) -> Ledger:
    rows = session.scalars(
        select(Notice).where(Notice.subject_type == subject_type, Notice.subject_id.in_(ids))
    )
    return {(n.subject_id, n.channel_id, n.notice): n for n in rows}


def retry_due(row: Notice, now: dt.datetime) -> bool:
    if row.status != "pending" or row.attempts >= MAX_ATTEMPTS:
        return False
    return now >= row.created_at + RETRY_AFTER[max(row.attempts, 1) - 1]


def _wanted(ledger: Ledger, key: tuple[int, int, str], now: dt.datetime) -> bool:
    row = ledger.get(key)
    return row is None or retry_due(row, now)


def _open(ledger: Ledger, key: tuple[int, int, str]) -> bool:
    """Not in the ledger, or only pending: a notice that may still be marked skipped."""
    row = ledger.get(key)
    return row is None or row.status == "pending"


def _pages(session: Session, query: Select[*tuple[Any, ...]]) -> Iterator[list[Any]]:
    """Keyset pages of `query`, whose first column is a unique, increasing key."""
    key = query.selected_columns[0]
    last = 0
    while True:
        rows = list(session.execute(query.where(key > last).order_by(key).limit(PAGE)))
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        last = rows[-1][0]


def _expiring(
    session: Session, now: dt.datetime, routes: Sequence[_Route], muted_sites: set[int]
) -> Iterator[PlannedNotice]:
    horizon = max((max(r.thresholds) for r in routes if r.thresholds), default=None)
    if horizon is None:
        return
    query = (
        select(
            Certificate.id,
            Certificate.host_id,
            Certificate.not_after,
            Certificate.serial,
            Certificate.common_name,
            Certificate.status,
            Certificate.renewal_request_id,
            Host.name.label("host"),
            Host.site_id,
            Host.delivery,
            Site.name.label("site"),
        )
        .join(Host, Host.id == Certificate.host_id)
        .join(Site, Site.id == Host.site_id)
        .where(
            Certificate.status.in_(("active", "superseded", "expired")),
            Certificate.not_after <= now + horizon * DAY,
            Certificate.not_after > now - EXPIRED_LOOKBACK,
        )
        .order_by(Certificate.not_after, Certificate.id)
        .limit(PAGE)
    )
    after: tuple[dt.datetime, int] | None = None
    while True:
        page_query = query
        if after is not None:
            page_query = query.where(
                or_(
                    Certificate.not_after > after[0],
                    and_(Certificate.not_after == after[0], Certificate.id > after[1]),
                )
            )
        page = list(session.execute(page_query))
        if page:
            yield from _expiring_page(session, now, page, routes, muted_sites)
        if len(page) < PAGE:
            return
        after = (page[-1].not_after, page[-1].id)


def _expiring_page(
    session: Session,
    now: dt.datetime,
    page: Sequence[Any],
    routes: Sequence[_Route],
    muted_sites: set[int],
) -> Iterator[PlannedNotice]:
    replaced, unsettled = _replacements(session, page)
    in_flight = set(
        session.scalars(
            select(IssuanceRequest.id).where(
                IssuanceRequest.id.in_(
                    [r.renewal_request_id for r in page if r.renewal_request_id]
                ),
                IssuanceRequest.status.in_(("queued", "signing")),
            )
        )
    )
    ledger = _ledger(session, "certificate", [r.id for r in page])
    for row in page:
        if row.id in replaced:
            continue
        for route in _routes_for(routes, row.site_id):
            crossed = [n for n in route.thresholds if row.not_after <= now + n * DAY]
            if not crossed:
                continue
            name, rest = notice_name(crossed[0]), [notice_name(n) for n in crossed[1:]]
            muted = route.muted or row.site_id in muted_sites
            if name != "expired" and row.renewal_request_id in in_flight:
                continue
            if (muted and name == "expired") or not _wanted(ledger, (row.id, route.id, name), now):
                continue
            skip = [n for n in rest if _open(ledger, (row.id, route.id, n))]
            yield PlannedNotice(
                "certificate",
                row.id,
                route.id,
                name,
                _expiry_message(name, row, now, unsettled.get(row.id)),
                site_id=row.site_id,
                host_id=row.host_id,
                skip=tuple(skip),
                muted=muted,
            )


def notice_name(threshold: int) -> str:
    return "expired" if threshold <= 0 else f"expires_in_{threshold}d"


def _replacements(session: Session, page: Sequence[Any]) -> tuple[set[int], dict[int, int]]:
    """Which certificates of the page have a newer active certificate on their host that is
    settled (they are silenced), and which have one that is not settled yet (its ID)."""
    actives = session.execute(
        select(Certificate.id, Certificate.host_id, Certificate.not_after).where(
            Certificate.host_id.in_({r.host_id for r in page}), Certificate.status == "active"
        )
    ).all()
    settled = set(
        session.scalars(
            select(Delivery.certificate_id).where(
                Delivery.certificate_id.in_([a.id for a in actives]), SETTLED
            )
        )
    )
    replaced: set[int] = set()
    unsettled: dict[int, int] = {}
    for row in page:
        no_method = (row.delivery or {}).get("method", "none") == "none"
        for newer in actives:
            if newer.host_id != row.host_id or newer.id <= row.id:
                continue
            if newer.not_after <= row.not_after:
                continue
            if no_method or newer.id in settled:
                replaced.add(row.id)
            else:
                unsettled[row.id] = newer.id
    return replaced, unsettled


def _event_plans(
    session: Session,
    now: dt.datetime,
    subject_type: str,
    notice: str,
    rows: Sequence[Any],
    targets: Any,
) -> Iterator[PlannedNotice]:
    """Plans for event notices: `targets(row)` gives (route, muted) pairs for a row."""
    ledger = _ledger(session, subject_type, [r.key for r in rows])
    for row in rows:
        for route, muted in targets(row):
            if muted or not _wanted(ledger, (row.key, route.id, notice), now):
                continue
            yield PlannedNotice(
                subject_type,
                row.key,
                route.id,
                notice,
                _event_message(notice, row),
                site_id=getattr(row, "site_id", None),
                host_id=getattr(row, "host_id", None),
            )


def _site_targets(routes: Sequence[_Route], muted_sites: set[int]) -> Any:
    def targets(row: Any) -> Iterator[tuple[_Route, bool]]:
        for route in _routes_for(routes, row.site_id):
            yield route, route.muted or row.site_id in muted_sites

    return targets


def _renewal_failures(
    session: Session, now: dt.datetime, routes: Sequence[_Route], muted_sites: set[int]
) -> Iterator[PlannedNotice]:
    query = (
        select(
            Certificate.id.label("key"),
            Certificate.host_id,
            Certificate.not_after,
            Certificate.serial,
            Certificate.renewal_attempts,
            IssuanceRequest.id.label("request_id"),
            IssuanceRequest.reason,
            Host.name.label("host"),
            Host.site_id,
            Site.name.label("site"),
        )
        .select_from(IssuanceRequest)
        .join(
            Certificate,
            and_(
                Certificate.host_id == IssuanceRequest.host_id,
                Certificate.status == "active",
                Certificate.renewal_request_id == IssuanceRequest.id,
            ),
        )
        .join(Host, Host.id == Certificate.host_id)
        .join(Site, Site.id == Host.site_id)
        .where(
            IssuanceRequest.status == "failed",
            IssuanceRequest.updated_at >= now - FAILURE_LOOKBACK,
            Certificate.renewal_attempts > 0,
        )
    )
    for page in _pages(session, query):
        yield from _event_plans(
            session, now, "certificate", "renewal_failed", page, _site_targets(routes, muted_sites)
        )


def _unbound(
    session: Session, now: dt.datetime, routes: Sequence[_Route], muted_sites: set[int]
) -> Iterator[PlannedNotice]:
    """Only the distributor's final verdict: a first probe right after installation often
    sees the old certificate while the Milestone services restart."""
    query = (
        select(
            Delivery.id.label("key"),
            Delivery.host_id,
            Delivery.method,
            Delivery.presented_fingerprint,
            Certificate.id.label("certificate_id"),
            Certificate.fingerprint,
            Certificate.not_after,
            Host.name.label("host"),
            Host.site_id,
            Site.name.label("site"),
        )
        .join(Certificate, Certificate.id == Delivery.certificate_id)
        .join(Host, Host.id == Delivery.host_id)
        .join(Site, Site.id == Host.site_id)
        .where(
            Delivery.status.in_(("delivered", "installed")),
            Delivery.kind == "certificate",
            Delivery.probe_state == "mismatch",
            Delivery.probe_attempts >= MAX_PROBES,
            Certificate.status == "active",
        )
    )
    for page in _pages(session, query):
        yield from _event_plans(
            session, now, "delivery", "unbound", page, _site_targets(routes, muted_sites)
        )


def _authorities(
    session: Session, now: dt.datetime, routes: Sequence[_Route], muted_sites: set[int]
) -> Iterator[PlannedNotice]:
    rows = session.execute(
        select(
            Authority.id.label("key"),
            Authority.name,
            Authority.not_after,
            func.max(Certificate.not_after).label("latest_leaf"),
            func.count(Certificate.id).label("leaves"),
        )
        .join(Certificate, Certificate.authority_id == Authority.id)
        .where(
            Authority.status == "active",
            Certificate.status == "active",
            Certificate.not_after > Authority.not_after,
        )
        .group_by(Authority.id, Authority.name, Authority.not_after)
        .order_by(Authority.id)
    ).all()
    if not rows:
        return
    sites: dict[int, set[int]] = {}
    for site_id, authority_id in session.execute(
        select(Site.id, Site.authority_id).where(Site.authority_id.in_([r.key for r in rows]))
    ):
        sites.setdefault(authority_id, set()).add(site_id)

    def targets(row: Any) -> Iterator[tuple[_Route, bool]]:
        for route in routes:
            if route.site_id is None:
                yield route, route.muted
            elif route.site_id in sites.get(row.key, set()):
                yield route, route.muted or route.site_id in muted_sites

    yield from _event_plans(session, now, "authority", "ca_expires_before_leaves", rows, targets)


# --- what the notices say -------------------------------------------------------------------


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _days(days: int) -> str:
    return "less than a day" if days < 1 else f"{days} day{'s' if days != 1 else ''}"


def _message(headline: str, data: dict[str, Any], hint: str) -> NoticeMessage:
    data = {k: v for k, v in data.items() if v is not None}
    facts = "\n".join(f"{k}: {v}" for k, v in data.items())
    return NoticeMessage(f"[certfleet] {headline}", f"{headline}.\n\n{facts}\n\n{hint}\n", data)


def _expiry_message(
    name: str, row: Any, now: dt.datetime, replacement: int | None
) -> NoticeMessage:
    left = row.not_after - now
    if left <= dt.timedelta(0):
        headline = f"{row.host}: the certificate expired on {_when(row.not_after)}"
        hint = "XProtect refuses an expired certificate: renew and deliver a new one now."
    else:
        days = _days(days_left(row.not_after, now))
        headline = f"{row.host}: the certificate expires on {_when(row.not_after)} (in {days})"
        hint = "certfleet renews when due; check the site's maintenance window and renewals."
    if replacement is not None:
        hint = f"Its replacement (certificate {replacement}) is not verified on the host yet."
    data = {
        "notice": name,
        "site": row.site,
        "host": row.host,
        "certificate_id": row.id,
        "serial": row.serial,
        "common_name": row.common_name,
        "not_after": row.not_after.isoformat(),
        "days_left": days_left(row.not_after, now),
        "replacement_certificate_id": replacement,
    }
    return _message(headline, data, hint)


def _event_message(notice: str, row: Any) -> NoticeMessage:
    if notice == "renewal_failed":
        headline = f"{row.host}: renewing the certificate failed (attempt {row.renewal_attempts})"
        hint = "certfleet retries within hours; the reason says what to fix."
        data = {
            "certificate_id": row.key,
            "serial": row.serial,
            "not_after": row.not_after.isoformat(),
            "renewal_attempts": row.renewal_attempts,
            "request_id": row.request_id,
            "reason": (row.reason or "")[:300] or None,
        }
    elif notice == "unbound":
        headline = f"{row.host}: the renewed certificate is installed but not bound"
        hint = "Bind it in the Milestone Server Configurator, or restart the services."
        data = {
            "delivery_id": row.key,
            "method": row.method,
            "certificate_id": row.certificate_id,
            "fingerprint": row.fingerprint,
            "presented_fingerprint": row.presented_fingerprint,
            "not_after": row.not_after.isoformat(),
        }
    else:
        headline = (
            f"authority {row.name} expires on {_when(row.not_after)}, before "
            f"{row.leaves} certificate(s) it issued"
        )
        hint = "Leaves stop validating when their CA expires: rotate the authority and renew."
        data = {
            "authority_id": row.key,
            "authority": row.name,
            "not_after": row.not_after.isoformat(),
            "latest_leaf_not_after": row.latest_leaf.isoformat(),
            "leaves": row.leaves,
        }
    where = {"site": getattr(row, "site", None), "host": getattr(row, "host", None)}
    return _message(headline, {"notice": notice, **where, **data}, hint)


# --- sending, exactly once ------------------------------------------------------------------


def record_and_send(
    db: Database,
    planned: Sequence[PlannedNotice],
    channels_factory: ChannelFactory,
    now: dt.datetime,
) -> SendReport:
    """Claim each planned notice in the ledger, committed, before sending it: a new row is
    inserted as `sending` (the unique constraint lets one scanner win), a `pending` row due
    for a retry is taken with a conditional update. A row `sent`, `failed`, `skipped` or being
    sent by someone else is never sent again. A scanner that dies mid-send leaves its row
    `sending`: that notice is not repeated (at most once)."""
    report = SendReport()
    specs = _specs(db, {p.channel_id for p in planned})
    channels: dict[int, Channel] = {}
    failing: set[int] = set()
    for plan in planned:
        spec = specs.get(plan.channel_id)
        if spec is None:
            report.not_claimed += 1
        elif plan.muted:
            for name in (plan.notice, *plan.skip):
                _record_skipped(db, plan, name, "muted", now)
            report.skipped += 1
        elif plan.channel_id in failing:
            report.deferred += 1
        elif (notice_id := _claim(db, plan, now)) is None:
            report.not_claimed += 1
        else:
            for name in plan.skip:
                _record_skipped(db, plan, name, f"{plan.notice} was due first", now)
            error = _send(channels, channels_factory, spec, plan.message)
            outcome = _finish(db, notice_id, plan, error, now)
            setattr(report, outcome, getattr(report, outcome) + 1)
            if error is not None and error.retryable:
                failing.add(plan.channel_id)
    return report


def scan(
    db: Database, clock: Clock, channels_factory: ChannelFactory, *, limit: int = DEFAULT_LIMIT
) -> SendReport:
    """Plan and send what is due now. Idempotent: safe to run twice, or twice at once."""
    now = clock.now()
    with db.session() as session:
        planned = due_notices(session, now, limit=limit)
    return record_and_send(db, planned, channels_factory, now)


def _specs(db: Database, ids: set[int]) -> dict[int, ChannelSpec]:
    with db.session() as session:
        rows = session.scalars(
            select(NotificationChannel).where(
                NotificationChannel.id.in_(ids), NotificationChannel.enabled
            )
        )
        return {r.id: ChannelSpec(r.id, r.name, r.kind, r.target, dict(r.settings)) for r in rows}


def _key(plan: PlannedNotice, name: str) -> Any:
    return and_(
        Notice.subject_type == plan.subject_type,
        Notice.subject_id == plan.subject_id,
        Notice.channel_id == plan.channel_id,
        Notice.notice == name,
    )


def _insert(db: Database, plan: PlannedNotice, name: str, **values: Any) -> int | None:
    row = Notice(
        subject_type=plan.subject_type,
        subject_id=plan.subject_id,
        channel_id=plan.channel_id,
        notice=name,
        **values,
    )
    try:
        with db.session() as session:
            session.add(row)
            session.flush()
            return row.id
    except IntegrityError:
        return None


def _claim(db: Database, plan: PlannedNotice, now: dt.datetime) -> int | None:
    inserted = _insert(db, plan, plan.notice, status="sending", attempts=1, created_at=now)
    if inserted is not None:
        return inserted
    with db.session() as session:
        row = session.scalar(select(Notice).where(_key(plan, plan.notice)))
        if row is None or not retry_due(row, now):
            return None
        claimed = session.execute(
            update(Notice)
            .where(Notice.id == row.id, Notice.status == "pending", Notice.attempts == row.attempts)
            .values(status="sending", attempts=Notice.attempts + 1)
            .returning(Notice.id)
        ).first()
        return claimed[0] if claimed else None


def _record_skipped(
    db: Database, plan: PlannedNotice, name: str, why: str, now: dt.datetime
) -> None:
    """Skipped for good; a pending row (a failed earlier try) is skipped too."""
    reason = f"skipped: {why}"
    if _insert(db, plan, name, status="skipped", last_error=reason, created_at=now) is None:
        with db.session() as session:
            session.execute(
                update(Notice)
                .where(_key(plan, name), Notice.status == "pending")
                .values(status="skipped", last_error=reason)
            )


def _send(
    channels: dict[int, Channel], factory: ChannelFactory, spec: ChannelSpec, message: NoticeMessage
) -> ChannelError | None:
    try:
        if spec.id not in channels:
            channels[spec.id] = factory(spec)
        channels[spec.id].send(message)
    except ChannelError as exc:
        return exc
    except Exception as exc:  # a bug in a channel must not leave the row `sending`
        log.exception("notification channel crashed", extra={"fields": {"channel": spec.id}})
        return ChannelError(
            f"the channel failed unexpectedly: {type(exc).__name__}", retryable=True
        )
    return None


def _finish(
    db: Database, notice_id: int, plan: PlannedNotice, error: ChannelError | None, now: dt.datetime
) -> str:
    """Record the outcome and its Event; return the SendReport field to count it in."""
    with db.session() as session:
        row = session.get_one(Notice, notice_id)
        details: dict[str, Any] = {}
        if error is None:
            row.status, row.sent_at, row.last_error = "sent", now, None
            outcome = "sent"
        else:
            retrying = error.retryable and row.attempts < MAX_ATTEMPTS
            row.status = "pending" if retrying else "failed"
            row.last_error = error.message
            outcome = "retrying" if retrying else "failed"
            details = {"error": error.message, "retrying": retrying}
        events.record(
            session,
            "notice.sent" if error is None else "notice.failed",
            ACTOR,
            at=now,
            site_id=plan.site_id,
            host_id=plan.host_id,
            subject=(plan.subject_type, plan.subject_id),
            notice=plan.notice,
            channel_id=plan.channel_id,
            attempt=row.attempts,
            **details,
        )
    return outcome
