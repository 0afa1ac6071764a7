"""/api/v1/sites"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from services.api.auth import principal, requires
from services.api.context import runtime
from services.api.sites import service
from services.api.sites.schemas import SiteInSchema, SiteListArgs, SiteOutSchema, SitePatchSchema
from shared import access
from shared.db.models import Site

blp = Blueprint("sites", __name__, url_prefix="/api/v1/sites", description="Sites of the VMS")


@blp.route("")
class Sites(MethodView):
    @requires("auditor")
    @blp.arguments(SiteListArgs, location="query")
    @blp.response(200, SiteOutSchema(many=True))
    def get(self, args: dict[str, Any]) -> list[Site]:
        query = access.scope(select(Site).order_by(Site.id), Site.id, principal())
        if args["name"]:
            query = query.where(Site.name == args["name"])
        return list(runtime().session().scalars(query))

    @requires("admin")
    @blp.arguments(SiteInSchema)
    @blp.response(201, SiteOutSchema)
    def post(self, data: dict[str, Any]) -> Site:
        rt = runtime()
        session = rt.session()
        site = service.create_site(session, data, who=principal(), now=rt.clock.now())
        session.commit()
        return site


@blp.route("/<int:site_id>")
class SiteById(MethodView):
    @requires("auditor")
    @blp.response(200, SiteOutSchema)
    def get(self, site_id: int) -> Site:
        return service.get_site(runtime().session(), site_id, principal())

    @requires("operator")
    @blp.arguments(SitePatchSchema)
    @blp.response(200, SiteOutSchema)
    def patch(self, data: dict[str, Any], site_id: int) -> Site:
        rt = runtime()
        session = rt.session()
        who = principal()
        site = service.get_site(session, site_id, who)
        service.update_site(session, site, data, who=who, now=rt.clock.now())
        session.commit()
        return site

    @requires("admin")
    @blp.response(204)
    def delete(self, site_id: int) -> None:
        rt = runtime()
        session = rt.session()
        site = service.get_site(session, site_id, principal())
        service.delete_site(session, site, actor=principal().actor, now=rt.clock.now())
        session.commit()
