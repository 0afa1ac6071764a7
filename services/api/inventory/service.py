"""Apply an inventory: every site and host created or updated by name, all or nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.hosts.service import upsert_host
from services.api.names import service as shared_names
from services.api.sites.service import upsert_site
from shared.access import Principal
from shared.db.models import Host
from shared.delivery_settings import DeliveryLimits
from shared.errors import CertfleetError, Forbidden, OutOfScope, ValidationFailed


def apply_inventory(
    session: Session,
    doc: dict[str, Any],
    *,
    who: Principal,
    now: dt.datetime,
    limits: DeliveryLimits,
) -> dict[str, Any]:
    """Every item goes through the same upserts, and so the same authorization (shared.access),
    as the sites and hosts routes: an item the token may not apply is a problem like any
    other, and one problem applies nothing."""
    result: dict[str, Any] = {
        kind: {"created": [], "updated": [], "unchanged": []} for kind in ("sites", "hosts")
    }
    problems: dict[str, str] = {}
    denied = False
    try:
        shared_names.share(session, doc.get("shared_names") or [], who=who, now=now)
    except CertfleetError as exc:
        problems["shared_names"] = exc.message
    upserts: tuple[tuple[str, Callable[..., Any]], ...] = (
        ("sites", lambda data: upsert_site(session, data, who=who, now=now)),
        ("hosts", lambda data: upsert_host(session, data, who=who, now=now, limits=limits)),
    )
    for kind, upsert in upserts:
        for index, data in enumerate(doc[kind]):
            try:
                row, outcome = upsert(data)
                result[kind][outcome].append(row.name)
            except CertfleetError as exc:
                problems[f"{kind}[{index}] {data['name']}"] = exc.message
                denied = denied or isinstance(exc, Forbidden | OutOfScope)
    if denied:
        raise Forbidden(
            f"the inventory has {len(problems)} problem(s), some beyond this token's rights; "
            "nothing was applied",
            problems,
        )
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
