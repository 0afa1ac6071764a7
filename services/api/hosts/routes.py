"""/api/v1/hosts"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from services.api.auth import principal, requires
from services.api.common import decode_cursor, named_in_scope, page_of
from services.api.context import runtime
from services.api.hosts import service
from services.api.hosts.schemas import (
    HostInSchema,
    HostListArgs,
    HostOutSchema,
    HostPageSchema,
    HostPatchSchema,
)
from services.api.sites.service import site_by_name
from shared import access
from shared.db.models import Host, Site
from shared.errors import ValidationFailed

blp = Blueprint("hosts", __name__, url_prefix="/api/v1/hosts", description="Servers and clients")


@blp.route("")
class Hosts(MethodView):
    @requires("auditor")
    @blp.arguments(HostListArgs, location="query")
    @blp.response(200, HostPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        query = (
            select(Host)
            .options(joinedload(Host.site))
            .where(Host.id > decode_cursor(args["cursor"]))
            .order_by(Host.id)
            .limit(args["limit"] + 1)
        )
        site = named_in_scope(runtime().session(), Site, args["site"], "site", principal())
        if site is not None:
            query = query.where(Host.site_id == site.id)
        if args["name"]:
            query = query.where(Host.name == args["name"])
        query = access.scope(query, Host.site_id, principal())
        items, cursor = page_of(list(runtime().session().scalars(query)), args["limit"])
        return {"items": items, "next_cursor": cursor}

    @requires("operator")
    @blp.arguments(HostInSchema)
    @blp.response(201, HostOutSchema)
    def post(self, data: dict[str, Any]) -> Host:
        rt = runtime()
        session = rt.session()
        who = principal()
        site = site_by_name(session, data["site"])
        who.require_write(site.id)
        host = service.create_host(
            session, data, site, who=who, now=rt.clock.now(), limits=rt.settings.delivery_limits
        )
        session.commit()
        return host


@blp.route("/<int:host_id>")
class HostById(MethodView):
    @requires("auditor")
    @blp.response(200, HostOutSchema)
    def get(self, host_id: int) -> Host:
        return service.get_host(runtime().session(), host_id, principal())

    @requires("operator")
    @blp.arguments(HostPatchSchema)
    @blp.response(200, HostOutSchema)
    def patch(self, data: dict[str, Any], host_id: int) -> Host:
        rt = runtime()
        session = rt.session()
        who = principal()
        host = service.get_host(session, host_id, who)
        if data.get("name", host.name) != host.name:
            raise ValidationFailed("a host cannot be renamed", {"name": ["cannot change"]})
        site = site_by_name(session, data["site"]) if data.get("site") else None
        service.upsert_host(
            session,
            {**data, "name": host.name},
            who=who,
            now=rt.clock.now(),
            limits=rt.settings.delivery_limits,
            site=site,
        )
        session.commit()
        return host

    @requires("operator")
    @blp.response(204)
    def delete(self, host_id: int) -> None:
        rt = runtime()
        session = rt.session()
        who = principal()
        host = service.get_host(session, host_id, who)
        access.require_change(
            who, "host", ["delete"], before_site_id=host.site_id, after_site_id=host.site_id
        )
        service.delete_host(session, host, actor=principal().actor, now=rt.clock.now())
        session.commit()
