"""/api/v1/campaigns: renewing part of the fleet at a chosen pace, and rotating a CA."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis.exceptions
from flask import jsonify, url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from kombu.exceptions import OperationalError as KombuOperationalError

from services.api.auth import principal, requires
from services.api.campaigns import service
from services.api.campaigns.schemas import (
    CampaignInSchema,
    CampaignListArgs,
    CampaignOutSchema,
    DryRunOutSchema,
    ItemListArgs,
    ItemPageSchema,
    ResumeInSchema,
)
from services.api.common import decode_cursor, page_of
from services.api.context import runtime
from shared import campaigns
from shared.contracts import Message

log = logging.getLogger(__name__)

blp = Blueprint(
    "campaigns",
    __name__,
    url_prefix="/api/v1/campaigns",
    description="Renewing a chosen part of the fleet at a chosen pace, and rotating a CA",
)


@blp.route("")
class Campaigns(MethodView):
    @requires("auditor")
    @blp.arguments(CampaignListArgs, location="query")
    @blp.response(200, CampaignOutSchema(many=True))
    def get(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Newest first."""
        session = runtime().session()
        rows = list(session.scalars(service.list_query(args["status"], principal())))
        return service.shown(session, rows)

    @requires("operator")
    @blp.arguments(CampaignInSchema)
    @blp.response(201, CampaignOutSchema)
    @blp.alt_response(200, schema=DryRunOutSchema, description="dry_run: nothing is stored")
    def post(self, data: dict[str, Any]) -> Any:
        rt = runtime()
        session = rt.session()
        spec = campaigns.CampaignSpec.from_json(data)
        who = principal()
        service.authorize_create(session, who, spec)
        if data["dry_run"]:
            return jsonify(DryRunOutSchema().dump(campaigns.dry_run(session, spec, rt.clock.now())))
        campaign, messages = campaigns.create(session, spec, actor=who.actor, now=rt.clock.now())
        session.commit()
        publish(messages)
        location = url_for("campaigns.CampaignById", campaign_id=campaign.id)
        return service.shown(session, [campaign])[0], 201, {"Location": location}


@blp.route("/<int:campaign_id>")
class CampaignById(MethodView):
    @requires("auditor")
    @blp.response(200, CampaignOutSchema)
    def get(self, campaign_id: int) -> dict[str, Any]:
        session = runtime().session()
        return service.shown(session, [service.get_campaign(session, campaign_id, principal())])[0]


@blp.route("/<int:campaign_id>/items")
class CampaignItems(MethodView):
    @requires("auditor")
    @blp.arguments(ItemListArgs, location="query")
    @blp.response(200, ItemPageSchema)
    def get(self, args: dict[str, Any], campaign_id: int) -> dict[str, Any]:
        session = runtime().session()
        service.get_campaign(session, campaign_id, principal())
        query = service.items_query(campaign_id, args, principal(), decode_cursor(args["cursor"]))
        items, cursor = page_of(list(session.scalars(query)), args["limit"])
        return {"items": items, "next_cursor": cursor}


@blp.route("/<int:campaign_id>/pause", methods=["POST"])
@requires("operator")
@blp.response(200, CampaignOutSchema)
def pause_campaign(campaign_id: int) -> dict[str, Any]:
    """Start nothing more; what is in flight finishes."""
    return steer(campaign_id, "pause")


@blp.route("/<int:campaign_id>/resume", methods=["POST"])
@requires("operator")
@blp.arguments(ResumeInSchema, required=False)
@blp.response(200, CampaignOutSchema)
def resume_campaign(data: dict[str, Any], campaign_id: int) -> dict[str, Any]:
    return steer(campaign_id, "resume", retry_failed=data.get("retry_failed", False))


@blp.route("/<int:campaign_id>/cancel", methods=["POST"])
@requires("operator")
@blp.response(200, CampaignOutSchema)
def cancel_campaign(campaign_id: int) -> dict[str, Any]:
    """Cancel what has not started; what is being issued or delivered finishes."""
    return steer(campaign_id, "cancel")


def steer(campaign_id: int, action: str, *, retry_failed: bool = False) -> dict[str, Any]:
    rt = runtime()
    session = rt.session()
    who = principal()
    campaign = service.get_campaign(session, campaign_id, who)
    service.authorize_steer(session, who, campaign)
    messages = campaigns.steer(
        session, campaign, action, actor=who.actor, now=rt.clock.now(), retry_failed=retry_failed
    )
    session.commit()
    publish(messages)
    return service.shown(session, [campaign])[0]


def publish(messages: Sequence[Message]) -> None:
    """After the commit. The campaign is saved and the beat advances it every few seconds
    (and re-sends a lost authority request), so a Redis outage here is logged, not raised:
    a client told to retry would start a second campaign."""
    try:
        for message in messages:
            runtime().publisher.publish(message)
    except (redis.exceptions.RedisError, KombuOperationalError, OSError):
        log.warning("campaign messages could not be queued", extra={"fields": {"n": len(messages)}})
