"""Who may start or steer a campaign, and the campaign as the API shows it.

The campaign itself (selector, dry run, creation, pause/resume/cancel, counts) lives in
shared.campaigns, which the expiry watcher shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, joinedload

from services.api.auth import Principal
from services.api.campaigns.schemas import CampaignOutSchema
from services.api.common import get_or_404
from shared import access
from shared.campaigns import ROTATE, CampaignSpec, Selector, counts, resolve
from shared.db.models import Campaign, CampaignItem
from shared.errors import Forbidden

SHOWN = tuple(name for name in CampaignOutSchema().fields if name != "counts")


def authorize_create(session: Session, who: Principal, spec: CampaignSpec) -> None:
    """A rotation changes every site's trust: admin only. A site-scoped operator names its
    own site(s), so that the campaign cannot reach past them."""
    if spec.kind == ROTATE and who.role != "admin":
        raise Forbidden("rotating an authority needs the admin role")
    if who.scoped_site_id is not None and not spec.selector.get("sites"):
        raise Forbidden("this token is scoped to a site: name it in selector.sites")
    resolved = resolve(session, Selector.from_json(spec.selector, spec.kind))
    for site_id in resolved.site_ids:
        who.require_write(site_id)


def authorize_steer(session: Session, who: Principal, campaign: Campaign) -> None:
    """Steering takes the rights starting took: a rotation is the admin's, a renewal belongs
    to the sites its items are on."""
    who.require_read(campaign.site_id)
    if campaign.kind == ROTATE and who.role != "admin":
        raise Forbidden("steering a rotation needs the admin role")
    if who.scoped_site_id is None:
        return
    sites = session.scalars(
        select(CampaignItem.site_id).where(CampaignItem.campaign_id == campaign.id).distinct()
    )
    for site_id in sites:
        who.require_write(site_id)


def list_query(status: str | None, who: Principal) -> Select[Campaign]:
    """Newest first; a scoped reader sees only the campaigns confined to its site."""
    query = access.scope(select(Campaign).order_by(Campaign.id.desc()), Campaign.site_id, who)
    if status:
        query = query.where(Campaign.status == status)
    return query


def get_campaign(session: Session, campaign_id: int, who: Principal) -> Campaign:
    campaign = get_or_404(session, Campaign, campaign_id, "campaign")
    who.require_read(campaign.site_id)
    return campaign


def shown(session: Session, campaigns: Sequence[Campaign]) -> list[dict[str, Any]]:
    """Campaigns with their item counts, counted in one query for all of them."""
    numbers = counts(session, [c.id for c in campaigns])
    return [
        {**{name: getattr(c, name) for name in SHOWN}, "counts": numbers[c.id]} for c in campaigns
    ]


def items_query(
    campaign_id: int, args: dict[str, Any], who: Principal, after_id: int
) -> Select[CampaignItem]:
    query = (
        select(CampaignItem)
        .options(joinedload(CampaignItem.host))
        .where(CampaignItem.campaign_id == campaign_id, CampaignItem.id > after_id)
        .order_by(CampaignItem.id)
        .limit(args["limit"] + 1)
    )
    query = access.scope(query, CampaignItem.site_id, who)
    if args["status"]:
        query = query.where(CampaignItem.status == args["status"])
    return query
