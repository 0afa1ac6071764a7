"""/api/v1/events: the audit trail."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from services.api.auth import principal, requires
from services.api.common import decode_cursor, page_of
from services.api.context import runtime
from services.api.events import service
from services.api.events.schemas import EventListArgs, EventPageSchema

blp = Blueprint(
    "events",
    __name__,
    url_prefix="/api/v1/events",
    description="The audit trail: who did what, when",
)


@blp.route("")
@requires("auditor")
@blp.arguments(EventListArgs, location="query")
@blp.response(200, EventPageSchema)
def list_events(args: dict[str, Any]) -> dict[str, Any]:
    """Newest first. A site-scoped operator sees only its site's events."""
    session = runtime().session()
    query = service.list_query(session, args, principal(), decode_cursor(args["cursor"]))
    items, cursor = page_of(list(session.scalars(query)), args["limit"])
    return {"items": items, "next_cursor": cursor}
