"""The audit trail: append one Event per thing that happened, in the caller's transaction."""

from __future__ import annotations

import datetime as dt
from typing import Any

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
        at=at,
        kind=kind,
        actor=actor,
        site_id=site_id,
        host_id=host_id,
        subject_type=subject[0] if subject else None,
        subject_id=subject[1] if subject else None,
        data=data,
    )
    session.add(event)
    return event
