"""/api/v1/notification-channels, and muting a channel or a site's notices.

The site mute lives here, next to the channel mute, because only the expiry watcher reads it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlsplit

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.api.auth import principal, requires
from services.api.common import get_or_404
from services.api.context import runtime
from services.api.notifications.schemas import (
    ChannelInSchema,
    ChannelOutSchema,
    MuteInSchema,
    SiteMuteOutSchema,
)
from services.api.sites.service import find_site, get_site
from shared import access, events
from shared.db.models import NotificationChannel, Site
from shared.errors import Conflict, Forbidden, ValidationFailed

MAX_MUTE = dt.timedelta(days=400)

blp = Blueprint(
    "notifications",
    __name__,
    url_prefix="/api/v1",
    description="Where expiry notices go, and muting them",
)


@blp.route("/notification-channels")
class Channels(MethodView):
    @requires("auditor")
    @blp.response(200, ChannelOutSchema(many=True))
    def get(self) -> list[NotificationChannel]:
        query = select(NotificationChannel).order_by(NotificationChannel.id)
        who = principal()
        if who.scoped_site_id is not None:
            query = query.where(
                or_(
                    NotificationChannel.site_id.is_(None),
                    NotificationChannel.site_id == who.scoped_site_id,
                )
            )
        return list(runtime().session().scalars(query))

    @requires("admin")
    @blp.arguments(ChannelInSchema)
    @blp.response(201, ChannelOutSchema)
    def post(self, data: dict[str, Any]) -> NotificationChannel:
        rt = runtime()
        session = rt.session()
        if data["kind"] == "webhook":
            rt.settings.delivery_limits.check_destination(
                urlsplit(data["target"]).hostname or "", "target"
            )
        channel = create_channel(session, data, actor=principal().actor, now=rt.clock.now())
        session.commit()
        return channel


@blp.route("/notification-channels/<int:channel_id>/mute")
class ChannelMute(MethodView):
    @requires("operator")
    @blp.arguments(MuteInSchema)
    @blp.response(200, ChannelOutSchema)
    def post(self, data: dict[str, Any], channel_id: int) -> NotificationChannel:
        rt = runtime()
        session = rt.session()
        channel = get_or_404(session, NotificationChannel, channel_id, "notification channel")
        who = principal()
        if channel.site_id is None and who.scoped_site_id is not None:
            raise Forbidden("a channel of every site needs a token that is not scoped to one")
        who.require_write(channel.site_id)
        now = rt.clock.now()
        channel.muted_until = checked_until(data["until"], now)
        record_mute(session, "notification_channel", channel.id, channel.site_id, data, now)
        session.commit()
        return channel


@blp.route("/sites/<int:site_id>/mute")
class SiteMute(MethodView):
    @requires("operator")
    @blp.arguments(MuteInSchema)
    @blp.response(200, SiteMuteOutSchema)
    def post(self, data: dict[str, Any], site_id: int) -> Site:
        rt = runtime()
        session = rt.session()
        who = principal()
        site = get_site(session, site_id, who)
        access.require_change(
            who, "site", ["muted_until"], before_site_id=site.id, after_site_id=site.id
        )
        now = rt.clock.now()
        site.muted_until = checked_until(data["until"], now)
        record_mute(session, "site", site.id, site.id, data, now)
        session.commit()
        return site


def create_channel(
    session: Session, data: dict[str, Any], *, actor: str, now: dt.datetime
) -> NotificationChannel:
    if session.scalar(select(NotificationChannel).where(NotificationChannel.name == data["name"])):
        raise Conflict(f"notification channel {data['name']!r} already exists")
    site_id = None
    if data["site"] is not None:
        site = find_site(session, data["site"])
        if site is None:
            raise ValidationFailed(f"site {data['site']!r} does not exist", {"site": ["unknown"]})
        site_id = site.id
    channel = NotificationChannel(
        name=data["name"],
        kind=data["kind"],
        target=data["target"],
        settings=data["settings"],
        thresholds=data["thresholds"],
        site_id=site_id,
        enabled=data["enabled"],
        created_at=now,
    )
    session.add(channel)
    session.flush()
    events.record(
        session,
        "notification_channel.created",
        actor,
        at=now,
        site_id=site_id,
        subject=("notification_channel", channel.id),
        channel_kind=channel.kind,
        thresholds=channel.thresholds,
    )
    return channel


def checked_until(until: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    """A mute ends in the future, at most MAX_MUTE ahead: a forgotten mute expires on its
    own. None unmutes."""
    if until is None:
        return None
    if until <= now:
        raise ValidationFailed("until must be in the future", {"until": ["in the past"]})
    if until > now + MAX_MUTE:
        raise ValidationFailed(
            f"a mute lasts at most {MAX_MUTE.days} days", {"until": ["too far ahead"]}
        )
    return until.astimezone(dt.UTC)


def record_mute(
    session: Session,
    noun: str,
    subject_id: int,
    site_id: int | None,
    data: dict[str, Any],
    now: dt.datetime,
) -> None:
    until = data["until"]
    events.record(
        session,
        f"{noun}.muted" if until is not None else f"{noun}.unmuted",
        principal().actor,
        at=now,
        site_id=site_id,
        subject=(noun, subject_id),
        until=until.isoformat() if until is not None else None,
    )
