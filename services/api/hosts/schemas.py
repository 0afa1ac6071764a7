"""Host input and output shapes."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma

from services.api.sites.schemas import NAME_PATTERN
from shared.db.models import DELIVERY_METHODS, HOST_ROLES, PLATFORMS

ENDPOINT = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,260}:\d{1,5}\Z")


class DeliverySchema(ma.Schema):
    method = ma.fields.String(load_default="none", validate=ma.validate.OneOf(DELIVERY_METHODS))
    settings = ma.fields.Dict(load_default=dict)


class HostInSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Regexp(NAME_PATTERN))
    site = ma.fields.String(required=True, metadata={"description": "site name"})
    dns_names = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(min=1, max=253)),
        load_default=list,
        validate=ma.validate.Length(max=100),
    )
    ip_addresses = ma.fields.List(
        ma.fields.String(), load_default=list, validate=ma.validate.Length(max=100)
    )
    roles = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf(HOST_ROLES)),
        load_default=list,
    )
    failover_for = ma.fields.List(
        ma.fields.String(), load_default=list, metadata={"description": "recording server names"}
    )
    platform = ma.fields.String(load_default="windows", validate=ma.validate.OneOf(PLATFORMS))
    service_account = ma.fields.String(
        load_default=None, allow_none=True, validate=ma.validate.Length(max=200)
    )
    delivery = ma.fields.Nested(DeliverySchema, load_default=lambda: {"method": "none"})
    tls_endpoints = ma.fields.List(
        ma.fields.String(validate=ma.validate.Regexp(ENDPOINT, error="use host:port")),
        load_default=list,
    )

    @ma.validates_schema
    def has_a_name(self, data: dict[str, Any], **_: Any) -> None:
        if not self.partial and not data.get("dns_names") and not data.get("ip_addresses"):
            raise ma.ValidationError("a host needs at least one DNS name or IP address")


class HostPatchSchema(HostInSchema):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("partial", True)
        super().__init__(**kwargs)


class HostOutSchema(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    site = ma.fields.Function(lambda host: host.site.name)
    site_id = ma.fields.Integer()
    dns_names = ma.fields.List(ma.fields.String())
    ip_addresses = ma.fields.List(ma.fields.String())
    roles = ma.fields.List(ma.fields.String())
    failover_for = ma.fields.List(ma.fields.String())
    platform = ma.fields.String()
    service_account = ma.fields.String(allow_none=True)
    delivery = ma.fields.Dict()
    tls_endpoints = ma.fields.List(ma.fields.String())
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


class HostListArgs(ma.Schema):
    site = ma.fields.String(load_default=None, metadata={"description": "site name"})
    name = ma.fields.String(load_default=None)
    cursor = ma.fields.String(load_default=None)
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=1000))


class HostPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(HostOutSchema))
    next_cursor = ma.fields.String(allow_none=True)
