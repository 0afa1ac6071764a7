"""Apply an inventory: every site and host created or updated by name, all or nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.auth import Principal
from services.api.hosts.service import upsert_host
from services.api.sites.service import find_site, upsert_site
from shared.db.models import Host
from shared.errors import CertfleetError, Forbidden, ValidationFailed


def check_scope(session: Session, who: Principal, doc: dict[str, Any]) -> None:
    """A site-scoped operator may touch only its own (existing) site and its hosts."""
    if who.role == "admin" or who.site_id is None:
        return
    names = {s["name"] for s in doc["sites"]} | {h["site"] for h in doc["hosts"]}
    for name in names:
        site = find_site(session, name)
        if site is None or site.id != who.site_id:
            raise Forbidden(f"this token cannot change site {name!r}")


def apply_inventory(
    session: Session, doc: dict[str, Any], *, who: Principal, now: dt.datetime
) -> dict[str, Any]:
    check_scope(session, who, doc)
    result: dict[str, Any] = {
        kind: {"created": [], "updated": [], "unchanged": []} for kind in ("sites", "hosts")
    }
    problems: dict[str, str] = {}
    upserts = (("sites", upsert_site), ("hosts", upsert_host))
    for kind, upsert in upserts:
        for index, data in enumerate(doc[kind]):
            try:
                row, outcome = upsert(session, data, actor=who.actor, now=now)
                result[kind][outcome].append(row.name)
            except CertfleetError as exc:
                problems[f"{kind}[{index}] {data['name']}"] = exc.message
    if problems:
        raise ValidationFailed(
            f"the inventory has {len(problems)} problem(s); nothing was applied", problems
        )
    for outcome in ("created", "updated", "unchanged"):
        result[outcome] = len(result["sites"][outcome]) + len(result["hosts"][outcome])
    return result


def client_host_ids(session: Session, names: list[str]) -> list[int]:
    """Of these hosts, the clients: they need the trust bundle when they appear or change."""
    if not names:
        return []
    rows = session.execute(select(Host.id, Host.roles).where(Host.name.in_(names)))
    return [row.id for row in rows if "client" in row.roles]
