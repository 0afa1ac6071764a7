"""Notification channel and mute shapes. Schemas validate and reshape only."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlsplit

import marshmallow as ma

from services.api.sites.schemas import NAME_PATTERN
from shared.db.models import DEFAULT_THRESHOLDS, NOTIFICATION_KINDS
from shared.delivery_settings import env_name
from shared.notices import recipients_of
from shared.webhooks import redacted_url

MAX_THRESHOLD_DAYS = 825
MAX_RECIPIENTS = 50


class WebhookSettingsSchema(ma.Schema):
    """What each setting does: services/expiry_watcher/channels.py, which sends the notices."""

    secret_env = env_name(
        metadata={"description": "watcher's CERTFLEET_SECRET_* variable holding the HMAC secret"}
    )
    allow_http = ma.fields.Boolean(
        metadata={"description": "accept an http:// target (on-prem chat without TLS)"}
    )
    ca_file = ma.fields.String(validate=ma.validate.Regexp(r"^/", error="use an absolute path"))
    timeout = ma.fields.Float(validate=ma.validate.Range(min=0.1, max=120))


class ChannelInSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Regexp(NAME_PATTERN))
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(NOTIFICATION_KINDS))
    target = ma.fields.String(
        required=True,
        validate=ma.validate.Length(min=1, max=2000),
        metadata={"description": "email: comma-separated addresses; webhook: URL"},
    )
    settings = ma.fields.Dict(load_default=dict, metadata={"description": "webhook only"})
    thresholds = ma.fields.List(
        ma.fields.Integer(strict=True, validate=ma.validate.Range(min=0, max=MAX_THRESHOLD_DAYS)),
        load_default=lambda: list(DEFAULT_THRESHOLDS),
        validate=ma.validate.Length(max=20),
        metadata={"description": "days before expiry; 0 = expired; [] = event notices only"},
    )
    site = ma.fields.String(
        load_default=None, metadata={"description": "site name; none: every site"}
    )
    enabled = ma.fields.Boolean(load_default=True)

    @ma.validates_schema
    def target_fits_kind(self, data: dict[str, Any], **_: Any) -> None:
        if data["kind"] == "email":
            _check_emails(data["target"])
            if data["settings"]:
                raise ma.ValidationError("email channels take no settings", "settings")
            return
        try:
            settings = WebhookSettingsSchema().load(data["settings"])
        except ma.ValidationError as exc:
            raise ma.ValidationError({"settings": exc.messages}) from exc
        schemes = {"https", "http"} if settings.get("allow_http") else {"https"}
        try:
            ma.validate.URL(schemes=schemes, require_tld=False)(data["target"])
        except ma.ValidationError as exc:
            raise ma.ValidationError(
                "use an https:// URL (http:// needs settings.allow_http)", "target"
            ) from exc

    @ma.post_load
    def reshape(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["thresholds"] = sorted(set(data["thresholds"]), reverse=True)
        if data["kind"] == "email":
            data["target"] = ", ".join(recipients_of(data["target"]))
        else:  # plain JSON types, as validated above ("true" -> true)
            data["settings"] = WebhookSettingsSchema().load(data["settings"])
        return data


def _check_emails(target: str) -> None:
    addresses = recipients_of(target)
    if not addresses:
        raise ma.ValidationError("name at least one address", "target")
    if len(addresses) > MAX_RECIPIENTS:
        raise ma.ValidationError(f"at most {MAX_RECIPIENTS} addresses", "target")
    email = ma.validate.Email()
    bad = [a for a in addresses if not _valid(email, a)]
    if bad:
        raise ma.ValidationError(f"not email addresses: {', '.join(bad)}", "target")


def _valid(validator: ma.validate.Validator, value: str) -> bool:
    try:
        validator(value)
    except ma.ValidationError:
        return False
    return True


def shown_target(channel: Any) -> str:
    """Email addresses as they are; a webhook URL without its path and query, which often
    carry the receiver's token (Slack, Teams)."""
    if channel.kind != "webhook":
        return str(channel.target)
    parts = urlsplit(channel.target)
    hidden = parts.path.strip("/") or parts.query or parts.username
    return redacted_url(channel.target) + ("/…" if hidden else "")


class ChannelOutSchema(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    kind = ma.fields.String()
    target = ma.fields.Function(shown_target, metadata={"description": "webhook: server only"})
    settings = ma.fields.Dict()
    thresholds = ma.fields.List(ma.fields.Integer())
    site_id = ma.fields.Integer(allow_none=True)
    muted_until = ma.fields.DateTime(allow_none=True)
    enabled = ma.fields.Boolean()
    created_at = ma.fields.DateTime()


class MuteInSchema(ma.Schema):
    until = ma.fields.AwareDateTime(
        required=True,
        allow_none=True,
        default_timezone=dt.UTC,
        metadata={"description": "ISO 8601, at most 400 days ahead; null unmutes"},
    )


class SiteMuteOutSchema(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    muted_until = ma.fields.DateTime(allow_none=True)
