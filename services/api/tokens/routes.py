"""/api/v1/tokens"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from services.api.auth import principal, requires
from services.api.common import get_or_404
from services.api.context import runtime
from services.api.sites.service import site_by_name
from services.api.tokens.schemas import NewTokenOutSchema, TokenInSchema, TokenOutSchema
from shared import events
from shared.db.models import ApiToken
from shared.errors import Conflict
from shared.tokens import create_token

blp = Blueprint("tokens", __name__, url_prefix="/api/v1/tokens", description="API tokens")


@blp.route("")
class Tokens(MethodView):
    @requires("admin")
    @blp.response(200, TokenOutSchema(many=True))
    def get(self) -> list[ApiToken]:
        query = select(ApiToken).where(ApiToken.revoked_at.is_(None)).order_by(ApiToken.id)
        return list(runtime().session().scalars(query))

    @requires("admin")
    @blp.arguments(TokenInSchema)
    @blp.response(201, NewTokenOutSchema)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        rt = runtime()
        session = rt.session()
        site_id = site_by_name(session, data["site"]).id if data["site"] else None
        now = rt.clock.now()
        new = create_token(
            session,
            name=data["name"],
            role=data["role"],
            site_id=site_id,
            created_by=principal().actor,
            now=now,
        )
        events.record(
            session,
            "token.created",
            principal().actor,
            at=now,
            site_id=site_id,
            subject=("api_token", new.token.id),
            role=data["role"],
        )
        session.commit()
        shown = {name: getattr(new.token, name) for name in TokenOutSchema().fields}
        return {**shown, "token": new.secret}


@blp.route("/<int:token_id>/revoke")
class RevokeToken(MethodView):
    @requires("admin")
    @blp.response(200, TokenOutSchema)
    def post(self, token_id: int) -> ApiToken:
        """Revoke a token: from now on it is refused everywhere (API, dashboard, agent). A
        token cannot revoke itself, so an admin never locks the last door by mistake."""
        rt = runtime()
        session = rt.session()
        token = get_or_404(session, ApiToken, token_id, "token")
        who = principal()
        if token.id == who.token_id:
            raise Conflict("a token cannot revoke itself; use another admin token")
        if token.revoked_at is None:
            now = rt.clock.now()
            token.revoked_at = now
            events.record(
                session,
                "token.revoked",
                who.actor,
                at=now,
                site_id=token.site_id,
                subject=("api_token", token.id),
                prefix=token.prefix,
                role=token.role,
            )
            session.commit()
        return token
