"""/api/v1/deliveries"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from services.api.auth import principal, requires
from services.api.common import decode_cursor, named_in_scope, page_of
from services.api.context import runtime
from services.api.deliveries.schemas import DeliveryListArgs, DeliveryPageSchema
from shared import access
from shared.db.models import Delivery, Host, Site

blp = Blueprint(
    "deliveries",
    __name__,
    url_prefix="/api/v1/deliveries",
    description="Certificates and trust bundles on their way to hosts",
)


@blp.route("")
class Deliveries(MethodView):
    @requires("auditor")
    @blp.arguments(DeliveryListArgs, location="query")
    @blp.response(200, DeliveryPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        session, who = runtime().session(), principal()
        site = named_in_scope(session, Site, args["site"], "site", who)
        host = named_in_scope(session, Host, args["host"], "host", who)
        query = (
            select(Delivery)
            .join(Host, Host.id == Delivery.host_id)
            .options(joinedload(Delivery.host))
            .where(Delivery.id > decode_cursor(args["cursor"]))
            .order_by(Delivery.id)
            .limit(args["limit"] + 1)
        )
        if host is not None:
            query = query.where(Delivery.host_id == host.id)
        if site is not None:
            query = query.where(Host.site_id == site.id)
        for column in ("status", "kind"):
            if args[column]:
                query = query.where(getattr(Delivery, column) == args[column])
        if args["certificate"]:
            query = query.where(Delivery.certificate_id == args["certificate"])
        query = access.scope(query, Host.site_id, who)
        items, cursor = page_of(list(session.scalars(query)), args["limit"])
        return {"items": items, "next_cursor": cursor}
