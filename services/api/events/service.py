"""The audit trail as the API reads it: newest first, filtered, scoped to the reader's site."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from services.api.auth import Principal
from services.api.common import named_in_scope
from shared import access
from shared.db.models import Event, Host, Site


def list_query(
    session: Session, args: dict[str, Any], who: Principal, before_id: int
) -> Select[Event]:
    """One page (plus one row, for page_of) of events with IDs below `before_id` (0: from
    the newest). A named site or host that does not exist (in the reader's scope) is a 404.

    Names are resolved to IDs first, so each filter is an equality on an indexed column that
    ends in `id` (see Event): site, host, exact kind and subject each read one index range
    backwards. A kind prefix, an actor or a time range filters the newest-first walk."""
    query = select(Event).order_by(Event.id.desc()).limit(args["limit"] + 1)
    if before_id:
        query = query.where(Event.id < before_id)
    query = access.scope(query, Event.site_id, who)
    for name, model, column in (("site", Site, Event.site_id), ("host", Host, Event.host_id)):
        row = named_in_scope(session, model, args[name], name, who)
        if row is not None:
            query = query.where(column == row.id)
    kind = args["kind"]
    if kind is not None:
        if kind.endswith("."):
            query = query.where(Event.kind.startswith(kind, autoescape=True))
        else:
            query = query.where(Event.kind == kind)
    if args["actor"] is not None:
        query = query.where(Event.actor == args["actor"])
    if args["since"] is not None:
        query = query.where(Event.at >= args["since"])
    if args["until"] is not None:
        query = query.where(Event.at < args["until"])
    if args["subject_type"] is not None:
        query = query.where(Event.subject_type == args["subject_type"])
        if args["subject_id"] is not None:
            query = query.where(Event.subject_id == args["subject_id"])
    return query
