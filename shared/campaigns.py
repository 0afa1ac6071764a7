"""Campaigns: renewing a chosen part of the fleet at a chosen pace, and rotating a CA.

What a campaign touches is fixed when it starts (a renewal) or when its re-issue phase starts
(a rotation): one CampaignItem per active certificate the selector matched. The expiry watcher
(services.expiry_watcher.campaigns) then moves it along; this module holds what the API and
the watcher share: the selector, the dry run, creation, pause/resume/cancel and the counts.

Selector (every key optional, all given keys must match):
    sites                  site names
    authority              the name of the authority that signed the certificates
    hosts                  host names
    expiring_within_days   certificates whose not_after is at most this many days away
A renewal needs at least one key (or `"all": true`): a campaign over the whole fleet is
asked for on purpose, never by an empty body. A rotation needs `authority` (the one being
replaced) and may narrow it to `sites`; it takes no other key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from shared import contracts, events
from shared.db.models import Authority, Campaign, CampaignItem, Certificate, Host, Site
from shared.errors import Conflict, ValidationFailed

RENEW = "renew"
ROTATE = "rotate_authority"
SELECTOR_KEYS = frozenset({"sites", "authority", "hosts", "expiring_within_days", "all"})
ROTATION_KEYS = frozenset({"authority", "sites"})
IN_FLIGHT = ("queued", "issued", "delivered")
COUNTED = ("pending", "queued", "issued", "delivered", "verified", "failed", "cancelled", "skipped")
DRY_RUN_HOSTS_PER_SITE = 200
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Selector:
    sites: tuple[str, ...] = ()
    authority: str | None = None
    hosts: tuple[str, ...] = ()
    expiring_within_days: int | None = None
    everything: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any], kind: str) -> Selector:
        allowed = ROTATION_KEYS if kind == ROTATE else SELECTOR_KEYS
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValidationFailed(
                f"selector keys not allowed for a {kind} campaign: {', '.join(unknown)}",
                {"selector": [f"unknown key {k!r}" for k in unknown]},
            )
        days = data.get("expiring_within_days")
        if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 0):
            raise ValidationFailed(
                "expiring_within_days must be a whole number of days, 0 or more",
                {"selector": ["expiring_within_days"]},
            )
        authority = data.get("authority")
        if authority is not None and (not isinstance(authority, str) or not authority):
            raise ValidationFailed("authority must be a name", {"selector": ["authority"]})
        selector = cls(
            sites=_names(data, "sites"),
            authority=authority,
            hosts=_names(data, "hosts"),
            expiring_within_days=days,
            everything=data.get("all") is True,
        )
        if kind == ROTATE and not selector.authority:
            raise ValidationFailed(
                "a rotation names the authority it replaces", {"selector": ["authority required"]}
            )
        if kind == RENEW and selector == cls():
            raise ValidationFailed(
                "the selector is empty: name sites, an authority, hosts, expiring_within_days, "
                'or "all": true for the whole fleet',
                {"selector": ["empty"]},
            )
        return selector

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.sites:
            out["sites"] = list(self.sites)
        if self.authority:
            out["authority"] = self.authority
        if self.hosts:
            out["hosts"] = list(self.hosts)
        if self.expiring_within_days is not None:
            out["expiring_within_days"] = self.expiring_within_days
        if self.everything:
            out["all"] = True
        return out


def _names(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValidationFailed(f"{key} must be a list of names", {"selector": [key]})
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True)
class Resolved:
    """A selector with its names looked up: IDs, and the authority being replaced."""

    selector: Selector
    site_ids: tuple[int, ...]
    host_ids: tuple[int, ...]
    authority: Authority | None


def resolve(session: Session, selector: Selector) -> Resolved:
    """Look every name up; name every one that does not exist (422, nothing stored)."""
    problems: dict[str, list[str]] = {}
    sites = _lookup(session, Site, selector.sites, "sites", problems)
    hosts = _lookup(session, Host, selector.hosts, "hosts", problems)
    authority = None
    if selector.authority:
        authority = session.scalar(select(Authority).where(Authority.name == selector.authority))
        if authority is None:
            problems["authority"] = [f"unknown authority {selector.authority!r}"]
    if problems:
        raise ValidationFailed("the selector names what does not exist", problems)
    return Resolved(selector, tuple(sites), tuple(hosts), authority)


def _lookup(
    session: Session, model: Any, names: Sequence[str], key: str, problems: dict[str, list[str]]
) -> list[int]:
    if not names:
        return []
    found: dict[str, int] = dict(
        session.execute(select(model.name, model.id).where(model.name.in_(names))).all()
    )
    missing = [n for n in names if n not in found]
    if missing:
        problems[key] = [f"unknown: {', '.join(missing)}"]
    return [found[n] for n in names if n in found]


def matching(resolved: Resolved, now: dt.datetime) -> Select[Certificate, Host]:
    """Active leaf certificates the selector matches, most urgent first."""
    query = (
        select(Certificate, Host)
        .join(Host, Host.id == Certificate.host_id)
        .where(Certificate.status == "active")
    )
    if resolved.site_ids:
        query = query.where(Host.site_id.in_(resolved.site_ids))
    if resolved.host_ids:
        query = query.where(Host.id.in_(resolved.host_ids))
    if resolved.authority is not None:
        query = query.where(Certificate.authority_id == resolved.authority.id)
    days = resolved.selector.expiring_within_days
    if days is not None:
        query = query.where(Certificate.not_after <= now + days * DAY)
    return query.order_by(Certificate.not_after, Certificate.id)


def rotation_sites(session: Session, resolved: Resolved) -> list[Site]:
    """The sites a rotation moves to the new authority: those issuing from the old one,
    narrowed to the selector's sites if it names any."""
    assert resolved.authority is not None
    query = select(Site).where(Site.authority_id == resolved.authority.id)
    if resolved.site_ids:
        query = query.where(Site.id.in_(resolved.site_ids))
    return list(session.scalars(query.order_by(Site.name)))


# --- the campaign as asked for ------------------------------------------------------------


# Spec fields for which null means something (rather than "the default").
NULLABLE_SPEC_FIELDS = frozenset({"rate_per_minute"})


@dataclass(frozen=True)
class CampaignSpec:
    """A validated request for a campaign (the API's schema gives the types and ranges)."""

    name: str
    kind: str
    selector: Mapping[str, Any]
    rate_per_minute: int | None = 60  # None: unthrottled
    per_site_concurrency: int = 2
    respect_windows: bool = True
    max_failures: int = 10
    ack_share: float = 1.0
    new_authority: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CampaignSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(
            **{
                k: v
                for k, v in data.items()
                if k in known and (v is not None or k in NULLABLE_SPEC_FIELDS)
            }
        )


def dry_run(session: Session, spec: CampaignSpec, now: dt.datetime) -> dict[str, Any]:
    """What the campaign would change, per site, without storing anything."""
    resolved = resolve(session, Selector.from_json(spec.selector, spec.kind))
    if spec.kind == ROTATE:
        return _rotation_plan(session, spec, resolved, now)
    return {
        "kind": spec.kind,
        "selector": resolved.selector.to_json(),
        **_per_site(session, resolved, now),
    }


def _per_site(session: Session, resolved: Resolved, now: dt.datetime) -> dict[str, Any]:
    sites: dict[int, dict[str, Any]] = {}
    names = dict(session.execute(select(Site.id, Site.name)).all())
    total = 0
    for certificate, host in session.execute(matching(resolved, now)).all():
        total += 1
        entry = sites.setdefault(
            host.site_id, {"site": names[host.site_id], "certificates": 0, "hosts": []}
        )
        entry["certificates"] += 1
        if len(entry["hosts"]) < DRY_RUN_HOSTS_PER_SITE:
            entry["hosts"].append(
                {
                    "host": host.name,
                    "certificate_id": certificate.id,
                    "not_after": certificate.not_after.isoformat(),
                    "renewing": certificate.renewal_request_id is not None,
                }
            )
    return {
        "total": total,
        "sites": sorted(sites.values(), key=lambda s: str(s["site"])),
    }


def _rotation_plan(
    session: Session, spec: CampaignSpec, resolved: Resolved, now: dt.datetime
) -> dict[str, Any]:
    old = resolved.authority
    assert old is not None
    _check_rotatable(session, old)
    sites = _sites_to_rotate(session, resolved)
    narrowed = Resolved(resolved.selector, tuple(s.id for s in sites) or (-1,), (), old)
    clients = sum(1 for roles in session.scalars(select(Host.roles)) if "client" in roles)
    others = session.scalar(
        select(func.count(Site.id)).where(
            Site.authority_id == old.id, Site.id.not_in([s.id for s in sites] or [-1])
        )
    )
    return {
        "kind": spec.kind,
        "selector": resolved.selector.to_json(),
        "authority": old.name,
        "new_authority": new_authority_name(spec, old, now),
        "clients": clients,
        "ack_share": spec.ack_share,
        "retires_old_authority": not others,
        **_per_site(session, narrowed, now),
    }


def _sites_to_rotate(session: Session, resolved: Resolved) -> list[Site]:
    sites = rotation_sites(session, resolved)
    if not sites:
        assert resolved.authority is not None
        raise ValidationFailed(
            f"no selected site issues from authority {resolved.authority.name!r}",
            {"selector": ["sites"]},
        )
    return sites


def new_authority_name(spec: CampaignSpec, old: Authority, now: dt.datetime) -> str:
    return str(spec.new_authority.get("name") or f"{old.name} {now:%Y-%m-%d}")


def _check_rotatable(session: Session, old: Authority) -> None:
    if old.status != "active":
        raise Conflict(f"authority {old.name!r} is {old.status}: only an active one is rotated")
    running = session.scalar(
        select(Campaign.id).where(
            Campaign.kind == ROTATE, Campaign.authority_id == old.id, Campaign.finished_at.is_(None)
        )
    )
    if running is not None:
        raise Conflict(f"campaign {running} is already rotating authority {old.name!r}")


# --- creating and steering ----------------------------------------------------------------


def create(
    session: Session, spec: CampaignSpec, *, actor: str, now: dt.datetime
) -> tuple[Campaign, list[contracts.Message]]:
    """Store the campaign (and, for a renewal, its items); return the messages to publish
    after the commit."""
    resolved = resolve(session, Selector.from_json(spec.selector, spec.kind))
    campaign = Campaign(
        name=spec.name,
        kind=spec.kind,
        status="running",
        selector=resolved.selector.to_json(),
        rate_per_minute=spec.rate_per_minute,
        per_site_concurrency=spec.per_site_concurrency,
        respect_windows=spec.respect_windows,
        max_failures=spec.max_failures,
        ack_share=spec.ack_share,
        authority_id=resolved.authority.id if resolved.authority else None,
        site_id=resolved.site_ids[0] if len(resolved.site_ids) == 1 else None,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    messages = [contracts.advance_campaigns()]
    if spec.kind == ROTATE:
        assert resolved.authority is not None
        _check_rotatable(session, resolved.authority)
        _sites_to_rotate(session, resolved)
        new = _new_authority(session, spec, resolved.authority, actor, now)
        campaign.new_authority_id = new.id
        campaign.phase = "create_authority"
        session.add(campaign)
        session.flush()
        messages.insert(0, contracts.create_authority(new.id))
    else:
        session.add(campaign)
        session.flush()
        if add_items(session, campaign, resolved, now) == 0:
            raise ValidationFailed(
                "the selector matches no active certificate", {"selector": ["matches nothing"]}
            )
    events.record(
        session,
        "campaign.created",
        actor,
        at=now,
        site_id=campaign.site_id,
        subject=("campaign", campaign.id),
        campaign_kind=campaign.kind,
        selector=campaign.selector,
    )
    return campaign, messages


def _new_authority(
    session: Session, spec: CampaignSpec, old: Authority, actor: str, now: dt.datetime
) -> Authority:
    name = new_authority_name(spec, old, now)
    if session.scalar(select(Authority.id).where(Authority.name == name)) is not None:
        raise Conflict(f"authority {name!r} already exists: name the new one in new_authority")
    row = Authority(
        name=name,
        kind=old.kind,
        parent_id=old.parent_id,
        status="pending",
        key_bits=int(spec.new_authority.get("key_bits") or old.key_bits),
        validity_days=int(spec.new_authority.get("validity_days") or old.validity_days),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    events.record(
        session,
        "authority.requested",
        actor,
        at=now,
        subject=("authority", row.id),
        replaces=old.id,
    )
    return row


def add_items(session: Session, campaign: Campaign, resolved: Resolved, now: dt.datetime) -> int:
    """One pending item per matching certificate; returns how many."""
    rows = [
        CampaignItem(
            campaign_id=campaign.id,
            certificate_id=certificate.id,
            host_id=host.id,
            site_id=host.site_id,
            status="pending",
            updated_at=now,
        )
        for certificate, host in session.execute(matching(resolved, now)).all()
    ]
    session.add_all(rows)
    session.flush()
    return len(rows)


def steer(
    session: Session,
    campaign: Campaign,
    action: str,
    *,
    actor: str,
    now: dt.datetime,
    retry_failed: bool = False,
) -> list[contracts.Message]:
    """pause, resume or cancel. Cancelling stops what has not started; what is being issued
    or delivered finishes and is still counted."""
    verb = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[action]
    if campaign.finished_at is not None or campaign.status == "cancelled":
        raise Conflict(f"campaign {campaign.id} is {campaign.status}: it cannot be {verb}")
    if action == "resume" and campaign.status == "running" and not retry_failed:
        raise Conflict(f"campaign {campaign.id} is already running")
    allowed = {
        "pause": ("running",),
        "resume": ("paused", "running"),
        "cancel": ("running", "paused"),
    }
    if campaign.status not in allowed[action]:
        raise Conflict(f"campaign {campaign.id} is {campaign.status}: it cannot be {verb}")
    retried = 0
    if action == "pause":
        campaign.status, campaign.reason = "paused", f"paused by {actor}"
    elif action == "resume":
        campaign.status, campaign.reason = "running", None
        if retry_failed:
            retried = _retry_failed(session, campaign, now)
    else:
        campaign.status, campaign.reason = "cancelled", f"cancelled by {actor}"
        for item in session.scalars(
            select(CampaignItem).where(
                CampaignItem.campaign_id == campaign.id, CampaignItem.status == "pending"
            )
        ):
            item.status, item.finished_at, item.updated_at = "cancelled", now, now
    campaign.updated_at = now
    events.record(
        session,
        f"campaign.{verb}",
        actor,
        at=now,
        subject=("campaign", campaign.id),
        **({"retried": retried} if action == "resume" else {}),
    )
    return [contracts.advance_campaigns()] if action == "resume" else []


def _retry_failed(session: Session, campaign: Campaign, now: dt.datetime) -> int:
    failed = list(
        session.scalars(
            select(CampaignItem).where(
                CampaignItem.campaign_id == campaign.id, CampaignItem.status == "failed"
            )
        )
    )
    for item in failed:
        item.status, item.error, item.finished_at, item.updated_at = "pending", None, None, now
        item.request_id = item.new_certificate_id = item.started_at = None
    return len(failed)


def counts(session: Session, campaign_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Items per status for each campaign, with `total` and `finished`."""
    out = {cid: {**dict.fromkeys(COUNTED, 0), "total": 0, "finished": 0} for cid in campaign_ids}
    if not campaign_ids:
        return out
    rows = session.execute(
        select(
            CampaignItem.campaign_id,
            CampaignItem.status,
            func.count(CampaignItem.id),
            func.count(CampaignItem.finished_at),
        )
        .where(CampaignItem.campaign_id.in_(campaign_ids))
        .group_by(CampaignItem.campaign_id, CampaignItem.status)
    )
    for campaign_id, status, number, finished in rows:
        entry = out[campaign_id]
        entry[status] = entry.get(status, 0) + number
        entry["total"] += number
        entry["finished"] += finished
    return out
