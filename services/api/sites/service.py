"""Sites: create, change, upsert (for inventory), delete."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.api.common import by_name_or_404, find_by_name, get_or_404
from shared import access, events
from shared.access import Principal
from shared.db.models import ApiToken, Authority, Host, Site
from shared.errors import Conflict, ValidationFailed
from shared.policy import normalize_dns_suffix, parse_network

Outcome = Literal["created", "updated", "unchanged"]
SITE_FIELDS = (
    "description",
    "dns_suffixes",
    "ip_ranges",
    "allow_short_names",
    "maintenance_window",
    "renew_at_fraction",
    "default_validity_days",
)


def get_site(session: Session, site_id: int, who: Principal | None = None) -> Site:
    """The site, if it exists and (given a reader) lies in its scope; 404 otherwise."""
    site = get_or_404(session, Site, site_id, "site")
    if who is not None:
        who.require_read(site.id)
    return site


def find_site(session: Session, name: str) -> Site | None:
    site: Site | None = find_by_name(session, Site, name)
    return site


def site_by_name(session: Session, name: str) -> Site:
    return by_name_or_404(session, Site, name, "site")


def resolve_authority(session: Session, name: str | None) -> Authority:
    query = select(Authority).where(Authority.status.in_(("active", "retiring")))
    if name is not None:
        authority = session.scalar(select(Authority).where(Authority.name == name))
        if authority is None:
            raise ValidationFailed(f"authority {name!r} does not exist", {"authority": ["unknown"]})
        if authority.status not in ("active", "retiring"):
            raise ValidationFailed(f"authority {name!r} is {authority.status}")
        return authority
    authority = session.scalar(query.order_by(Authority.id).limit(1))
    if authority is None:
        raise Conflict("there is no active authority yet; run `certfleet init` first")
    return authority


def normalized(data: dict[str, Any]) -> dict[str, Any]:
    """Canonical suffixes and ranges, so that 'unchanged' means unchanged."""
    out = {k: v for k, v in data.items() if k in SITE_FIELDS}
    problems: dict[str, list[str]] = {}
    if "dns_suffixes" in data:
        try:
            out["dns_suffixes"] = sorted({normalize_dns_suffix(s) for s in data["dns_suffixes"]})
        except ValidationFailed as exc:
            problems["dns_suffixes"] = [exc.message]
    if "ip_ranges" in data:
        try:
            out["ip_ranges"] = sorted({str(parse_network(r)) for r in data["ip_ranges"]})
        except ValidationFailed as exc:
            problems["ip_ranges"] = [exc.message]
    if problems:
        raise ValidationFailed("the site did not validate", problems)
    return out


def apply_changes(row: Any, changes: dict[str, Any]) -> bool:
    """Set the changed attributes of a site or host; say whether anything changed."""
    changed = False
    for key, value in changes.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def changed_fields(row: Any, changes: dict[str, Any], aliases: dict[str, str]) -> list[str]:
    """The fields (by their API names) whose value `changes` would change."""
    return sorted(aliases.get(k, k) for k, v in changes.items() if getattr(row, k) != v)


def upsert_site(
    session: Session, data: dict[str, Any], *, who: Principal, now: dt.datetime
) -> tuple[Site, Outcome]:
    """Create or update by name, as far as shared.access lets `who`: creating a site, and
    changing its authority or its name policy, is an admin's."""
    changes = normalized(data)
    site = find_site(session, data["name"])
    if site is None:
        access.require_fields(who, "site", ["create"])
        authority = resolve_authority(session, data.get("authority"))
        site = Site(name=data["name"], authority=authority, created_at=now, updated_at=now)
        apply_changes(site, changes)
        session.add(site)
        session.flush()
        events.record(session, "site.created", who.actor, at=now, site_id=site.id, name=site.name)
        return site, "created"
    who.require_read(site.id)
    if data.get("authority") is not None:
        changes["authority_id"] = resolve_authority(session, data["authority"]).id
    fields = changed_fields(site, changes, {"authority_id": "authority"})
    access.require_change(who, "site", fields, before_site_id=site.id, after_site_id=site.id)
    if not apply_changes(site, changes):
        return site, "unchanged"
    site.updated_at = now
    events.record(session, "site.updated", who.actor, at=now, site_id=site.id, fields=fields)
    return site, "updated"


def create_site(
    session: Session, data: dict[str, Any], *, who: Principal, now: dt.datetime
) -> Site:
    access.require_fields(who, "site", ["create"])
    if find_site(session, data["name"]) is not None:
        raise Conflict(f"site {data['name']!r} already exists")
    site, _ = upsert_site(session, data, who=who, now=now)
    return site


def update_site(
    session: Session, site: Site, data: dict[str, Any], *, who: Principal, now: dt.datetime
) -> Site:
    if "name" in data and data["name"] != site.name:
        raise ValidationFailed("a site cannot be renamed", {"name": ["cannot change"]})
    upsert_site(session, {**data, "name": site.name}, who=who, now=now)
    return site


def delete_site(session: Session, site: Site, *, actor: str, now: dt.datetime) -> None:
    hosts = session.scalar(select(func.count()).select_from(Host).where(Host.site_id == site.id))
    if hosts:
        raise Conflict(f"site {site.name!r} still has {hosts} hosts; delete or move them first")
    # Tokens scoped to a deleted site could reach nothing; they go with it.
    tokens = session.scalars(select(ApiToken).where(ApiToken.site_id == site.id)).all()
    for token in tokens:
        session.delete(token)
    events.record(
        session,
        "site.deleted",
        actor,
        at=now,
        site_id=site.id,
        name=site.name,
        tokens_removed=[t.id for t in tokens],
    )
    session.delete(site)
