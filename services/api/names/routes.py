"""/api/v1/shared-names: names an admin lets several hosts carry."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from services.api.auth import principal, requires
from services.api.context import runtime
from services.api.names import service
from shared.db.models import SharedName

blp = Blueprint(
    "names",
    __name__,
    url_prefix="/api/v1/shared-names",
    description="DNS names and addresses that several hosts may carry (every other name "
    "belongs to one host)",
)


class SharedNameInSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=253))


class SharedNameOutSchema(ma.Schema):
    name = ma.fields.String()
    created_by = ma.fields.String()
    created_at = ma.fields.DateTime()


@blp.route("")
class SharedNames(MethodView):
    @requires("admin")
    @blp.response(200, SharedNameOutSchema(many=True))
    def get(self) -> list[SharedName]:
        return service.listed(runtime().session())

    @requires("admin")
    @blp.arguments(SharedNameInSchema)
    @blp.response(201, SharedNameOutSchema)
    def post(self, data: dict[str, Any]) -> SharedName:
        rt = runtime()
        session = rt.session()
        service.share(session, [data["name"]], who=principal(), now=rt.clock.now())
        session.commit()
        row = session.get(SharedName, service.normalize(data["name"]))
        assert row is not None
        return row


@blp.route("/<string(minlength=1, maxlength=253):name>")
class SharedNameByName(MethodView):
    @requires("admin")
    @blp.response(204)
    def delete(self, name: str) -> None:
        rt = runtime()
        session = rt.session()
        service.unshare(session, name, who=principal(), now=rt.clock.now())
        session.commit()
