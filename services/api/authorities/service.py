"""Authorities are created by the issuer (which alone holds the CA passphrase): the API stores
a pending row and enqueues its creation."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.common import get_or_404
from shared import crls, events
from shared.db.models import Authority, AuthorityCrl
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.pki.crl import der_to_pem
from shared.pki.profiles import DEFAULT_CA

# Clients may reuse a CRL this long (never past its nextUpdate); revalidation is cheap with
# the ETag, and a revocation reaches them within minutes instead of a CRL period.
CRL_MAX_AGE = dt.timedelta(minutes=5)


def get_authority(session: Session, authority_id: int) -> Authority:
    return get_or_404(session, Authority, authority_id, "authority")


def current_crl(session: Session, authority_id: int) -> AuthorityCrl:
    get_authority(session, authority_id)
    stored = crls.stored_crl(session, authority_id)
    if stored is None:
        raise NotFound(f"authority {authority_id} has no CRL yet")
    return stored


def crl_body(stored: AuthorityCrl, fmt: str) -> bytes:
    return stored.der if fmt == "der" else der_to_pem(stored.der)


def crl_max_age(stored: AuthorityCrl, now: dt.datetime) -> int:
    remaining = min(stored.next_update - now, CRL_MAX_AGE)
    return max(0, int(remaining.total_seconds()))


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
        updated_at=now,
    )
    session.add(row)
    session.flush()
    events.record(session, "authority.requested", actor, at=now, subject=("authority", row.id))
    return row
