"""Hosts: their names must satisfy their site's policy before they are stored."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.common import by_name_or_404, find_by_name, get_or_404
from services.api.sites.service import Outcome, apply_changes, site_by_name
from shared import events
from shared.db.models import Host, IssuanceRequest, Site
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


def get_host(session: Session, host_id: int) -> Host:
    return get_or_404(session, Host, host_id, "host")


def find_host(session: Session, name: str) -> Host | None:
    host: Host | None = find_by_name(session, Host, name)
    return host


def host_by_name(session: Session, name: str) -> Host:
    return by_name_or_404(session, Host, name, "host")


def normalized(data: dict[str, Any]) -> dict[str, Any]:
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
    if problems:
        raise ValidationFailed("the host did not validate", problems)
    return out


def check_policy(host: Host, site: Site) -> None:
    """The names a host registers are the names its certificates will carry."""
    if not host.dns_names and not host.ip_addresses:
        raise ValidationFailed("a host needs at least one DNS name or IP address")
    site_policy(site).enforce(host.dns_names, [parse_ip(i) for i in host.ip_addresses])


def upsert_host(
    session: Session,
    data: dict[str, Any],
    *,
    actor: str,
    now: dt.datetime,
    site: Site | None = None,
) -> tuple[Host, Outcome]:
    """Create or update by name. `site` may be passed when the caller already resolved it."""
    changes = normalized(data)
    if site is None and data.get("site") is not None:
        site = site_by_name(session, data["site"])
    host = find_host(session, data["name"])
    if host is None:
        if site is None:
            raise ValidationFailed("a new host needs a site", {"site": ["required"]})
        host = Host(name=data["name"], site=site, created_at=now, updated_at=now)
        apply_changes(host, changes)
        check_policy(host, site)
        session.add(host)
        session.flush()
        events.record(
            session, "host.created", actor, at=now, site_id=site.id, host_id=host.id, name=host.name
        )
        return host, "created"
    if site is not None and site.id != host.site_id:
        changes["site_id"] = site.id
    changed = apply_changes(host, changes)
    check_policy(host, site or host.site)
    if not changed:
        return host, "unchanged"
    host.updated_at = now
    events.record(
        session,
        "host.updated",
        actor,
        at=now,
        site_id=host.site_id,
        host_id=host.id,
        fields=sorted(changes),
    )
    return host, "updated"


def create_host(
    session: Session, data: dict[str, Any], site: Site, *, actor: str, now: dt.datetime
) -> Host:
    if find_host(session, data["name"]) is not None:
        raise Conflict(f"host {data['name']!r} already exists")
    host, _ = upsert_host(session, data, actor=actor, now=now, site=site)
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
