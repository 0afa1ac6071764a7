"""Shared names: the DNS names and addresses an admin lets several hosts carry.

Every other name belongs to one host fleet-wide (shared.db.models.HostName, kept by
services.api.hosts.service.claim_names), so that an operator of one site can neither register
nor get a certificate for another site's names."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared import access, events
from shared.access import Principal
from shared.db.models import Host, HostName, SharedName
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.policy import normalize_dns_name, parse_ip


def normalize(name: str) -> str:
    """A name as hosts store it: an IP address in its canonical form, else a DNS name."""
    try:
        return str(parse_ip(name))
    except ValidationFailed:
        return normalize_dns_name(name)


def listed(session: Session) -> list[SharedName]:
    return list(session.scalars(select(SharedName).order_by(SharedName.name)))


def share(session: Session, names: Sequence[str], *, who: Principal, now: dt.datetime) -> list[str]:
    """Mark names as shared (admin only; naming already shared ones again changes nothing,
    so an operator may apply an inventory that lists them). Returns the newly shared."""
    wanted = list(dict.fromkeys(normalize(n) for n in names))
    known = set(session.scalars(select(SharedName.name).where(SharedName.name.in_(wanted))))
    new = [n for n in wanted if n not in known]
    if not new:
        return []
    who.require_role(access.ADMIN)
    session.add_all(SharedName(name=n, created_by=who.actor, created_at=now) for n in new)
    # A shared name is nobody's own: its owner row goes, so other hosts may carry it.
    session.execute(delete(HostName).where(HostName.name.in_(new)))
    session.flush()
    for name in new:
        events.record(session, "name.shared", who.actor, at=now, name=name)
    return new


def unshare(session: Session, name: str, *, who: Principal, now: dt.datetime) -> None:
    """Make a shared name one host's own again; 409 while several hosts carry it."""
    who.require_role(access.ADMIN)
    value = normalize(name)
    row = session.get(SharedName, value)
    if row is None:
        raise NotFound(f"{value!r} is not a shared name")
    carriers = _carriers(session, value)
    if len(carriers) > 1:
        raise Conflict(f"{len(carriers)} hosts carry {value!r}; remove it from all but one first")
    session.delete(row)
    session.flush()
    if carriers:
        session.add(HostName(name=value, host_id=carriers[0]))
    events.record(session, "name.unshared", who.actor, at=now, name=value)


def _carriers(session: Session, name: str) -> list[int]:
    """The hosts whose names include `name` (read from the hosts' own lists)."""
    rows = session.execute(select(Host.id, Host.dns_names, Host.ip_addresses)).all()
    return [h for h, dns, ips in rows if name in (dns or []) or name in (ips or [])]
