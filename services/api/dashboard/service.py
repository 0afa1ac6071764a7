"""What the dashboard shows, read for one reader: an operator scoped to a site sees only that
site's rows. Each page is a handful of grouped queries, whatever the size of the fleet."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Integer, and_, cast, exists, func, literal, select
from sqlalchemy.orm import Session, aliased

from services.api.auth import Principal
from shared import access
from shared.campaigns import counts as campaign_counts
from shared.db.models import (
    Authority,
    Campaign,
    Certificate,
    Delivery,
    Event,
    Host,
    Site,
)
from shared.db.types import UTCDateTime
from shared.pki.profiles import XPROTECT_SERVER

EXPIRING_DAYS = 30
# The timeline reaches the latest expiry of an active certificate, and at least the longest
# validity a site issues with (so a fleet of 397-day certificates is on it, whenever issued);
# never past about ten years, a root's lifetime, that no leaf outlives.
TIMELINE_MAX_WEEKS = 522
WEEK = dt.timedelta(weeks=1)
HOSTS_PER_PAGE = 200
EVENTS_PER_PAGE = 100


@dataclass
class SiteRow:
    name: str
    authority: str
    hosts: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    expiring: int = 0  # active, expiring within EXPIRING_DAYS
    expired: int = 0  # active but past not_after: clients refuse it now
    failed_deliveries: int = 0


def totals(rows: Sequence[SiteRow]) -> dict[str, int]:
    return {
        "active": sum(r.by_status.get("active", 0) for r in rows),
        "expiring": sum(r.expiring for r in rows),
        "expired": sum(r.expired for r in rows),
        "failed_deliveries": sum(r.failed_deliveries for r in rows),
    }


@dataclass(frozen=True)
class CaMark:
    name: str
    not_after: dt.datetime
    week: int | None  # the timeline's week it falls in; None: beyond the timeline


@dataclass(frozen=True)
class Timeline:
    start: dt.datetime
    weeks: list[int]  # active certificates expiring in each week from `start`
    overdue: int  # active certificates already expired
    cas: list[CaMark]

    @property
    def tallest(self) -> int:
        return max([*self.weeks, self.overdue, 1])


def _scoped(query: Any, column: Any, who: Principal) -> Any:
    """`query` limited to the reader's site (shared.access.scope; typed Any: a Select of any
    columns)."""
    return access.scope(query, column, who)


def sites(session: Session, who: Principal, now: dt.datetime) -> list[SiteRow]:
    rows = {
        site.id: SiteRow(site.name, authority)
        for site, authority in session.execute(
            _scoped(
                select(Site, Authority.name)
                .join(Authority, Site.authority_id == Authority.id)
                .order_by(Site.name),
                Site.id,
                who,
            )
        )
    }
    for site_id, number in session.execute(
        _scoped(select(Host.site_id, func.count()).group_by(Host.site_id), Host.site_id, who)
    ):
        rows[site_id].hosts = number
    active = Certificate.status == "active"
    soon = now + dt.timedelta(days=EXPIRING_DAYS)
    certificate_counts = (
        select(
            Host.site_id,
            Certificate.status,
            func.count(),
            func.count().filter(and_(active, Certificate.not_after <= soon)),
            func.count().filter(and_(active, Certificate.not_after <= now)),
        )
        .select_from(Certificate)
        .join(Host, Certificate.host_id == Host.id)
        .group_by(Host.site_id, Certificate.status)
    )
    for site_id, status, number, expiring, expired in session.execute(
        _scoped(certificate_counts, Host.site_id, who)
    ):
        row = rows[site_id]
        row.by_status[status] = number
        row.expiring += expiring
        row.expired += expired
    failed = (
        select(Host.site_id, func.count())
        .select_from(Delivery)
        .join(Host, Delivery.host_id == Host.id)
        .where(Delivery.status == "failed")
        .group_by(Host.site_id)
    )
    for site_id, number in session.execute(_scoped(failed, Host.site_id, who)):
        rows[site_id].failed_deliveries = number
    return list(rows.values())


def timeline_weeks(session: Session, who: Principal, now: dt.datetime) -> int:
    """How many weeks the timeline shows: up to the latest expiry of the reader's active
    certificates, and at least the longest validity of the reader's sites."""
    latest = session.scalar(
        _scoped(
            select(func.max(Certificate.not_after))
            .join(Host, Certificate.host_id == Host.id)
            .where(Certificate.status == "active"),
            Host.site_id,
            who,
        )
    )
    longest = (
        session.scalar(_scoped(select(func.max(Site.default_validity_days)), Site.id, who))
        or XPROTECT_SERVER.default_validity_days
    )
    span = max(dt.timedelta(days=longest), (latest - now) if latest else dt.timedelta(0))
    return max(1, min(TIMELINE_MAX_WEEKS, -(-span // WEEK)))


def timeline(session: Session, who: Principal, now: dt.datetime) -> Timeline:
    """Active certificates per week over the timeline's weeks, and the CAs' expiry. The
    weeks are counted in the database: a fleet of 250,000 certificates due within the year
    is one grouped query, not 250,000 rows read."""
    span = timeline_weeks(session, who, now)
    end = now + WEEK * span
    week = _week_of(session.get_bind().dialect.name, now).label("week")
    per_week = (
        select(week, func.count())
        .select_from(Certificate)
        .join(Host, Certificate.host_id == Host.id)
        .where(
            Certificate.status == "active",
            Certificate.not_after > now,
        )
        .group_by(week)
    )
    overdue = (
        select(func.count())
        .select_from(Certificate)
        .join(Host, Certificate.host_id == Host.id)
        .where(Certificate.status == "active", Certificate.not_after <= now)
    )
    weeks = [0] * span
    for index, number in session.execute(_scoped(per_week, Host.site_id, who)):
        weeks[min(int(index), span - 1)] += number  # past ten years: in the last week
    cas = [
        CaMark(name, not_after, int((not_after - now) / WEEK) if not_after < end else None)
        for name, not_after in session.execute(
            select(Authority.name, Authority.not_after)
            .where(Authority.status.in_(("active", "retiring")))
            .order_by(Authority.not_after)
        )
        if not_after is not None
    ]
    overdue_count = session.scalar(_scoped(overdue, Host.site_id, who)) or 0
    return Timeline(now, weeks, int(overdue_count), cas)


def _week_of(dialect: str, now: dt.datetime) -> Any:
    """The whole weeks from `now` to a certificate's not_after (a future one: truncating is
    then flooring), in the database's own date arithmetic."""
    if dialect == "postgresql":
        seconds = func.extract("epoch", Certificate.not_after - literal(now, UTCDateTime()))
        return cast(func.floor(seconds / WEEK.total_seconds()), Integer)
    # SQLite keeps naive UTC text (shared.db.types.UTCDateTime): julianday() reads it.
    start = now.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ")
    days = func.julianday(Certificate.not_after) - func.julianday(start)
    return cast(days / 7, Integer)


@dataclass(frozen=True)
class HostRow:
    host: Host
    site: str
    certificate: Certificate | None
    delivery: Delivery | None


# The hosts page's filters: what an operator looks for first.
PROBLEMS = {
    "no-certificate": "without an active certificate",
    "expiring": f"whose certificate expires within {EXPIRING_DAYS} days",
    "delivery-failed": "whose latest delivery failed",
    "not-bound": "renewed but not bound (the endpoint presents another certificate)",
}


def _problem(problem: str, now: dt.datetime) -> ColumnElement[bool]:
    """A filter on Host for one of PROBLEMS, evaluated in the database."""
    active = and_(Certificate.host_id == Host.id, Certificate.status == "active")
    if problem == "no-certificate":
        return ~exists().where(active)
    if problem == "expiring":
        soon = now + dt.timedelta(days=EXPIRING_DAYS)
        return exists().where(active, Certificate.not_after <= soon)
    newer = aliased(Delivery)
    latest = (
        select(func.max(newer.id))
        .where(newer.host_id == Host.id, newer.kind == "certificate")
        .correlate(Host)  # the hosts row of the page's query, two levels up
        .scalar_subquery()
    )
    condition = Delivery.status == "failed"
    if problem == "not-bound":
        condition = Delivery.probe_state == "mismatch"
    return exists().where(Delivery.id == latest, condition)


def hosts(
    session: Session,
    who: Principal,
    site: str | None,
    after_id: int,
    problem: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[list[HostRow], int | None]:
    """A page of hosts, each with its active certificate and the latest delivery of a
    certificate to it (its delivery and verification state); the next page's `after_id`.
    `problem` (one of PROBLEMS) keeps only the hosts that have it."""
    query = (
        select(Host, Site.name)
        .join(Site, Host.site_id == Site.id)
        .where(Host.id > after_id)
        .order_by(Host.id)
        .limit(HOSTS_PER_PAGE + 1)
    )
    if site:
        query = query.where(Site.name == site)
    if problem in PROBLEMS:
        query = query.where(_problem(problem, now or dt.datetime.now(dt.UTC)))
    found = [(host, name) for host, name in session.execute(_scoped(query, Host.site_id, who))]
    page, more = found[:HOSTS_PER_PAGE], len(found) > HOSTS_PER_PAGE
    host_ids = [h.id for h, _ in page]
    certificates = {
        c.host_id: c
        for c in session.scalars(
            select(Certificate).where(
                Certificate.host_id.in_(host_ids), Certificate.status == "active"
            )
        )
    }
    latest = (
        select(func.max(Delivery.id))
        .where(Delivery.host_id.in_(host_ids), Delivery.kind == "certificate")
        .group_by(Delivery.host_id)
    )
    delivered = {
        d.host_id: d for d in session.scalars(select(Delivery).where(Delivery.id.in_(latest)))
    }
    rows = [HostRow(h, name, certificates.get(h.id), delivered.get(h.id)) for h, name in page]
    return rows, (page[-1][0].id if more else None)


@dataclass(frozen=True)
class CampaignRow:
    campaign: Campaign
    counts: dict[str, int]

    @property
    def percent(self) -> int:
        total = self.counts.get("total", 0)
        return round(100 * self.counts.get("finished", 0) / total) if total else 100


def campaigns(session: Session, who: Principal, finished_shown: int = 5) -> list[CampaignRow]:
    """Unfinished campaigns, then the last few finished ones (a scoped reader: its site's)."""
    unfinished = session.scalars(
        _scoped(
            select(Campaign).where(Campaign.finished_at.is_(None)).order_by(Campaign.id.desc()),
            Campaign.site_id,
            who,
        )
    ).all()
    finished = session.scalars(
        _scoped(
            select(Campaign)
            .where(Campaign.finished_at.is_not(None))
            .order_by(Campaign.finished_at.desc())
            .limit(finished_shown),
            Campaign.site_id,
            who,
        )
    ).all()
    shown: Sequence[Campaign] = [*unfinished, *finished]
    numbers = campaign_counts(session, [c.id for c in shown])
    return [CampaignRow(c, numbers[c.id]) for c in shown]


def events(session: Session, who: Principal, before_id: int, limit: int) -> list[Event]:
    query = select(Event).order_by(Event.id.desc()).limit(limit)
    if before_id:
        query = query.where(Event.id < before_id)
    return list(session.scalars(_scoped(query, Event.site_id, who)))
