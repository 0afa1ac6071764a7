"""Hosts: their names must satisfy their site's policy before they are stored."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.api.common import by_name_or_404, find_by_name, get_or_404
from services.api.sites.service import Outcome, apply_changes, changed_fields, site_by_name
from shared import access, events
from shared.access import Principal
from shared.db.models import Host, HostName, IssuanceRequest, SharedName, Site
from shared.delivery_settings import (
    DeliveryLimits,
    check_delivery,
    effective_directory,
    endpoint_host,
    parse_settings,
    resolve_directory,
)
from shared.errors import Conflict, ValidationFailed
from shared.issuance import site_policy
from shared.policy import normalize_dns_name, parse_ip

HOST_FIELDS = (
    "dns_names",
    "ip_addresses",
    "roles",
    "failover_for",
    "platform",
    "service_account",
    "delivery",
    "tls_endpoints",
)


def get_host(session: Session, host_id: int, who: Principal | None = None) -> Host:
    """The host, if it exists and (given a reader) lies in its scope; 404 otherwise."""
    host = get_or_404(session, Host, host_id, "host")
    if who is not None:
        who.require_read(host.site_id)
    return host


def find_host(session: Session, name: str) -> Host | None:
    host: Host | None = find_by_name(session, Host, name)
    return host


def host_by_name(session: Session, name: str) -> Host:
    return by_name_or_404(session, Host, name, "host")


def normalized(data: dict[str, Any], limits: DeliveryLimits) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k in HOST_FIELDS}
    problems: dict[str, list[str]] = {}
    if "dns_names" in data:
        try:
            out["dns_names"] = list(dict.fromkeys(normalize_dns_name(n) for n in data["dns_names"]))
        except ValidationFailed as exc:
            problems["dns_names"] = [exc.message]
    if "ip_addresses" in data:
        try:
            out["ip_addresses"] = list(
                dict.fromkeys(str(parse_ip(i)) for i in data["ip_addresses"])
            )
        except ValidationFailed as exc:
            problems["ip_addresses"] = [exc.message]
    if "roles" in data:
        out["roles"] = sorted(set(data["roles"]))
    if "delivery" in data:
        method = data["delivery"].get("method") or "none"
        try:
            settings = parse_settings(method, data["delivery"].get("settings") or {})
            out["delivery"] = resolve_directory({"method": method, "settings": settings}, limits)
        except ValidationFailed as exc:
            details = (exc.errors or {}).get("settings")
            problems["delivery"] = [exc.message + (f": {details}" if details else "")]
    if problems:
        summary = "; ".join(f"{key}: {messages[0]}" for key, messages in problems.items())
        raise ValidationFailed(f"the host did not validate: {summary}", problems)
    return out


def check_policy(host: Host, site: Site, settings: DeliveryLimits) -> None:
    """The names a host registers are the names its certificates will carry; its TLS
    endpoints and its delivery settings may reach only the host itself."""
    if not host.dns_names and not host.ip_addresses:
        raise ValidationFailed("a host needs at least one DNS name or IP address")
    site_policy(site).enforce(host.dns_names, [parse_ip(i) for i in host.ip_addresses])
    names = {*host.dns_names, *host.ip_addresses}
    foreign = [e for e in host.tls_endpoints if endpoint_host(e) not in names]
    if foreign:
        raise ValidationFailed(
            "a TLS endpoint must be on one of the host's own names or addresses: "
            + ", ".join(foreign),
            {"tls_endpoints": foreign},
        )
    for endpoint in host.tls_endpoints:
        settings.check_destination(endpoint_host(endpoint), "tls_endpoints")
    check_delivery(host.delivery or {}, names, settings)


def claim_directory(session: Session, host: Host) -> None:
    """A directory target's directory is this host's alone (hosts.delivery_directory is
    unique, which also settles a race): another host's, of any site, is refused."""
    directory = effective_directory(host.delivery or {}, host.name)
    if directory is not None:
        query = select(Host.id).where(Host.delivery_directory == directory)
        if host.id is not None:
            query = query.where(Host.id != host.id)
        taken = session.scalar(query)
        if taken is not None:
            raise Conflict(
                "another host's files are delivered to that directory",
                {"delivery": {"settings": {"path": ["taken by another host"]}}},
            )
    host.delivery_directory = directory


def claim_names(session: Session, host: Host) -> None:
    """Register the host's names as its own (shared.db.models.HostName): a name another host
    holds is refused, unless an admin shared it. The primary key on the name settles a race
    between two writers (the loser's commit fails, 409)."""
    names = [*host.dns_names, *host.ip_addresses]
    shared = set(session.scalars(select(SharedName.name).where(SharedName.name.in_(names))))
    own = [n for n in names if n not in shared]
    taken = session.scalars(
        select(HostName.name).where(HostName.name.in_(own), HostName.host_id != host.id)
    ).all()
    if taken:
        raise Conflict(
            "these names are registered to another host: " + ", ".join(sorted(taken)),
            {"names": sorted(taken)},
        )
    held = set(session.scalars(select(HostName.name).where(HostName.host_id == host.id)))
    stale = held - set(own)
    if stale:
        session.execute(
            delete(HostName).where(HostName.host_id == host.id, HostName.name.in_(stale))
        )
    session.add_all(HostName(name=n, host_id=host.id) for n in own if n not in held)
    session.flush()


def upsert_host(
    session: Session,
    data: dict[str, Any],
    *,
    who: Principal,
    now: dt.datetime,
    limits: DeliveryLimits,
    site: Site | None = None,
) -> tuple[Host, Outcome]:
    """Create or update by name, as far as shared.access lets `who` (on the host's site as it
    is and as it will be). `site` may be passed when the caller already resolved it."""
    changes = normalized(data, limits)
    if site is None and data.get("site") is not None:
        site = site_by_name(session, data["site"])
    host = find_host(session, data["name"])
    if host is None:
        if site is None:
            raise ValidationFailed("a new host needs a site", {"site": ["required"]})
        access.require_change(who, "host", ["create"], before_site_id=None, after_site_id=site.id)
        host = Host(name=data["name"], site=site, created_at=now, updated_at=now)
        apply_changes(host, changes)
        check_policy(host, site, limits)
        claim_directory(session, host)
        session.add(host)
        session.flush()
        claim_names(session, host)
        events.record(
            session,
            "host.created",
            who.actor,
            at=now,
            site_id=site.id,
            host_id=host.id,
            name=host.name,
        )
        return host, "created"
    who.require_read(host.site_id)
    if site is not None and site.id != host.site_id:
        changes["site_id"] = site.id
    fields = changed_fields(host, changes, {"site_id": "site"})
    access.require_change(
        who,
        "host",
        fields,
        before_site_id=host.site_id,
        after_site_id=site.id if site is not None else host.site_id,
    )
    changed = apply_changes(host, changes)
    check_policy(host, site or host.site, limits)
    if not changed:
        return host, "unchanged"
    claim_directory(session, host)
    claim_names(session, host)
    host.updated_at = now
    events.record(
        session,
        "host.updated",
        who.actor,
        at=now,
        site_id=host.site_id,
        host_id=host.id,
        fields=fields,
    )
    return host, "updated"


def create_host(
    session: Session,
    data: dict[str, Any],
    site: Site,
    *,
    who: Principal,
    now: dt.datetime,
    limits: DeliveryLimits,
) -> Host:
    if find_host(session, data["name"]) is not None:
        raise Conflict(f"host {data['name']!r} already exists")
    host, _ = upsert_host(session, data, who=who, now=now, limits=limits, site=site)
    return host


def delete_host(session: Session, host: Host, *, actor: str, now: dt.datetime) -> None:
    has_requests = session.scalar(
        select(IssuanceRequest.id).where(IssuanceRequest.host_id == host.id).limit(1)
    )
    if has_requests is not None:
        raise Conflict(
            f"host {host.name!r} has certificate history and cannot be deleted; "
            "keep it for the audit trail"
        )
    events.record(session, "host.deleted", actor, at=now, site_id=host.site_id, name=host.name)
    session.delete(host)
