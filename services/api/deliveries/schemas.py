"""Delivery shapes."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from services.api.common import PageArgs, id_field
from shared.db.models import DELIVERY_KINDS, DELIVERY_STATUSES


def state_of(delivery: Any) -> str:
    """One word-ish state for people: the status, or what a probe found."""
    if delivery.probe_state == "mismatch" and delivery.status in ("delivered", "installed"):
        return "renewed but not bound"
    if delivery.status == "pending" and delivery.attempts and delivery.last_error:
        return "retrying"
    return str(delivery.status)


class DeliveryListArgs(PageArgs):
    host = ma.fields.String(load_default=None, metadata={"description": "host name"})
    site = ma.fields.String(load_default=None, metadata={"description": "site name"})
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(DELIVERY_STATUSES))
    kind = ma.fields.String(load_default=None, validate=ma.validate.OneOf(DELIVERY_KINDS))
    certificate = id_field(load_default=None, metadata={"description": "certificate ID"})


class DeliveryOutSchema(ma.Schema):
    id = ma.fields.Integer()
    host_id = ma.fields.Integer()
    host = ma.fields.Function(lambda d: d.host.name)
    kind = ma.fields.String()
    certificate_id = ma.fields.Integer(allow_none=True)
    trust_fingerprint = ma.fields.String(allow_none=True)
    method = ma.fields.String()
    status = ma.fields.String()
    state = ma.fields.Function(state_of)
    attempts = ma.fields.Integer()
    last_error = ma.fields.String(allow_none=True)
    next_attempt_at = ma.fields.DateTime(allow_none=True)
    probe_state = ma.fields.String()
    presented_fingerprint = ma.fields.String(allow_none=True)
    delivered_at = ma.fields.DateTime(allow_none=True)
    installed_at = ma.fields.DateTime(allow_none=True)
    verified_at = ma.fields.DateTime(allow_none=True)
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


class DeliveryPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(DeliveryOutSchema))
    next_cursor = ma.fields.String(allow_none=True)
