"""The audit trail: append one Event per thing that happened, in the caller's transaction."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from shared.db.models import Event


def record(
    session: Session,
    kind: str,
    actor: str,
    *,
    at: dt.datetime,
    site_id: int | None = None,
    host_id: int | None = None,
    subject: tuple[str, int] | None = None,
    **data: Any,
) -> Event:
    event = Event(
        **entry(kind, actor, at=at, site_id=site_id, host_id=host_id, subject=subject, **data)
    )
    session.add(event)
    return event


def entry(
    kind: str,
    actor: str,
    *,
    at: dt.datetime,
    site_id: int | None = None,
    host_id: int | None = None,
    subject: tuple[str, int] | None = None,
    **data: Any,
) -> dict[str, Any]:
    """One Event as a row for record_all (the arguments of record)."""
    return {
        "at": at,
        "kind": kind,
        "actor": actor,
        "site_id": site_id,
        "host_id": host_id,
        "subject_type": subject[0] if subject else None,
        "subject_id": subject[1] if subject else None,
        "data": data,
    }


def record_all(session: Session, entries: list[dict[str, Any]]) -> None:
    """Append many Events in one multi-row INSERT, in the caller's transaction."""
    if entries:
        session.execute(insert(Event), entries)
