"""Authorities are created by the issuer (which alone holds the CA passphrase): the API stores
a pending row and enqueues its creation."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.common import get_or_404
from shared import events
from shared.db.models import Authority
from shared.errors import Conflict, ValidationFailed
from shared.pki.profiles import DEFAULT_CA


def get_authority(session: Session, authority_id: int) -> Authority:
    return get_or_404(session, Authority, authority_id, "authority")


def request_authority(
    session: Session, data: dict[str, Any], *, actor: str, now: dt.datetime
) -> Authority:
    if session.scalar(select(Authority.id).where(Authority.name == data["name"])) is not None:
        raise Conflict(f"authority {data['name']!r} already exists")
    parent_id = None
    if data["kind"] == "intermediate":
        if not data.get("parent"):
            raise ValidationFailed("an intermediate needs a parent", {"parent": ["required"]})
        parent = session.scalar(select(Authority).where(Authority.name == data["parent"]))
        if parent is None or parent.status not in ("active", "retiring"):
            raise ValidationFailed(f"parent {data['parent']!r} is not an active authority")
        parent_id = parent.id
    elif data.get("parent"):
        raise ValidationFailed("a root has no parent", {"parent": ["not allowed for a root"]})
    default_days = (
        DEFAULT_CA.root_validity_days
        if data["kind"] == "root"
        else DEFAULT_CA.intermediate_validity_days
    )
    row = Authority(
        name=data["name"],
        kind=data["kind"],
        parent_id=parent_id,
        status="pending",
        key_bits=data["key_bits"],
        validity_days=data.get("validity_days") or default_days,
        created_at=now,
    )
    session.add(row)
    session.flush()
    events.record(session, "authority.requested", actor, at=now, subject=("authority", row.id))
    return row
