"""Inventory documents: sites and hosts in one YAML or JSON file."""

from __future__ import annotations

import marshmallow as ma

from services.api.hosts.schemas import HostInSchema
from services.api.sites.schemas import SiteInSchema

MAX_INVENTORY_ITEMS = 20000


class InventorySchema(ma.Schema):
    sites = ma.fields.List(
        ma.fields.Nested(SiteInSchema),
        load_default=list,
        validate=ma.validate.Length(max=MAX_INVENTORY_ITEMS),
    )
    hosts = ma.fields.List(
        ma.fields.Nested(HostInSchema),
        load_default=list,
        validate=ma.validate.Length(max=MAX_INVENTORY_ITEMS),
    )
    shared_names = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(min=1, max=253)),
        load_default=list,
        validate=ma.validate.Length(max=MAX_INVENTORY_ITEMS),
        metadata={"description": "names several hosts may carry (admin only)"},
    )


class OutcomeSchema(ma.Schema):
    created = ma.fields.List(ma.fields.String())
    updated = ma.fields.List(ma.fields.String())
    unchanged = ma.fields.List(ma.fields.String())


class ApplyResultSchema(ma.Schema):
    sites = ma.fields.Nested(OutcomeSchema)
    hosts = ma.fields.Nested(OutcomeSchema)
    created = ma.fields.Integer()
    updated = ma.fields.Integer()
    unchanged = ma.fields.Integer()
