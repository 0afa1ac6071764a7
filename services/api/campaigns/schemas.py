"""Campaign shapes. The selector's keys are checked by shared.campaigns, which the watcher
shares; here only its outer shape."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from services.api.authorities.schemas import CA_NAME
from services.api.common import PageArgs
from shared.campaigns import ROTATE
from shared.db.models import CAMPAIGN_ITEM_STATUSES, CAMPAIGN_KINDS, CAMPAIGN_STATUSES
from shared.pki.profiles import ALLOWED_RSA_BITS

ROTATION_ONLY = ("ack_share", "new_authority")


class NewAuthorityInSchema(ma.Schema):
    name = ma.fields.String(
        validate=ma.validate.Regexp(CA_NAME, error="1-64 letters, digits, spaces or .,_()-"),
        metadata={"description": "default: the old name and today's date"},
    )
    key_bits = ma.fields.Integer(validate=ma.validate.OneOf(ALLOWED_RSA_BITS))
    validity_days = ma.fields.Integer(validate=ma.validate.Range(min=1, max=9125))


class CampaignInSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    kind = ma.fields.String(load_default="renew", validate=ma.validate.OneOf(CAMPAIGN_KINDS))
    selector = ma.fields.Dict(
        required=True,
        metadata={
            "description": "sites, authority, hosts (names), expiring_within_days, all; "
            "a rotation takes authority and optionally sites"
        },
    )
    rate_per_minute = ma.fields.Integer(
        load_default=60,
        allow_none=True,
        validate=ma.validate.Range(min=1, max=10000),
        metadata={
            "description": "certificates started per minute; null: unthrottled (as fast as "
            "the issuers go, still within per_site_concurrency and the windows)"
        },
    )
    per_site_concurrency = ma.fields.Integer(
        load_default=2, validate=ma.validate.Range(min=1, max=1000)
    )
    respect_windows = ma.fields.Boolean(load_default=True)
    max_failures = ma.fields.Integer(load_default=10, validate=ma.validate.Range(min=1, max=100000))
    ack_share = ma.fields.Float(
        load_default=None,
        validate=ma.validate.Range(min=0, max=1),
        metadata={"description": "rotation only: share of clients holding the new bundle "
                  "before any leaf is re-issued (default 1.0)"},
    )  # fmt: skip
    new_authority = ma.fields.Nested(
        NewAuthorityInSchema, load_default=None, metadata={"description": "rotation only"}
    )
    dry_run = ma.fields.Boolean(
        load_default=False, metadata={"description": "answer 200 with what would change"}
    )

    @ma.validates_schema
    def rotation_fields(self, data: dict[str, Any], **_: Any) -> None:
        if data["kind"] != ROTATE:
            for name in ROTATION_ONLY:
                if data.get(name) is not None:
                    raise ma.ValidationError("only a rotate_authority campaign takes this", name)

    @ma.validates("selector")
    def selector_names(self, value: dict[str, Any], **_: Any) -> None:
        # The shared validator checks every key but this one's type; a number here would
        # reach the database as a number.
        authority = value.get("authority")
        if authority is not None and not isinstance(authority, str):
            raise ma.ValidationError("authority must be a name")


class CampaignOutSchema(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    kind = ma.fields.String()
    status = ma.fields.String(metadata={"description": " | ".join(CAMPAIGN_STATUSES)})
    phase = ma.fields.String(allow_none=True, metadata={"description": "rotation only"})
    selector = ma.fields.Dict()
    rate_per_minute = ma.fields.Integer(allow_none=True)
    per_site_concurrency = ma.fields.Integer()
    respect_windows = ma.fields.Boolean()
    max_failures = ma.fields.Integer()
    ack_share = ma.fields.Float()
    authority_id = ma.fields.Integer(allow_none=True)
    new_authority_id = ma.fields.Integer(allow_none=True)
    reason = ma.fields.String(allow_none=True, metadata={"description": "why it waits or paused"})
    created_by = ma.fields.String()
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()
    finished_at = ma.fields.DateTime(allow_none=True)
    counts = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Integer(),
        metadata={"description": "items per status, with total and finished"},
    )


class CampaignListArgs(ma.Schema):
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(CAMPAIGN_STATUSES))


class ItemListArgs(PageArgs):
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(CAMPAIGN_ITEM_STATUSES))


class ItemOutSchema(ma.Schema):
    id = ma.fields.Integer()
    host = ma.fields.Function(lambda item: item.host.name)
    site_id = ma.fields.Integer()
    certificate_id = ma.fields.Integer()
    status = ma.fields.String()
    request_id = ma.fields.Integer(allow_none=True)
    new_certificate_id = ma.fields.Integer(allow_none=True)
    error = ma.fields.String(allow_none=True)
    started_at = ma.fields.DateTime(allow_none=True)
    finished_at = ma.fields.DateTime(allow_none=True)


class ItemPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(ItemOutSchema))
    next_cursor = ma.fields.String(allow_none=True)


class ResumeInSchema(ma.Schema):
    retry_failed = ma.fields.Boolean(
        load_default=False, metadata={"description": "start the failed items again"}
    )


class PlannedHostSchema(ma.Schema):
    host = ma.fields.String()
    certificate_id = ma.fields.Integer()
    not_after = ma.fields.String()
    renewing = ma.fields.Boolean(metadata={"description": "a renewal is already under way"})


class PlannedSiteSchema(ma.Schema):
    site = ma.fields.String()
    certificates = ma.fields.Integer()
    hosts = ma.fields.List(ma.fields.Nested(PlannedHostSchema), metadata={"description": "first"})


class DryRunOutSchema(ma.Schema):
    kind = ma.fields.String()
    selector = ma.fields.Dict()
    total = ma.fields.Integer()
    sites = ma.fields.List(ma.fields.Nested(PlannedSiteSchema))
    authority = ma.fields.String(metadata={"description": "rotation: the authority replaced"})
    new_authority = ma.fields.String(metadata={"description": "rotation: its successor's name"})
    clients = ma.fields.Integer(metadata={"description": "rotation: hosts that get the bundle"})
    ack_share = ma.fields.Float()
    retires_old_authority = ma.fields.Boolean()
