"""Site input and output shapes. Schemas validate and reshape only; they never touch the DB."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma

from shared.renewal import WEEKDAYS, InvalidWindow, MaintenanceWindow

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")


class MaintenanceWindowSchema(ma.Schema):
    """The shape for the OpenAPI document; what is valid is shared.renewal.MaintenanceWindow's
    to say, the same parser the expiry watcher reads the stored window with."""

    start = ma.fields.String(required=True, metadata={"description": "HH:MM, local"})
    end = ma.fields.String(required=True, metadata={"description": "HH:MM, local"})
    timezone = ma.fields.String(required=True, metadata={"description": "IANA zone name"})
    days = ma.fields.List(
        ma.fields.String(metadata={"enum": list(WEEKDAYS)}), load_default=list(WEEKDAYS)
    )

    @ma.validates_schema
    def parses(self, data: dict[str, Any], **_: Any) -> None:
        try:
            MaintenanceWindow.from_json(data)
        except InvalidWindow as exc:
            raise ma.ValidationError(exc.errors) from exc


class SiteInSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Regexp(NAME_PATTERN))
    description = ma.fields.String(load_default="", validate=ma.validate.Length(max=2000))
    authority = ma.fields.String(
        load_default=None, metadata={"description": "issuing authority name; default: the first"}
    )
    dns_suffixes = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(min=1, max=253)),
        load_default=list,
        validate=ma.validate.Length(max=100),
    )
    ip_ranges = ma.fields.List(
        ma.fields.String(), load_default=list, validate=ma.validate.Length(max=100)
    )
    allow_short_names = ma.fields.Boolean(load_default=True)
    maintenance_window = ma.fields.Nested(
        MaintenanceWindowSchema, load_default=None, allow_none=True
    )
    renew_at_fraction = ma.fields.Float(
        load_default=1 / 3, validate=ma.validate.Range(min=0.05, max=0.9)
    )
    default_validity_days = ma.fields.Integer(
        load_default=397, validate=ma.validate.Range(min=1, max=825)
    )


class SitePatchSchema(SiteInSchema):
    """Every field optional; only the given ones change."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("partial", True)
        super().__init__(**kwargs)


class SiteOutSchema(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    description = ma.fields.String()
    authority = ma.fields.Function(lambda site: site.authority.name)
    authority_id = ma.fields.Integer()
    dns_suffixes = ma.fields.List(ma.fields.String())
    ip_ranges = ma.fields.List(ma.fields.String())
    allow_short_names = ma.fields.Boolean()
    maintenance_window = ma.fields.Dict(allow_none=True)
    renew_at_fraction = ma.fields.Float()
    default_validity_days = ma.fields.Integer()
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


class SiteListArgs(ma.Schema):
    name = ma.fields.String(load_default=None)
